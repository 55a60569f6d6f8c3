"""``solve``: the whole fit as one pure, compiled, differentiable function."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int, PyTree

from .._evaluation.chunking import chunks_agree
from .._evaluation.linearize import Linearization, factorize, scale_for_loss
from .._evaluation.operator_linearize import matrix_linearization
from .._evaluation.precision import full_precision, full_precision_products
from .._misc import tree_where
from .._problem.data import Data
from .._problem.host_errors import reraise_host_errors
from .._problem.host_model import evaluated_on_host
from .._results.solution import Solution, finished
from .._strategies.trust_region import CHUNKS_DIFFER, IMPROPER_INPUT, MAX_NFEV, RUNNING
from . import progress as _progress
from .adjoint import differentiable_fit, with_explicit_closure
from .linearize_at import (
    is_matrix_free,
    linearization_at,
    operator_linearization_at,
    problem_for,
    residual_and_jac,
    residual_function,
    uses_jvps,
)
from .solver import SolverState
from .start import start_point


class LoopCarry(eqx.Module):
    x: Float[Array, " n"]
    linearization: Linearization
    strategy_state: PyTree
    nfev: Int[Array, ""]
    njev: Int[Array, ""]
    nit: Int[Array, ""]
    status: Int[Array, ""]


class _Stats(eqx.Module):
    nfev: Int[Array, ""]
    njev: Int[Array, ""]
    nit: Int[Array, ""]
    status: Int[Array, ""]
    active_mask: Int[Array, " n"]


def start(strategy, x0, lin0, problem, max_nfev, valid=True, chunks_ok=True) -> LoopCarry:
    """The loop's carry after the first evaluation (at `x0`); `valid` is False for input
    found improper inside a traced program (status -1), `chunks_ok` False where the
    automatic chunks change the model's values (status `CHUNKS_DIFFER`)."""
    strategy_state, status = strategy.init(x0, lin0, problem)
    status = jnp.where(lin0.finite & valid, status, IMPROPER_INPUT)
    status = jnp.where(chunks_ok, status, CHUNKS_DIFFER)
    one = jnp.asarray(1, jnp.int32)
    status = jnp.where((status == RUNNING) & (max_nfev <= 1), MAX_NFEV, status)
    return LoopCarry(x0, lin0, strategy_state, one, one, 0 * one, status.astype(jnp.int32))


def advance(carry: LoopCarry, out, strategy, max_nfev) -> LoopCarry:
    """The loop's carry after one trial step `out` (one more evaluation): counts
    evaluations and iterations and stops at the evaluation budget."""
    nfev = carry.nfev + 1
    status = jnp.where((out.status == RUNNING) & (nfev >= max_nfev), MAX_NFEV, out.status).astype(
        jnp.int32
    )
    nit = carry.nit + (out.accepted | (status != RUNNING)).astype(jnp.int32)
    new_jacobian = out.accepted
    if not strategy.jacobian_after_last_step:
        new_jacobian = new_jacobian & (out.status == RUNNING)
    njev = carry.njev + new_jacobian.astype(jnp.int32)
    return LoopCarry(out.x, out.linearization, out.strategy_state, nfev, njev, nit, status)


def valid_input(x0, data: Data, state: SolverState):
    """The checks `init` makes in Python on concrete inputs, as one traced flag, so that
    bad input under `jax.jit` / `jax.vmap` ends with status -1 instead of garbage."""
    counted = jnp.ones(data.y.shape, bool) if data.mask is None else data.mask
    ok = jnp.any(counted) & jnp.all(jnp.isfinite(x0))
    if data.sigma is not None:
        sigma = jnp.broadcast_to(data.sigma, data.y.shape)
        ok &= jnp.all(jnp.where(counted, jnp.isfinite(sigma) & (sigma > 0), True))
    lower, upper = state.lower, state.upper
    ok &= jnp.all(lower < upper)  # False for NaN bounds too
    ok &= jnp.all((x0 >= lower) & (x0 <= upper))
    if state.x_scale is not None:
        ok &= jnp.all(jnp.isfinite(state.x_scale) & (state.x_scale > 0))
    f_scale = jnp.asarray(state.loss.f_scale, x0.dtype)
    return ok & jnp.isfinite(f_scale) & (f_scale > 0) & jnp.isfinite(1 / f_scale**2)


