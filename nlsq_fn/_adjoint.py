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
- a parameter held at a bound ``b_i`` (``Solution.active_mask != 0``): ``F_i = x_i - b_i``,
  so it moves with its bound and not at all with anything else.

Written out with ``A`` the active set and ``F`` the free set:
``dx_A = db_A`` and ``H_FF dx_F = -(∂g_F/∂θ + H_FA dx_A)``, ``g = ∇C``, ``H = ∇²C``.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PyTree
from optimistix.internal import implicit_jvp

from ._data import Data


def optimality_condition(
    x: Float[Array, " n"], stats: PyTree, inputs: tuple
) -> Float[Array, " n"]:
    """``F(x, θ)``: zero at the solution (see the module's docstring)."""
    model, data, state = inputs
    _, unravel = ravel_pytree(state.params)

    def cost(x):
        return state.loss.cost(data.weighted_residual(model(data.x, unravel(x))))

    grad = jax.grad(cost)(x)
    bound = jnp.where(stats.active_mask < 0, state.lower, state.upper)
    return jnp.where(stats.active_mask != 0, x - bound, grad)


def differentiable_fit(
    iterate: Callable[[tuple], tuple[Float[Array, " n"], PyTree]], inputs: tuple
) -> tuple[Float[Array, " n"], PyTree]:
    """Run ``iterate(inputs) -> (x_flat, stats)`` with its derivatives replaced by the
    implicit ones. `stats` must hold an integer ``active_mask``; it gets no derivatives.

    Forward mode solves ``(∂F/∂x) t = -(∂F/∂θ) θ̇`` with Lineax; reverse mode is its
    transpose. Either way the loop is run once, forward, and never differentiated.
    """
    return implicit_jvp(
        iterate,
        optimality_condition,
        inputs,
        tags=frozenset(),
        linear_solver=lx.AutoLinearSolver(well_posed=True),
    )


def with_explicit_closure(model: Callable, data: Data, params: PyTree) -> Callable:
    """The model with any arrays it closes over made explicit, so that derivatives with
    respect to them (``jax.grad`` of a fit inside ``lambda h: ...``) reach the implicit
    rule instead of leaking as tracers. Global functions are returned as they are."""
    return eqx.filter_closure_convert(model, data.x, params)
