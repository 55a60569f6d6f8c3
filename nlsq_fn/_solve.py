"""``solve``: the whole fit as one pure, compiled, differentiable function."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int, PyTree

from . import _progress
from ._adjoint import differentiable_fit, with_explicit_closure
from ._bounds import find_active_constraints
from ._data import Data
from ._linearize import (
    Linearization,
    chunked_linearize,
    factorize,
    linearize,
    residual_and_jacobian,
    scale_for_loss,
)
from ._result import Solution
from ._solver import SolverState
from ._strategy import Problem
from ._trust_region import IMPROPER_INPUT, MAX_NFEV, RUNNING


class _Carry(eqx.Module):
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


def residual_function(
    model: Callable, data: Data, unravel: Callable
) -> Callable[[Float[Array, " n"]], Float[Array, " m"]]:
    """Flat parameters -> weighted, masked, flattened residuals."""
    return lambda x: data.weighted_residual(model(data.x, unravel(x)))


def residual_and_jac(model, data, state, unravel, x):
    """Weighted residuals and their Jacobian at flat parameters `x`."""
    if callable(state.jac):
        params = unravel(x)
        f = data.weighted_residual(model(data.x, params))
        jac = jnp.reshape(jnp.asarray(state.jac(data.x, params), f.dtype), (f.size, -1))
        if data.sigma is not None:
            jac = jac / jnp.broadcast_to(data.sigma, data.y.shape).ravel()[:, None]
        if data.mask is not None:
            jac = jnp.where(data.mask.ravel()[:, None], jac, 0.0)
        return f, jac
    return residual_and_jacobian(residual_function(model, data, unravel), x, state.jac)


def linearization_at(model, data, state, unravel, x) -> Linearization:
    """The ``n``-sized summary at flat parameters `x`: in one shot, or chunk by chunk
    (never holding the whole Jacobian) when `state.chunk_size` is set."""
    if state.chunk_size is None:
        f, jac = residual_and_jac(model, data, state, unravel, x)
        return linearize(f, jac, state.loss, state.factorization)
    return chunked_linearize(
        lambda chunk: residual_and_jac(model, chunk, state, unravel, x),
        data, x.size, state.chunk_size, state.loss, state.factorization,
    )


def _problem(data, state):
    return Problem(
        lower=state.lower,
        upper=state.upper,
        x_scale=state.x_scale,
        ftol=state.ftol,
        xtol=state.xtol,
        gtol=state.gtol,
        n_rows=data.n_points,
        bounded=state.bounded,
    )


def _iterate(inputs):
    """The fit itself: a single `lax.while_loop` over trial steps."""
    model, data, state = inputs
    x0, unravel = ravel_pytree(state.params)
    problem = _problem(data, state)
    strategy = state.strategy

    def evaluate(x):
        return linearization_at(model, data, state, unravel, x)

    lin0 = evaluate(x0)
    strategy_state, status = strategy.init(x0, lin0, problem)
    status = jnp.where(lin0.finite, status, IMPROPER_INPUT)
    one = jnp.asarray(1, jnp.int32)
    status = jnp.where((status == RUNNING) & (state.max_nfev <= 1), MAX_NFEV, status)
    carry = _Carry(x0, lin0, strategy_state, one, one, 0 * one, status.astype(jnp.int32))
    # Progress hook: static switches, so a plain fit traces no callbacks at all.
    watched = state.verbose == 2 or state.callback is not None
    if state.verbose == 2:
        _progress.report_start(lin0.cost, strategy.optimality(x0, lin0, problem))

    def body(carry):
        out = strategy.step(
            carry.x, carry.linearization, carry.strategy_state, evaluate, problem
        )
        nfev = carry.nfev + 1
        status = jnp.where(
            (out.status == RUNNING) & (nfev >= state.max_nfev), MAX_NFEV, out.status
        ).astype(jnp.int32)
        nit = carry.nit + (out.accepted | (status != RUNNING)).astype(jnp.int32)
        new_jacobian = out.accepted
        if not strategy.jacobian_after_last_step:
            new_jacobian = new_jacobian & (out.status == RUNNING)
        njev = carry.njev + new_jacobian.astype(jnp.int32)
        new = _Carry(out.x, out.linearization, out.strategy_state, nfev, njev, nit, status)
        if watched:
            status = _progress.after_iteration(
                carry, new, state, unravel,
                lambda x, lin: strategy.optimality(x, lin, problem),
            )
            new = eqx.tree_at(lambda c: c.status, new, status)
        return new

    final = jax.lax.while_loop(lambda c: c.status == RUNNING, body, carry)
    if strategy.supports_bounds:
        active = find_active_constraints(final.x, state.lower, state.upper, state.xtol)
    else:
        active = jnp.zeros(x0.shape, jnp.int32)
    stats = _Stats(final.nfev, final.njev, final.nit, final.status, active.astype(jnp.int32))
    return final.x, stats


def solve(model: Callable, data: Data, state: SolverState) -> Solution:
    """Fit ``model(x, params)`` to `data`, starting from `state` (made by `init`).

    Pure: works under `jax.jit`, `jax.vmap` (over `data` and `state`, each member of a
    batch stopping on its own criteria) and autodiff. Derivatives of the solution with
    respect to the data, the bounds, the loss scale or arrays inside `model` (when it is
    an `equinox.Module`) come from the implicit function theorem applied to the
    first-order optimality condition, never from unrolling the iterations (see
    `nlsq_fn._adjoint`). Arrays the model closes over are differentiable too.
    """
    model = with_explicit_closure(model, data, state.params)
    x_flat, stats = differentiable_fit(_iterate, (model, data, state))
    x0, unravel = ravel_pytree(state.params)
    # Recomputed outside the implicit rule (which gives its auxiliary outputs no
    # derivatives), so that the initial cost is differentiable in the data too.
    initial_cost = state.loss.cost(residual_function(model, data, unravel)(x0))
    if state.chunk_size is None:
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
    optimality = state.strategy.optimality(x_flat, final, _problem(data, state))
    return Solution(
        x=unravel(x_flat),
        cost=final.cost,
        fun=f,
        jac=jac_scaled,
        grad=final.grad,
        optimality=optimality,
        active_mask=stats.active_mask,
        nfev=stats.nfev,
        njev=stats.njev,
        nit=stats.nit,
        status=stats.status,
        success=stats.status > 0,
        initial_cost=initial_cost,
        factor=final.factor,
    )


def with_jacobian(model: Callable, data: Data, state: SolverState, solution: Solution):
    """`solution` with its (loss-scaled) Jacobian filled in after a chunked fit, for
    front ends that return it as SciPy does: one more evaluation, in one shot."""
    if solution.jac is not None:
        return solution
    model = with_explicit_closure(model, data, state.params)
    x_flat, unravel = ravel_pytree(solution.x)
    f, jac = residual_and_jac(model, data, state, unravel, x_flat)
    _, _, jac_scaled = scale_for_loss(f, jac, state.loss)
    return eqx.tree_at(lambda s: s.jac, solution, jac_scaled, is_leaf=lambda v: v is None)
