"""The compiled programs of a compacted batch (`nlsq_fn._drivers.compaction`): the model's
evaluation, and the model-independent rest of each pass.

A pass of `solve`'s loop evaluates the residuals and Jacobian at one point per member,
then reduces them to the ``n``-sized summary, judges the trial step and proposes the next
one. Only the first part sees the model. Compiled as one loop, the whole pass is compiled
again for every model (seconds: the strategy's SVD and trust-region arithmetic dominate).
Split in two, the model's program (`evaluate_lanes`: ``vmap`` of the residuals and their
Jacobian, nothing else) is all that is compiled per model; the rest (`step_lanes`,
`finish_lanes`) depends only on the strategy, the options, ``n``, ``m``, the working
batch's size and the dtype, is compiled once for every model, and is kept on disk
(`nlsq_fn._evaluation.program_store`) so that a new process loads it instead of compiling it.

Each member's arithmetic is `solve`'s, in the same order: `start` on the first pass,
``strategy.judge`` and `advance` on the others, then ``strategy.propose``.
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._evaluation.compiled import clear_jit, compiled, jit_cache_size, register
from .._evaluation.linearize import Linearization, factorize, linearize, scale_for_loss
from .._evaluation.precision import full_precision
from .._evaluation.program_store import stored
from .._misc import tree_where
from .._problem.data import Data
from .._results.solution import finished
from .._strategies.trust_region import RUNNING
from .linearize_at import problem_for, residual_and_jac
from .solve import LoopCarry, advance, start, valid_input
from .solver import SolverState
from .start import start_point


class WorkingLoop(eqx.Module):
    """The loop's state of each lane of a working batch: its carry (as `solve`'s loop
    keeps it), the point to evaluate next, the strategy's proposal there, and whether
    the fit has begun (a lane not begun evaluates its start first)."""

    carry: LoopCarry
    pending: jax.Array
    proposal: eqx.Module
    begun: jax.Array


def step_state(state: SolverState) -> SolverState:
    """`state` (concrete) as the model-independent programs take it: flat parameters
    (rows of them for a batched state, as `ravel_pytree` orders them), and none of the
    options that only the model's evaluation uses (the Jacobian's scheme, which may be
    the user's function), so that one program serves every model."""
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(state.params)]
    if state.lower.ndim == 2:  # batched: one row per member
        flat = np.concatenate([leaf.reshape(leaf.shape[0], -1) for leaf in leaves], axis=1)
    else:
        flat = np.concatenate([leaf.ravel() for leaf in leaves])
    return dataclasses.replace(state, params=flat, jac="fwd", diff_step=None)


def checks_only(data: Data) -> Data:
    """`data` without its model inputs: the model-independent programs read only `y`,
    `sigma` and `mask` (which points count, whether the input is valid). `y` stands in
    for `x`, so no array of the user's inputs is passed."""
    return Data(data.y, data.y, sigma=data.sigma, mask=data.mask)


def _vmapped(function, batched_state: bool, per_member: int):
    """`function(data, state, *arguments)` over the lanes: the data's arrays batched,
    the state's too if `batched_state`, and `per_member` more batched arguments."""
    state_axis = eqx.if_array(0) if batched_state else None
    in_axes = (eqx.if_array(0), state_axis) + (eqx.if_array(0),) * per_member
    return eqx.filter_vmap(function, in_axes=in_axes)


def _point(state, loop_pending, begun):
    """The point a lane evaluates: its pending trial point, or its start if not begun."""
    return jnp.where(begun, loop_pending, start_point(state)[0])


def _evaluate(model, data, state, batched_state, pending, begun):
    """Each lane's weighted residuals and Jacobian at its point (`pending`, or the
    member's start where not `begun`)."""

    def one(data, state, pending, begun):
        _, unravel = ravel_pytree(state.params)
        return residual_and_jac(model, data, state, unravel, _point(state, pending, begun))

    return _vmapped(one, batched_state, 2)(data, state, pending, begun)


evaluate_lanes = compiled(_evaluate)


class _Options:
    """The static part of the model program's arguments (the model, the options), as a
    hashable value compared once per working batch rather than pytree by pytree."""

    def __init__(self, in_tree, static):
        self.in_tree, self.static = in_tree, static
        static_leaves, static_tree = jax.tree.flatten(static)
        self.key = (in_tree, static_tree, tuple(static_leaves))
        self.hash = hash(self.key)  # TypeError where an option is unhashable

    def __hash__(self):
        return self.hash

    def __eq__(self, other):
        return isinstance(other, _Options) and self.key == other.key


def _evaluate_flat(options: _Options, *leaves):
    return _evaluate(*eqx.combine(options.in_tree.unflatten(leaves), options.static))


class _JitProgram:
    """`jax.jit` of `_evaluate_flat`, counted and cleared with nlsq_fn's programs."""

    def __init__(self):
        self.jit = jax.jit(full_precision(_evaluate_flat), static_argnums=0)

    def cache_size(self) -> int:
        return jit_cache_size(self.jit)

    def clear(self) -> None:
        clear_jit(self.jit)


_evaluate_program = register(_JitProgram())


