"""The pure orthogonal distance regression: `odr_solve`, for `jax.jit`, `jax.vmap` (a
batch of ODR fits) and autodiff (implicit derivatives of ``β`` with respect to `x`, `y`,
the weights and anything the model holds).

ODR is a global fit: each point ``i`` is a dataset of two residuals
``[(f(xᵢ + δᵢ; β) - yᵢ) / σy,ᵢ, δᵢ / σx,ᵢ]`` with one local parameter, its correction
``δᵢ``, and the model's ``β`` shared (`PointModel`). So the fit is `global_solve`'s
on ``θ = [β, δ₁, ..., δₘ]``: the block engine eliminates the ``δᵢ`` point by point, and
its implicit rule gives the derivatives. `nlsq_fn.odr` is the host front end over it.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._misc import is_concrete
from .._problem.data import Data
from .block_linearize import GlobalModel, GlobalSolution, global_solve
from .solver import Solver, SolverState, build_state

__all__ = [
    "ODRSolution",
    "PointModel",
    "as_odr_solution",
    "odr_problem",
    "odr_solution",
    "odr_solve",
]


class PointModel(eqx.Module):
    """One point as a dataset: ``[f(x + δ; β), δ]`` for the parameters ``[β..., δ]``."""

    model: Callable = eqx.field(static=True)  # model(x, β vector)

    def __call__(self, x_pair, params):
        beta, delta = params[:-1], params[-1]
        prediction = self.model(jnp.reshape(x_pair[0] + delta, (1,)), beta)
        return jnp.stack([jnp.reshape(prediction, ()), delta])


class ODRSolution(eqx.Module):
    """What `odr_solve` returns (a leading batch axis on every field under `jax.vmap`),
    with `scipy.odr.Output`'s names: `beta`, `delta` (the x corrections), `eps` (the y
    residuals ``f(x + δ) - y``), `cov_beta` (the unscaled covariance, as SciPy's:
    ``sd_beta² = diag(cov_beta) · res_var``), `res_var` (the weighted sum of squares over
    ``m - p``), `sum_square`; `sd_beta` and `pcov(absolute_sigma)` from them; `solution`,
    the underlying fit's `GlobalSolution` (``θ = [β, δ]``: `status`, `nfev`, ...)."""

    beta: Float[Array, " p"]
    delta: Float[Array, " m"]
    eps: Float[Array, " m"]
    cov_beta: Float[Array, "p p"]
    res_var: Float[Array, ""]
    sum_square: Float[Array, ""]
    solution: GlobalSolution

    @property
    def sd_beta(self):
        variances = jnp.diagonal(self.cov_beta, axis1=-2, axis2=-1)
        return jnp.sqrt(variances * jnp.expand_dims(self.res_var, -1))

    def pcov(self, absolute_sigma: bool = False):
        """SciPy's `pcov`: `cov_beta` with `absolute_sigma`, else times `res_var`."""
        if absolute_sigma:
            return self.cov_beta
        return self.cov_beta * jnp.expand_dims(self.res_var, (-2, -1))

    @property
    def success(self):
        return self.solution.status > 0


def _sigma(xp, sigma, m: int, dtype):
    if sigma is None:
        return xp.ones((m,), dtype)
    return xp.broadcast_to(xp.ravel(xp.asarray(sigma, dtype)), (m,))


def _with_corrections(xp, solver: Solver, p: int, m: int, dtype) -> Solver:
    """`solver` for ``θ = [β, δ]``: its bounds and an array `x_scale` (given for ``β``)
    extended over the ``δ`` (unbounded, scale 1)."""
    changes: dict[str, Any] = {}
    if solver.bounds is not None:
        lower, upper = (
            xp.broadcast_to(xp.ravel(xp.asarray(side, dtype)), (p,)) for side in solver.bounds
        )
        changes["bounds"] = (
            xp.concatenate([lower, xp.full((m,), -np.inf, dtype)]),
            xp.concatenate([upper, xp.full((m,), np.inf, dtype)]),
        )
    scale = solver.x_scale
    if scale is not None and not isinstance(scale, str) and np.ndim(scale) > 0:
        changes["x_scale"] = xp.concatenate(
            [xp.ravel(xp.asarray(scale, dtype)), xp.ones((m,), dtype)]
        )
    return dataclasses.replace(solver, **changes) if changes else solver


