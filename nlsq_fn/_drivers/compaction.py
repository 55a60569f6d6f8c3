"""A batch of fits whose finished members stop costing: a working batch refilled from
a host loop.

Under ``jax.vmap``, `solve`'s ``lax.while_loop`` runs until its slowest member stops:
every pass evaluates and steps every member, the finished ones only to discard the
result. A batch's time then follows its slowest member, not its typical one.

Here a Python loop drives the same strategy code (`start`, ``strategy.propose`` /
``strategy.judge`` and `advance`: for each member the evaluations and arithmetic of
`solve`'s loop, in the same order) over a *working batch* of a fixed size, pass after
pass, until at most ``1 / REFILL_RATIO`` of its lanes are still running; the host then
puts the members still running back into the pool of unfinished members and fills a
working batch again from that pool (members not yet begun start there, as in `solve`'s
loop, whose first pass starts the fit). Each pass calls two programs
(`nlsq_fn._drivers.batched_steps`): the model's evaluation, compiled once per model, and the
model-independent rest, compiled once per machine (kept on disk). Every working batch
has the same size, so both serve every batch size above it. When the pool no longer
fills a working batch, the last one (padded by repeating a member) runs until all have
stopped. The members' loop state waits on the host, packed (`nlsq_fn._drivers.packed`).

Each member's parameters, status and counts (`nfev`, `njev`, `nit`) are those of its
own fit by `solve`, up to rounding (another compiled program may round differently).
Only for concrete inputs (the eager front end); under the user's ``jax.jit`` the batch
is one ``vmap`` of `solve`, unchanged.
"""

import equinox as eqx
import jax
import numpy as np

from .._misc import as_jax_array
from .._problem.data import Data
from .._results.solution import Solution
from .batched_steps import (
    blank_loop,
    checks_only,
    finish_lanes,
    going,
    lane_evaluator,
    step_lanes,
    step_state,
)
from .packed import Layout
from .solver import SolverState

# A working batch goes back to the host for refilling once at most this share of its
# lanes are still running: the lanes that compute only to be discarded stay under half.
REFILL_RATIO = 2
# Lanes of a working batch, by platform: enough to vectorise each pass, few enough that
# the last working batch (which runs until its slowest member stops) costs little.
WORKING_BATCH = {"cpu": 256}
WORKING_BATCH_ACCELERATOR = 8192


def working_size(size: int) -> int:
    """Lanes of the working batch for a batch of `size` members."""
    lanes = WORKING_BATCH.get(jax.default_backend(), WORKING_BATCH_ACCELERATOR)
    return min(size, lanes)


def _to_host(tree):
    """`tree` with its arrays as NumPy arrays (gathered on the host, no compilation)."""
    return jax.tree.map(lambda leaf: np.asarray(leaf) if eqx.is_array(leaf) else leaf, tree)


def _to_device(tree):
    """`tree` with its arrays on the device: one copy of all of them (no compilation,
    and one call rather than one per leaf)."""
    arrays, rest = eqx.partition(tree, eqx.is_array)
    arrays = jax.tree.map(np.asarray, arrays)
    return eqx.combine(jax.device_put(arrays, may_alias=False), rest)


def _take(tree, lanes):
    """Rows `lanes` of every array in `tree` (all batched on their first axis)."""
    return jax.tree.map(lambda leaf: leaf[lanes] if eqx.is_array(leaf) else leaf, tree)


def _lanes(members, size: int):
    """`members` padded to `size` lanes by repeating the first: its repeats compute its
    fit again, and are discarded."""
    return np.concatenate([members, np.full(size - members.size, members[0])])


def _unravel_rows(flat, params, batched_state: bool):
    """Rows of flat parameters as the parameters' pytree with a leading batch axis (as
    ``vmap`` of `ravel_pytree`'s unravel, on the host: no program per batch size)."""
    leaves, structure = jax.tree.flatten(params)
    shapes = [np.shape(leaf)[1:] if batched_state else np.shape(leaf) for leaf in leaves]
    sizes = [int(np.prod(shape)) for shape in shapes]
    columns = np.split(flat, np.cumsum(sizes)[:-1], axis=1)
    rows = [
        as_jax_array(np.reshape(part, (flat.shape[0], *shape)).astype(np.asarray(leaf).dtype))
        for part, shape, leaf in zip(columns, shapes, leaves, strict=True)
    ]
    return jax.tree.unflatten(structure, rows)


