"""A `CurveFit`'s fit inside `jax.jit`, `jax.vmap` or `jax.grad` (traced inputs): `init`
and `solve` on JAX arrays, no padding, no NumPy, no warnings; a `FitSolution`."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._drivers.solve import solve
from .._drivers.solver import init
from .._problem.data import Data, sigma_shape_error
from .._problem.whitening import WhitenedJacobian, WhitenedModel
from .._results.covariance import covariance_parts
from .._results.fit_solution import FitSolution, fit_solution
from .curve_fit_inputs import convention, core_solver, flat_bounds, initial_params


def fit_traced(fitter, x, y, p0, sigma, bounds) -> FitSolution:
    """The pure path: `init` and `solve` on JAX arrays, no padding, no NumPy, no
    warnings (it runs inside a transformation)."""
    if fitter.nan_policy == "omit":
        raise ValueError(
            "nan_policy='omit' needs concrete data (it changes the number of points); "
            "it cannot be used inside jax.jit / jax.vmap / jax.grad."
        )
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.inexact):
        y = y.astype(jnp.result_type(float))
    if isinstance(x, (list, np.ndarray)) or (
        isinstance(x, jax.Array) and not jnp.issubdtype(x.dtype, jnp.inexact)
    ):
        x = jnp.asarray(x, jnp.result_type(float))
    cholesky = None
    if sigma is not None:
        sigma = jnp.asarray(sigma, y.dtype)
        if sigma.ndim == 2 and y.ndim == 1 and sigma.shape == (y.size, y.size):
            cholesky, sigma = jnp.linalg.cholesky(sigma), None
        elif sigma.size != 1 and sigma.shape != y.shape:
            raise sigma_shape_error(sigma.shape, y.shape)
    style, model, names = convention(fitter.f, p0, fitter.param_style)
    p0 = initial_params(fitter.f, p0, x, y, style, names)
    names = names or tuple(f"p{i}" for i in range(p0.size))
    solver = core_solver(fitter, flat_bounds(bounds, names), style)
    if cholesky is not None:
        model = WhitenedModel(model, cholesky)
        if callable(solver.jac):
            solver = eqx.tree_at(lambda s: s.jac, solver, WhitenedJacobian(solver.jac, cholesky))
        y = jax.scipy.linalg.solve_triangular(cholesky, y, lower=True)
    data = Data(x, y, sigma=sigma)
    state = init(model, data, p0, solver)
    solution = solve(model, data, state)
    parts = covariance_parts(solution.jac, solution.cost, data.n_points)
    return fit_solution(solution, parts, fitter.absolute_sigma, y.size, state.params)
