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
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._compiled import compiled
from ._data import Data
from ._misc import as_jax_array, tree_where
from ._result import Solution
from ._solve import (
    LoopCarry,
    advance,
    linearization_at,
    problem_for,
    solution_at,
    start,
    valid_input,
)
from ._solver import SolverState, start_point
from ._trust_region import RUNNING

# A working batch goes back to the host for refilling once at most this share of its
# lanes are still running: the lanes that compute only to be discarded stay under half.
REFILL_RATIO = 2
# Lanes of a working batch, by platform: enough to vectorise each pass, few enough that
# the last working batch (which runs until its slowest member stops) costs little.
WORKING_BATCH = {"cpu": 256}
WORKING_BATCH_ACCELERATOR = 8192


class WorkingLoop(eqx.Module):
    """The loop's state of each lane of a working batch: its carry (as `solve`'s loop
    keeps it), the point to evaluate next, the strategy's proposal there, and whether
    the fit has begun (a lane not begun evaluates its start first)."""

    carry: LoopCarry
    pending: jax.Array
    proposal: eqx.Module
    begun: jax.Array


def working_size(size: int) -> int:
    """Lanes of the working batch for a batch of `size` members."""
    lanes = WORKING_BATCH.get(jax.default_backend(), WORKING_BATCH_ACCELERATOR)
    return min(size, lanes)


def _member_setup(model, data: Data, state: SolverState):
    """What every pass of one member needs, as `solve`'s loop builds it: its start
    (moved inside the bounds), whether its input is valid, its problem and evaluation."""
    x_given, _ = ravel_pytree(state.params)
    valid = valid_input(x_given, data, state)
    x0, unravel = start_point(state)
    problem = problem_for(data, state)

    def evaluate(x):
        return linearization_at(model, data, state, unravel, x)

    return x0, valid, problem, evaluate


def _vmapped(function, batched_state: bool, per_member: int = 0):
    """`function(model, data, state, *arguments)` over the batch: the model shared, the
    data's arrays batched, the state's too if `batched_state`, and `per_member` more
    batched arguments."""
    state_axis = eqx.if_array(0) if batched_state else None
    in_axes = (None, eqx.if_array(0), state_axis) + (eqx.if_array(0),) * per_member
    return eqx.filter_vmap(function, in_axes=in_axes)


def _started(model, data, state) -> WorkingLoop:
    x0, valid, problem, evaluate = _member_setup(model, data, state)
    strategy = state.strategy
    carry = start(strategy, x0, evaluate(x0), problem, state.max_nfev, valid)
    pending, proposal = strategy.propose(
        carry.x, carry.linearization, carry.strategy_state, problem
    )
    return WorkingLoop(carry, pending, proposal, jnp.asarray(True))


@compiled
def blank_loop(model, data: Data, state: SolverState) -> WorkingLoop:
    """Zeros shaped as one member's loop state (of the member given), not begun."""
    shapes = jax.eval_shape(lambda: _started(model, data, state))
    return jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), shapes)


def _one_pass(model, data, state, loop: WorkingLoop) -> WorkingLoop:
    """One pass of `solve`'s loop for one member: evaluate the pending point (its start,
    if not begun), then start the fit there or judge the trial step and count it
    (`advance`), then propose the next trial point."""
    x0, valid, problem, evaluate = _member_setup(model, data, state)
    strategy, carry, begun = state.strategy, loop.carry, loop.begun
    pending = jnp.where(begun, loop.pending, x0)
    trial = evaluate(pending)
    started = start(strategy, pending, trial, problem, state.max_nfev, valid)
    # (A lane not begun judges its blank carry: the result is discarded.)
    out = strategy.judge(
        carry.x, carry.linearization, carry.strategy_state, loop.proposal, trial, problem
    )
    carry = tree_where(begun, advance(carry, out, strategy, state.max_nfev), started)
    pending, proposal = strategy.propose(
        carry.x, carry.linearization, carry.strategy_state, problem
    )
    return WorkingLoop(carry, pending, proposal, jnp.asarray(True))