def _loop_with_one_evaluation(
    strategy, x0, evaluate, problem, state, valid, chunks_ok=True
) -> LoopCarry:
    """The loop of `_iterate` with the evaluation at the start made by its first pass,
    so that the compiled program holds one evaluation (model, Jacobian, factorization)
    instead of two: every pass evaluates its pending point, then either starts (the
    first pass: `start` at `x0`) or judges the trial step (`strategy.judge`, counted
    by `advance`), then proposes the next trial point. The same evaluations and
    arithmetic, in the same order, as `start` followed by a loop of `strategy.step`
    (which a strategy without `propose` / `judge`, or a watched fit, still uses)."""
    # The carry's shapes and dtypes before the first evaluation (a trace, no code).
    shapes = jax.eval_shape(
        lambda: start(strategy, x0, evaluate(x0), problem, state.max_nfev, valid, chunks_ok)
    )
    blank = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), shapes)
    proposal = jax.eval_shape(
        lambda: strategy.propose(blank.x, blank.linearization, blank.strategy_state, problem)
    )[1]
    proposal = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), proposal)

    def body(loop):
        carry, pending, proposal, begun = loop
        trial = evaluate(pending)
        started = start(strategy, pending, trial, problem, state.max_nfev, valid, chunks_ok)
        # (On the first pass `judge` sees the blank carry; its result is discarded.)
        out = strategy.judge(
            carry.x, carry.linearization, carry.strategy_state, proposal, trial, problem
        )
        carry = tree_where(begun, advance(carry, out, strategy, state.max_nfev), started)
        pending, proposal = strategy.propose(
            carry.x, carry.linearization, carry.strategy_state, problem
        )
        return carry, pending, proposal, jnp.asarray(True)

    def going_on(loop):
        carry, _, _, begun = loop
        return ~begun | (carry.status == RUNNING)

    loop = (blank, x0, proposal, jnp.asarray(False))
    return jax.lax.while_loop(going_on, body, loop)[0]


def _iterate(inputs):
    """The fit itself: a single `lax.while_loop` over trial steps."""
    # (The implicit rule may trace this again after the fit was traced, under the
    # user's `jit` inside `grad`: it keeps full float32 products itself.)
    with full_precision_products():
        return _iterate_loop(inputs)


def _iterate_loop(inputs):
    model, data, state = inputs
    x_given, _ = ravel_pytree(state.params)
    valid = valid_input(x_given, data, state)
    x0, unravel = start_point(state)
    chunks_ok = True
    if state.verify_chunks:
        chunks_ok = chunks_agree(model, data, unravel(x0), state.chunk_size)
    residual = None
    if uses_jvps(state):
        residual = residual_function(model, data, unravel)
    problem = problem_for(data, state, residual)
    strategy = state.strategy

    def evaluate(x):
        return linearization_at(model, data, state, unravel, x)

    # Progress hook: static switches, so a plain fit traces no callbacks at all.
    watched = state.verbose == 2 or state.callback is not None
    if strategy.steps_from_host and not watched:
        final = _loop_with_one_evaluation(strategy, x0, evaluate, problem, state, valid, chunks_ok)
        active = strategy.active_constraints(final.x, problem)
        stats = _Stats(final.nfev, final.njev, final.nit, final.status, active)
        return final.x, stats
    lin0 = evaluate(x0)
    carry = start(strategy, x0, lin0, problem, state.max_nfev, valid, chunks_ok)
    if state.verbose == 2:
        printed = _progress.report_start(lin0.cost, strategy.optimality(x0, lin0, problem))
        carry = eqx.tree_at(
            lambda c: c.status, carry, jnp.where(printed, carry.status, IMPROPER_INPUT)
        )

    def body(carry):
        out = strategy.step(carry.x, carry.linearization, carry.strategy_state, evaluate, problem)
        new = advance(carry, out, strategy, state.max_nfev)
        if watched:
            status = _progress.after_iteration(
                carry,
                new,
                state,
                unravel,
                lambda x, lin: strategy.optimality(x, lin, problem),
            )
            new = eqx.tree_at(lambda c: c.status, new, status)
        return new

    final = jax.lax.while_loop(lambda c: c.status == RUNNING, body, carry)
    active = strategy.active_constraints(final.x, problem)
    stats = _Stats(final.nfev, final.njev, final.nit, final.status, active)
    return final.x, stats


