"""A batch of fits whose finished members stop costing: a working batch refilled from
a host loop.

Under ``jax.vmap``, `solve`'s ``lax.while_loop`` runs until its slowest member stops:
every pass evaluates and steps every member, the finished ones only to discard the
result. A batch's time then follows its slowest member, not its typical one.

Here a Python loop drives the same strategy code (`start`, ``strategy.propose`` /
``strategy.judge`` and `advance`: for each member the evaluations and arithmetic of
`solve`'s loop, in the same order) over a *working batch* of a fixed size. A compiled
program runs it pass after pass until at most ``1 / REFILL_RATIO`` of its lanes are
still running; the host then puts the members still running back into the pool of
unfinished members and fills a working batch again from that pool (members not yet
begun start there, as in `solve`'s loop, whose first pass starts the fit). Every
working batch has the same size, so the loop is one program, compiled once per size
and model and shared by every batch size above it. When the pool no longer fills a
working batch, the last one (padded by repeating a member) runs until all have stopped.

Each member's parameters, status and counts (`nfev`, `njev`, `nit`) are those of its
own fit by `solve`, up to rounding (another compiled program may round differently).
Only for concrete inputs (the eager front end); under the user's ``jax.jit`` the batch
is one ``vmap`` of `solve`, unchanged.
"""

import equinox as eqx
import jax
import numpy as np

from ._batched_steps import (
    blank_loop,
    checks_only,
    finish_lanes,
    going,
    lane_evaluator,
    step_lanes,
    step_state,
)
from ._data import Data
from ._misc import as_jax_array
from ._result import Solution
from ._solver import SolverState

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


def _put(tree, lanes, values):
    """`tree` (host arrays, modified in place) with rows `lanes` set to `values`."""

    def put(whole, part):
        if eqx.is_array(whole):
            whole[lanes] = part

    jax.tree.map(put, tree, values)


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
        as_jax_array(np.reshape(part, (flat.shape[0], *shape)).astype(np.result_type(leaf)))
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

    def lanes_of(lanes, loop):
        """The device copies a working batch's programs take (one copy of all)."""
        member_state = _take(state, lanes) if batched_state else state
        member_slim = _take(slim, lanes) if batched_state else slim
        lane_data, member_state, member_slim, loop = _to_device(
            (_take(data, lanes), member_state, member_slim, _take(loop, lanes))
        )
        return lane_data, member_state, checks_only(lane_data), member_slim, loop

    def _run(lane_data, lane_state, lane_checks, lane_slim, loop, stop_at):
        """Passes over a working batch until at most `stop_at` lanes are going: the
        programs called on flat arrays, the loop's state kept as its leaves."""
        evaluate = lane_evaluator(
            model, lane_data, lane_state, batched_state, loop.pending, loop.begun
        )
        loop_leaves, loop_tree = jax.tree.flatten(loop)
        where = jax.tree.unflatten(loop_tree, range(len(loop_leaves)))
        pending, begun = where.pending, where.begun
        f, jac = evaluate(loop.pending, loop.begun)
        step, leaves, out_tree = step_lanes.flat(
            lane_checks, lane_slim, batched_state, loop, f, jac
        )
        bound = leaves[: len(leaves) - len(loop_leaves) - 2]
        while True:
            out = step(*bound, *loop_leaves, f, jac)
            loop_leaves, count = out[:-1], out[-1]
            if int(count) <= stop_at:
                return jax.tree.unflatten(out_tree, out)[0]
            f, jac = evaluate(loop_leaves[pending], loop_leaves[begun])

    blank = blank_loop(slim, n_points, data.y.dtype)
    store = jax.tree.map(  # every member's loop state, on the host
        lambda leaf: np.zeros((size, *leaf.shape), leaf.dtype), blank
    )
    pool = np.arange(size)  # members not finished: the ones not begun first
    while pool.size:
        members, pool = pool[:lanes_per_batch], pool[lanes_per_batch:]
        lanes = _lanes(members, lanes_per_batch)
        # The last working batch runs to the end; the others until half are done.
        stop_at = lanes_per_batch // REFILL_RATIO if pool.size else 0
        lane_data, lane_state, lane_checks, lane_slim, loop = lanes_of(lanes, store)
        loop = _run(lane_data, lane_state, lane_checks, lane_slim, loop, stop_at)
        loop = _to_host(loop)
        _put(store, lanes, loop)
        still = np.asarray(going(loop))[: members.size]
        pool = np.concatenate([pool, members[still]])
        if progress is not None:
            progress(size - pool.size, size)
    solutions = []
    for begin in range(0, size, lanes_per_batch):
        members = np.arange(begin, min(begin + lanes_per_batch, size))
        lanes = _lanes(members, lanes_per_batch)
        lane_data, lane_state, lane_checks, lane_slim, carry = lanes_of(lanes, store.carry)
        every = as_jax_array(np.ones(lanes_per_batch, bool))
        evaluate = lane_evaluator(model, lane_data, lane_state, batched_state, carry.x, every)
        f, jac = evaluate(carry.x, every)
        f0, _ = evaluate(carry.x, ~every)  # at the start: its cost
        solution = finish_lanes(lane_checks, lane_slim, batched_state, carry, f, jac, f0)
        solutions.append(_take(_to_host(solution), slice(0, members.size)))
    whole = jax.tree.map(lambda *parts: np.concatenate(parts), *solutions)
    params = _unravel_rows(whole.x, state.params, batched_state)
    whole = jax.tree.map(as_jax_array, eqx.tree_at(lambda s: s.x, whole, None))
    return eqx.tree_at(lambda s: s.x, whole, params, is_leaf=lambda leaf: leaf is None)