def solve_compacted(
    model, data: Data, state: SolverState, batched_state: bool, progress=None
) -> Solution:
    """`solve_batch` with finished members leaving the working batch (see the module's
    docstring). `data` (and `state` when `batched_state`) carry a leading batch axis on
    every array. `progress`, if given, is called with ``(finished, size)`` after each
    working batch."""
    data = _to_host(data)
    slim = _to_host(step_state(state))  # the model-independent programs' state
    state = _to_host(state) if batched_state else state
    size, n_points = data.y.shape[0], int(np.prod(data.y.shape[1:]))
    lanes_per_batch = working_size(size)

    def lanes_of(lanes):
        """The device copies a working batch's programs take (one copy of all), and
        its lanes' loop state unpacked on the host."""
        member_state = _take(state, lanes) if batched_state else state
        member_slim = _take(slim, lanes) if batched_state else slim
        packed = tuple(part[lanes] for part in store)
        loop = layout.unpack(packed)
        on_device = _to_device(
            (_take(data, lanes), member_state, member_slim, packed, loop.pending, loop.begun)
        )
        return on_device, checks_only(on_device[0]), loop

    def run(lanes, stop_at):
        """Passes over a working batch until at most `stop_at` lanes are going; its
        members' loop state is then put back in the store."""
        (lane_data, lane_state, lane_slim, packed, pending, begun), checks, _ = lanes_of(lanes)
        evaluate = lane_evaluator(model, lane_data, lane_state, batched_state, pending, begun)
        f, jac = evaluate(pending, begun)
        step, leaves, _ = step_lanes.flat(checks, lane_slim, batched_state, layout, packed, f, jac)
        bound = leaves[: len(leaves) - len(packed) - 2]
        # The programs are called on flat arrays (no pytrees flattened per pass), and
        # one pass ahead: the next pass is dispatched before this one's count is read,
        # so the host's turn overlaps the device's work. The pass past the stop only
        # advances lanes still going (a stopped lane's state does not change).
        *packed, pending, begun, count = step(*bound, *packed, f, jac)
        while True:
            f, jac = evaluate(pending, begun)
            *packed, pending, begun, ahead = step(*bound, *packed, f, jac)
            if int(count) <= stop_at:
                break
            count = ahead
        for part, values in zip(store, packed, strict=True):
            part[lanes] = np.asarray(values)

    layout = Layout(blank_loop(slim, n_points, data.y.dtype))
    store = layout.zeros(size)  # every member's loop state, packed, on the host
    pool = np.arange(size)  # members not finished: the ones not begun first
    while pool.size:
        members, pool = pool[:lanes_per_batch], pool[lanes_per_batch:]
        lanes = _lanes(members, lanes_per_batch)
        # The last working batch runs to the end; the others until half are done.
        run(lanes, lanes_per_batch // REFILL_RATIO if pool.size else 0)
        still = np.asarray(going(layout.unpack(tuple(part[members] for part in store))))
        pool = np.concatenate([pool, members[still]])
        if progress is not None:
            progress(size - pool.size, size)
    solutions = []
    for begin in range(0, size, lanes_per_batch):
        members = np.arange(begin, min(begin + lanes_per_batch, size))
        lanes = _lanes(members, lanes_per_batch)
        (lane_data, lane_state, lane_slim, packed, _, _), checks, loop = lanes_of(lanes)
        x, every, none = _to_device(
            (loop.carry.x, np.ones(lanes_per_batch, bool), np.zeros(lanes_per_batch, bool))
        )
        evaluate = lane_evaluator(model, lane_data, lane_state, batched_state, x, every)
        f, jac = evaluate(x, every)
        f0, _ = evaluate(x, none)  # at the start: its cost
        fields = finish_lanes(checks, lane_slim, batched_state, layout, packed, f, jac, f0)
        solution = Solution(*fields)
        solutions.append(_take(_to_host(solution), slice(0, members.size)))
    whole = jax.tree.map(lambda *parts: np.concatenate(parts), *solutions)
    params = _unravel_rows(whole.x, state.params, batched_state)
    whole = jax.tree.map(as_jax_array, eqx.tree_at(lambda s: s.x, whole, None))
    return eqx.tree_at(lambda s: s.x, whole, params, is_leaf=lambda leaf: leaf is None)