def odr_problem(
    model: Callable,
    x: Float[ArrayLike, " m"],
    y: Float[ArrayLike, " m"],
    beta0: Float[ArrayLike, " p"],
    solver: Solver = Solver(),
    *,
    sigma_x: Float[ArrayLike, "..."] | None = None,
    sigma_y: Float[ArrayLike, "..."] | None = None,
    check_start: bool = True,
) -> tuple[GlobalModel, Data, SolverState]:
    """The global problem of an ODR fit: ``(GlobalModel, Data, SolverState)`` for
    `global_solve` / `odr_solution` (see `odr_solve` for the arguments). With concrete
    inputs `init` checks them (bounds, the data and, with `check_start`, the model's
    values at the start), as `solve`'s does."""
    # Host values are arranged with NumPy (a `jnp` call on them compiles a small
    # program per shape); traced ones with `jnp`.
    xp: Any = (
        np if is_concrete(x, y, beta0, sigma_x, sigma_y, solver.bounds, solver.x_scale) else jnp
    )
    xs, ys, start = (xp.ravel(xp.asarray(a)) for a in (x, y, beta0))
    dtype = xp.result_type(xs, ys, start, float)
    m, p = xs.size, start.size
    if ys.size != m or m == 0:
        raise ValueError(
            f"odr needs `x` and `y` with the same number of points; got {m} and {ys.size}."
        )
    data = Data(
        xp.stack([xs, xs], axis=1).astype(dtype),
        xp.stack([ys, xp.zeros((m,), dtype)], axis=1).astype(dtype),
        sigma=xp.stack([_sigma(xp, sigma_y, m, dtype), _sigma(xp, sigma_x, m, dtype)], axis=1),
    )
    global_model = GlobalModel(PointModel(model), p + 1, tuple(range(p)), (p,), m)
    theta0 = xp.concatenate([start.astype(dtype), xp.zeros((m,), dtype)])
    solver = _with_corrections(xp, solver, p, m, dtype)
    return global_model, data, build_state(global_model, data, theta0, solver, check_start)


def odr_solution(model: GlobalModel, data: Data, state: SolverState) -> ODRSolution:
    """`global_solve` of the problem `odr_problem` built, read as an ODR fit."""
    return as_odr_solution(model.n_shared, data, global_solve(model, data, state))


def as_odr_solution(p: int, data: Data, found: GlobalSolution) -> ODRSolution:
    """The fit `found` of the problem `odr_problem` built (``p`` parameters ``β``), read
    as an ODR fit."""
    m = data.y.shape[0]
    sum_square = jnp.sum(found.fun**2)
    assert data.sigma is not None  # (`odr_problem` gives both columns)
    # (No degrees of freedom: an infinite residual variance, as `covariance_parts`.)
    res_var = sum_square / (m - p) if m > p else jnp.full((), jnp.inf, sum_square.dtype)
    return ODRSolution(
        beta=found.x[:p],
        delta=found.x[p:],
        eps=found.fun[:, 0] * data.sigma[:, 0],
        cov_beta=found.covariance.shared,
        res_var=res_var,
        sum_square=sum_square,
        solution=found,
    )


def odr_solve(
    model: Callable,
    x: Float[ArrayLike, " m"],
    y: Float[ArrayLike, " m"],
    beta0: Float[ArrayLike, " p"],
    solver: Solver = Solver(),
    *,
    sigma_x: Float[ArrayLike, "..."] | None = None,
    sigma_y: Float[ArrayLike, "..."] | None = None,
) -> ODRSolution:
    """Orthogonal distance regression as a pure function: minimizes
    ``Σ ((model(xᵢ + δᵢ, β) - yᵢ) / σy,ᵢ)² + (δᵢ / σx,ᵢ)²`` over ``β`` and the
    corrections ``δ`` (started at 0), as `scipy.odr` for explicit models.

    - `model`: ``model(x, beta)`` with `beta` a flat vector, pointwise (it is called on
      one point at a time, `x` of shape ``(1,)``); `nlsq_fn.odr` takes the front ends'
      model conventions.
    - `x`, `y`: the ``m`` points (1-D); `beta0`: ``β``'s start (``p`` values).
    - `solver`: a `Solver` whose `bounds` (and an array `x_scale`) are ``β``'s: the
      corrections are unbounded; its `loss` applies to all ``2m`` residuals.
    - `sigma_x`, `sigma_y`: standard deviations, a scalar or one per point (default 1).

    Works under `jax.jit`, `jax.vmap` (a batch of ODR fits) and autodiff: the
    derivatives of `beta` (and `delta`) with respect to `x`, `y`, `sigma_x`, `sigma_y`
    are implicit (`global_solve`'s rule; its linear solve is dense in ``m + p``: for up to
    a few thousand points). Returns an `ODRSolution`."""
    return odr_solution(*odr_problem(model, x, y, beta0, solver, sigma_x=sigma_x, sigma_y=sigma_y))
