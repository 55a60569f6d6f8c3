"""Derivatives of the fitted parameters, by the implicit function theorem.

The solution ``x*(θ)`` of a fit depends on every differentiable input ``θ``: the data
(``y``, ``x``, ``sigma``), the bounds, the loss scale and any array the model holds.
Instead of differentiating through the iterations (memory and time growing with their
number), we differentiate the condition the solution satisfies, ``F(x*(θ), θ) = 0``:

    dx*/dθ = -(∂F/∂x)⁻¹ ∂F/∂θ.

``F`` is the first-order optimality condition of the problem actually solved, robust loss
and bounds included:

- a free parameter ``i``: ``F_i = ∂C/∂x_i`` with ``C(x) = ½ Σ ρ(f_j(x)²)`` the robust
  cost of the weighted, masked residuals ``f`` (so ``∂F/∂x`` is the exact Hessian of the
  robust cost, second-order residual terms and ``ρ''`` included);
- a parameter held at a bound ``b_i`` (``Solution.active_mask != 0``, or within
  ``sqrt(eps)`` of the bound with the gradient pushing against it; see `held_by_bound`):
  ``F_i = x_i - b_i``, so it moves with its bound and not at all with anything else.

Written out with ``A`` the held parameters and ``I`` the free ones (``g = ∇C``,
``H = ∇²C``, ``b`` the bounds): ``dx_A = db_A`` and ``H_II dx_I = -(∂g_I/∂θ + H_IA dx_A)``.

Assumed, as by any implicit rule: the fit converged (``Solution.success``), the minimum
is strict on the free parameters (``H_II`` nonsingular; an unidentifiable parameter gives
non-finite derivatives) and a held parameter is pressed against its bound (nonzero
gradient there). A user-supplied ``jac`` is not used here: the rule differentiates the
model with JAX.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PyTree
from optimistix.internal import implicit_jvp

from .._evaluation.precision import full_precision_products
from .._problem.data import Data


def optimality_condition(x: Float[Array, " n"], stats: PyTree, inputs: tuple) -> Float[Array, " n"]:
    """``F(x, θ)``: zero at the solution (see the module's docstring)."""
    # Traced by the implicit rule when the fit is differentiated, which may be after
    # `solve` was traced (the user's `jit` inside `grad`): it keeps full float32 itself.
    with full_precision_products():
        return _optimality_condition(x, stats, inputs)


def _optimality_condition(x, stats, inputs):
    model, data, state = inputs
    _, unravel = ravel_pytree(state.params)

    def cost(x):
        return state.loss.cost(data.weighted_residual(model(data.model_x, unravel(x))))

    grad = jax.grad(cost)(x)
    side = held_by_bound(x, grad, state.lower, state.upper, stats.active_mask)
    bound = jnp.where(side < 0, state.lower, state.upper)
    return jnp.where(side != 0, x - bound, grad)


def held_by_bound(x, grad, lower, upper, active_mask):
    """-1 / 1 for parameters held at their lower / upper bound, 0 for free ones.

    The solution's `active_mask` (SciPy's rule: within ``xtol`` of the bound), plus any
    parameter within ``sqrt(eps)`` of a bound that the gradient pushes against: TRF
    stops strictly inside the box, so with a tiny ``xtol`` the mask alone can miss a
    parameter that is in fact held (and treating it as free would give wrong derivatives).
    """
    x, grad = jax.lax.stop_gradient((x, grad))  # a discrete decision, not differentiated
    tol = jnp.sqrt(jnp.finfo(x.dtype).eps)
    at_lower = jnp.isfinite(lower) & (x - lower <= tol * jnp.maximum(1, jnp.abs(lower)))
    at_upper = jnp.isfinite(upper) & (upper - x <= tol * jnp.maximum(1, jnp.abs(upper)))
    side = jnp.where(at_lower & (grad > 0), -1, jnp.where(at_upper & (grad < 0), 1, 0))
    return jnp.where(active_mask != 0, active_mask, side)


def differentiable_fit(
    iterate: Callable[[tuple], tuple[Float[Array, " n"], PyTree]],
    inputs: tuple,
    matrix_free: bool = False,
) -> tuple[Float[Array, " n"], PyTree]:
    """Run ``iterate(inputs) -> (x_flat, stats)`` with its derivatives replaced by the
    implicit ones. `stats` must hold an integer ``active_mask``; it gets no derivatives.

    Forward mode solves ``(∂F/∂x) t = -(∂F/∂θ) θ̇`` with Lineax; reverse mode is its
    transpose. Either way the loop is run once, forward, and never differentiated. The
    system is solved densely (LU of the ``n × n`` matrix), or, `matrix_free` (a fit with
    many parameters), by GMRES with Hessian-vector products: ``∂F/∂x`` is never formed
    (it is not symmetric where parameters are held at bounds, so not CG).
    """
    if matrix_free:
        solver: lx.AbstractLinearSolver = lx.GMRES(rtol=1e-10, atol=1e-12, restart=50)
    else:
        solver = lx.AutoLinearSolver(well_posed=True)
    return implicit_jvp(
        iterate,
        optimality_condition,
        inputs,
        tags=frozenset(),
        linear_solver=solver,
    )


def with_explicit_closure(model: Callable, data: Data, params: PyTree) -> Callable:
    """The model with any arrays it closes over made explicit, so that derivatives with
    respect to them (``jax.grad`` of a fit inside ``lambda h: ...``) reach the implicit
    rule instead of leaking as tracers. Global functions are returned as they are."""
    converted = eqx.filter_closure_convert(model, data.x, params)
    # The converted function only accepts arguments shaped like the examples, which the
    # chunked evaluation (a slice of `x` at a time) does not give; so convert only when
    # there is something to convert: a traced array the model closes over.
    consts = jax.tree.leaves(getattr(converted, "consts", ()))
    if not any(isinstance(c, jax.core.Tracer) for c in consts):
        return model
    return converted