@reraise_host_errors
@full_precision
def solve(model: Callable, data: Data, state: SolverState) -> Solution:
    """Fit ``model(x, params)`` to `data`, starting from `state` (made by `init`).

    Pure: works under `jax.jit`, `jax.vmap` (over `data` and `state`, each member of a
    batch stopping on its own criteria) and autodiff. Derivatives of the solution with
    respect to the data, the bounds, the loss scale or arrays inside `model` (when it is
    an `equinox.Module`) come from the implicit function theorem applied to the
    first-order optimality condition, never from unrolling the iterations (see
    `nlsq_fn._drivers.adjoint`). Arrays the model closes over are differentiable too.
    """
    if state.host_model:
        model = evaluated_on_host(model, data.y.shape)
    else:
        model = with_explicit_closure(model, data, state.params)
    x_flat, stats = differentiable_fit(_iterate, (model, data, state), is_matrix_free(state))
    return solution_at(model, data, state, x_flat, stats, stats.active_mask)


def solution_at(model, data: Data, state: SolverState, x_flat, counts, active_mask):
    """The `Solution` at a fit's last point `x_flat`: the residuals, the loss-scaled
    Jacobian and the summary there, the cost at the start; `counts` has the fit's
    `nfev`, `njev`, `nit` and `status`."""
    x0, unravel = start_point(state)
    # Recomputed outside the implicit rule (which gives its auxiliary outputs no
    # derivatives), so that the initial cost is differentiable in the data too.
    initial_cost = state.loss.cost(residual_function(model, data, unravel)(x0))
    final: Any  # a `Linearization`, or an `OperatorLinearization` (matrix-free)
    if is_matrix_free(state):
        # No n x n factor; the Jacobian only where it was given as a matrix.
        if uses_jvps(state):
            f = residual_function(model, data, unravel)(x_flat)
            final = operator_linearization_at(model, data, state, unravel, x_flat)
        else:
            f, jac = residual_and_jac(model, data, state, unravel, x_flat, sparse=True)
            final = matrix_linearization(f, jac, state.loss)
        jac_scaled = final.jac
    elif state.chunk_size is None:
        f, jac = residual_and_jac(model, data, state, unravel, x_flat)
        cost, f_scaled, jac_scaled = scale_for_loss(f, jac, state.loss)
        final = Linearization(
            cost=cost,
            grad=jac_scaled.T @ f_scaled,
            factor=factorize(jac_scaled, state.factorization),
        )
    else:
        # Large data: the m x n Jacobian is never formed; only the residuals are kept.
        final = linearization_at(model, data, state, unravel, x_flat)
        f = residual_function(model, data, unravel)(x_flat)
        jac_scaled = None
    optimality = state.strategy.optimality(x_flat, final, problem_for(data, state))
    return finished(
        unravel(x_flat),
        final,
        f,
        jac_scaled,
        optimality,
        active_mask,
        counts,
        initial_cost,
    )


def with_jacobian(model: Callable, data: Data, state: SolverState, solution: Solution):
    """`solution` with its (loss-scaled) Jacobian filled in after a chunked fit, for
    front ends that return it as SciPy does: one more evaluation, in one shot."""
    if solution.jac is not None or is_matrix_free(state):
        return solution  # (a matrix-free fit never forms the Jacobian)
    model = with_explicit_closure(model, data, state.params)
    x_flat, unravel = ravel_pytree(solution.x)
    f, jac = residual_and_jac(model, data, state, unravel, x_flat)
    _, _, jac_scaled = scale_for_loss(f, jac, state.loss)
    return eqx.tree_at(lambda s: s.jac, solution, jac_scaled, is_leaf=lambda v: v is None)
