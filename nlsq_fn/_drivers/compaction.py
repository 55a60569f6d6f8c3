"""A batch of fits whose finished members stop costing: a working batch refilled from
a host loop.

Under ``jax.vmap``, `solve`'s ``lax.while_loop`` runs until its slowest member stops:
every pass evaluates and steps every member, the finished ones only to discard the
result. A batch's time then follows its slowest member, not its typical one.

Here a Python loop drives the same strategy code (`start`, ``strategy.propose`` /
``strategy.judge`` and `advance`: for each member the evaluations and arithmetic of
`solve`'s loop, in the same order) over a *working batch* of a fixed size, pass after
pass, until at most `REFILL_AT` of its lanes are still running; the host then puts the
members still running back into the pool of unfinished members and fills a working
batch again from that pool (members not yet begun start there, as in `solve`'s loop,
whose first pass starts the fit). Each pass calls two programs
(`nlsq_fn._drivers.batched_steps`): the model's evaluation, compiled once per model, and the
model-independent rest, compiled once per machine (kept on disk). The host dispatches
each pass before it reads the previous pass's count of running lanes (an asynchronous
device need not wait for the host's turn). Working batches come in two sizes, so the
programs serve every batch size: the full one, and the tail's (`tail_size`): when the
pool is empty, the last full working batch runs until few enough members are going,
and those finish in the tail's small working batch instead of keeping all lanes
running. A working batch the pool does not fill is padded with a member that has
stopped (frozen: its lanes change nothing). The members' loop state waits on the host,
packed (`nlsq_fn._drivers.packed`).

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
# lanes are still running (the share of lanes that compute only to be discarded, or
# that wait for the refill, stays under a quarter).
REFILL_AT = 0.75
# Lanes of a working batch, by platform: enough to vectorise each pass, few enough that
# a pass costs little more than its arithmetic. On the CPU the most lanes (a pass's
# fixed cost spread over more members) whose Jacobians stay within `JACOBIAN_BYTES`
# (the cache: beyond it a lane costs more), within (fewest, most).
WORKING_BATCH = {"cpu": (512, 2048)}
WORKING_BATCH_ACCELERATOR = 8192
JACOBIAN_BYTES = 3 * 2**20
# The tail: once the pool of unfinished members is empty and at most a `TAIL_SHARE`-th
# of the lanes are still going, they go on in a working batch that small (its own
# programs: one more compilation of the model's), so that the slowest members do not
# keep a full working batch running.
TAIL_SHARE = 8
MIN_TAIL = 4


def _full_width(jacobian_bytes: int) -> int:
    """Lanes of a full working batch whose members' Jacobians take `jacobian_bytes`."""
    limits = WORKING_BATCH.get(jax.default_backend())
    if limits is None:
        return WORKING_BATCH_ACCELERATOR
    fewest, lanes = limits
    while lanes > fewest and lanes * jacobian_bytes > JACOBIAN_BYTES:
        lanes //= 2
    return lanes


def working_size(size: int, jacobian_bytes: int) -> int:
    """Lanes of the working batch for a batch of `size` members whose Jacobians take
    `jacobian_bytes` each."""
    return min(size, _full_width(jacobian_bytes))


def tail_size(lanes: int, jacobian_bytes: int) -> int:
    """Lanes of the tail's working batch after working batches of `lanes` (0: none).
    Only after full working batches: a smaller batch runs in one working batch of its
    own size, where a second program's compilation would cost more than the tail saves."""
    tail = lanes // TAIL_SHARE
    return tail if lanes >= _full_width(jacobian_bytes) and tail >= MIN_TAIL else 0


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


def _lanes(members, size: int, store=None, layout=None):
    """`members` padded to `size` lanes. The padding repeats a member that has stopped
    (its lanes change nothing and are not counted as going), else the first member (its
    repeats compute its fit again, and are discarded)."""
    if members.size == size:
        return members
    padding = members[0]
    if store is not None:
        stopped = np.flatnonzero(~np.asarray(going(layout.unpack(store))))
        if stopped.size:
            padding = stopped[0]
    return np.concatenate([members, np.full(size - members.size, padding)])


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
    jacobian_bytes = n_points * slim.params.shape[-1] * data.y.dtype.itemsize
    lanes_per_batch = working_size(size, jacobian_bytes)

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
        # so that an asynchronous device need not wait for the host's turn (on the CPU,
        # measured neutral). The pass past the stop only advances lanes still going (a
        # stopped lane's state does not change).
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
    tail = tail_size(lanes_per_batch, jacobian_bytes)
    while pool.size:
        # The tail's small working batch once few members are left, else the full one.
        width = tail if 0 < pool.size <= tail else lanes_per_batch
        members, pool = pool[:width], pool[width:]
        lanes = _lanes(members, width, store, layout)
        # Refilled from the pool while it has members; the last full working batch runs
        # until few enough are going for the tail's, and the tail's to the end.
        if pool.size:
            stop_at = int(width * REFILL_AT)
        else:
            stop_at = tail if width > tail else 0
        run(lanes, stop_at)
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