def lane_evaluator(model, data: Data, state: SolverState, batched_state: bool, pending, begun):
    """The model's program for one working batch, as a function of the lanes'
    ``(pending, begun)`` (shaped as those given) with everything else bound: called
    once a pass, it dispatches with JAX's own fast path (no flattening of the model,
    data and state at every pass)."""
    args = (model, data, state, batched_state, pending, begun)
    dynamic, static = eqx.partition(args, eqx.is_array)
    leaves, in_tree = jax.tree.flatten(dynamic)
    try:
        options = _Options(in_tree, static)
    except TypeError:  # an unhashable option: through `equinox.filter_jit`, slower
        return lambda pending, begun: evaluate_lanes(
            model, data, state, batched_state, pending, begun
        )
    bound = leaves[:-2]
    return lambda pending, begun: _evaluate_program.jit(options, *bound, pending, begun)


_blank_shapes: dict = {}  # traced once per configuration: tracing costs a tenth of a second


def blank_loop(state: SolverState, n_points: int, dtype) -> WorkingLoop:
    """The shapes of one member's loop state (a trace, no program)."""
    dynamic, static = eqx.partition(state, eqx.is_array)
    static_leaves, static_tree = jax.tree.flatten(static)
    shapes = tuple((np.shape(leaf), np.result_type(leaf)) for leaf in jax.tree.leaves(dynamic))
    key = (jax.tree.structure(dynamic), static_tree, tuple(static_leaves), shapes, n_points)
    try:
        hash(key)
    except TypeError:
        return _blank_loop(state, n_points, dtype)
    if (key, np.dtype(dtype)) not in _blank_shapes:
        _blank_shapes[key, np.dtype(dtype)] = _blank_loop(state, n_points, dtype)
    return _blank_shapes[key, np.dtype(dtype)]


def _blank_loop(state: SolverState, n_points: int, dtype) -> WorkingLoop:
    batched = state.lower.ndim == 2
    member = jax.tree.map(lambda leaf: leaf[0] if eqx.is_array(leaf) else leaf, state)
    member = member if batched else state

    def started(member):
        x0, _ = start_point(member)
        n = x0.size
        f, jac = jnp.zeros(n_points, dtype), jnp.zeros((n_points, n), dtype)
        lin = linearize(f, jac, member.loss, member.factorization)
        problem = problem_for(Data(f, f), member)
        carry = start(member.strategy, x0, lin, problem, member.max_nfev)
        pending, proposal = member.strategy.propose(
            carry.x, carry.linearization, carry.strategy_state, problem
        )
        return WorkingLoop(carry, pending, proposal, jnp.asarray(False))

    return jax.eval_shape(started, member)


def _one_pass(data, state, loop: WorkingLoop, f, jac) -> WorkingLoop:
    """The rest of one pass of `solve`'s loop for one member, once its point is
    evaluated: start the fit there (first pass) or judge the trial step and count it,
    then propose the next trial point. A finished member is frozen."""
    valid = valid_input(state.params, data, state)
    problem = problem_for(data, state)
    strategy, carry, begun = state.strategy, loop.carry, loop.begun
    point = _point(state, loop.pending, begun)
    trial = linearize(f, jac, state.loss, state.factorization)
    started = start(strategy, point, trial, problem, state.max_nfev, valid)
    # (A lane not begun judges its blank carry: the result is discarded.)
    out = strategy.judge(
        carry.x, carry.linearization, carry.strategy_state, loop.proposal, trial, problem
    )
    new = tree_where(begun, advance(carry, out, strategy, state.max_nfev), started)
    pending, proposal = strategy.propose(new.x, new.linearization, new.strategy_state, problem)
    stepped = WorkingLoop(new, pending, proposal, jnp.asarray(True))
    return tree_where(going(loop), stepped, loop)


def going(loop: WorkingLoop):
    """Whether a lane (or each lane) is still fitting: not begun, or running."""
    return ~loop.begun | (loop.carry.status == RUNNING)


@stored
def step_lanes(checks: Data, state: SolverState, batched_state: bool, layout, packed, f, jac):
    """The model-independent part of one pass over the lanes (their loop state packed
    by `layout`): the loop state after it, the lanes' next points and whether they have
    begun (for the model's program), and how many lanes are still going."""
    loop = layout.unpack(packed)
    loop = _vmapped(_one_pass, batched_state, 3)(checks, state, loop, f, jac)
    return layout.pack(loop), loop.pending, loop.begun, jnp.sum(going(loop))


@stored
def finish_lanes(checks: Data, state: SolverState, batched_state: bool, layout, packed, f, jac, f0):
    """Each lane's `Solution` (flat parameters; a tuple of its fields) from its final
    loop state (packed by `layout`) and the residuals and Jacobian at its last point
    (`f`, `jac`) and at its start (`f0`), as `solution_at` makes it."""

    def one(data, state, carry, f, jac, f0):
        problem = problem_for(data, state)
        cost, f_scaled, jac_scaled = scale_for_loss(f, jac, state.loss)
        final = Linearization(
            cost=cost,
            grad=jac_scaled.T @ f_scaled,
            factor=factorize(jac_scaled, state.factorization),
        )
        active = state.strategy.active_constraints(carry.x, problem)
        optimality = state.strategy.optimality(carry.x, final, problem)
        initial_cost = state.loss.cost(f0)
        return finished(carry.x, final, f, jac_scaled, optimality, active, carry, initial_cost)

    carry = layout.unpack(packed).carry
    solution = _vmapped(one, batched_state, 4)(checks, state, carry, f, jac, f0)
    # A tuple of its fields, not the module: its structure is then stored with the
    # program, and loading it needs no trace.
    return tuple(getattr(solution, field.name) for field in dataclasses.fields(solution))