def _freeze_finished(going, new, old):
    """`new` for the lanes still going, `old` (frozen) for the others, leaf by leaf."""

    def pick(a, b):
        return jnp.where(going.reshape(going.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, new, old)


def _going(loop: WorkingLoop):
    return ~loop.begun | (loop.carry.status == RUNNING)


@compiled
def run_working_batch(
    model, data: Data, state: SolverState, loop: WorkingLoop, batched_state: bool, stop_at
):
    """Passes over a working batch until at most `stop_at` of its lanes are going on;
    a finished member is frozen, as in ``vmap`` of `solve`'s loop."""
    one_pass = _vmapped(_one_pass, batched_state, per_member=1)

    def body(loop):
        return _freeze_finished(_going(loop), one_pass(model, data, state, loop), loop)

    return jax.lax.while_loop(lambda loop: jnp.sum(_going(loop)) > stop_at, body, loop)


@compiled
def finish(model, data: Data, state: SolverState, batched_state: bool, carry):
    """Each member's `Solution` from its final carry, as `solve` makes it."""

    def one(model, data, state, carry):
        problem = problem_for(data, state)
        active_mask = state.strategy.active_constraints(carry.x, problem)
        return solution_at(model, data, state, carry.x, carry, active_mask)

    return _vmapped(one, batched_state, per_member=1)(model, data, state, carry)


def _to_host(tree):
    """`tree` with its arrays as NumPy arrays (gathered on the host, no compilation)."""
    return jax.tree.map(lambda leaf: np.asarray(leaf) if eqx.is_array(leaf) else leaf, tree)


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


def solve_compacted(
    model, data: Data, state: SolverState, batched_state: bool, progress=None
) -> Solution:
    """`solve_batch` with finished members leaving the working batch (see the module's
    docstring). `data` (and `state` when `batched_state`) carry a leading batch axis on
    every array. `progress`, if given, is called with ``(finished, size)`` after each
    working batch."""
    data = _to_host(data)
    state = _to_host(state) if batched_state else state
    size = data.y.shape[0]
    lanes_per_batch = working_size(size)

    def member_state(lanes):
        return _take(state, lanes) if batched_state else state

    first_state = _take(state, 0) if batched_state else state
    blank = _to_host(blank_loop(model, _take(data, 0), first_state))
    store = jax.tree.map(  # every member's loop state, on the host
        lambda leaf: np.zeros((size, *leaf.shape), leaf.dtype) if eqx.is_array(leaf) else leaf,
        blank,
    )
    pool = np.arange(size)  # members not finished: the ones not begun first
    while pool.size:
        members, pool = pool[:lanes_per_batch], pool[lanes_per_batch:]
        lanes = _lanes(members, lanes_per_batch)
        # The last working batch runs to the end; the others until half are done.
        stop_at = lanes_per_batch // REFILL_RATIO if pool.size else 0
        loop = run_working_batch(
            model,
            _take(data, lanes),
            member_state(lanes),
            _take(store, lanes),
            batched_state,
            np.int32(stop_at),
        )
        loop = _to_host(loop)
        _put(store, lanes, loop)
        going = np.asarray(_going(loop))[: members.size]
        pool = np.concatenate([pool, members[going]])
        if progress is not None:
            progress(size - pool.size, size)
    solutions = []
    for begin in range(0, size, lanes_per_batch):
        members = np.arange(begin, min(begin + lanes_per_batch, size))
        lanes = _lanes(members, lanes_per_batch)
        solution = finish(
            model, _take(data, lanes), member_state(lanes), batched_state, _take(store.carry, lanes)
        )
        solutions.append(_take(_to_host(solution), slice(0, members.size)))
    return jax.tree.map(
        lambda *parts: as_jax_array(np.concatenate(parts)) if eqx.is_array(parts[0]) else parts[0],
        *solutions,
    )
