"""The result of a streamed fit: a `CurveFitResult` from ``n``-sized summaries and sums.

A streamed fit keeps no per-point arrays: its covariance comes from the Jacobian factor,
its statistics (`chisqr`, `r_squared`, `aic`, ...) from the sums of the last pass (the
result's `sums`, the formulas of `nlsq_fn._results.stats` written once for both).
"""

import jax.numpy as jnp
import numpy as np

from .._results.covariance import covariance_parts
from .._results.fit_result import CurveFitResult, solution_fields
from .._results.solution import finished
from .._results.stats import FitSums
from .._strategies.bounds import find_active_constraints

StreamedFitResult = CurveFitResult
"""NLSQ's and earlier releases' name for the result of a streamed fit: the same class
as `CurveFitResult`, whose `sums` hold the statistics' sums (a streamed fit keeps no
per-point arrays: `fun` is empty and `jac` is the ``n × n`` Jacobian factor)."""


def streamed_result(engine, state, problem, carry, sums, initial_cost) -> CurveFitResult:
    """The `CurveFitResult` of `engine`'s fit (a `StreamEngine`) ending at `carry` (its
    summary), with `sums` (a pass's `Sums`) as the statistics' source."""
    x, lin = carry.x, carry.linearization
    parts = covariance_parts(lin.factor, lin.cost, sums.n_points)
    pcov = np.asarray(parts.covariance(engine.fitter.absolute_sigma))
    if state.strategy.supports_bounds:
        active = find_active_constraints(x, state.lower, state.upper, state.xtol)
    else:
        active = jnp.zeros(x.shape, jnp.int32)
    # The summary stands for the per-point arrays a streamed fit does not keep: no
    # residuals, and the Jacobian's ``n × n`` factor as `jac`.
    solution = finished(
        x,
        lin,
        np.zeros(0),
        lin.factor,
        state.strategy.optimality(x, lin, problem),
        active,
        carry,
        initial_cost,
    )
    return CurveFitResult(
        sums=FitSums.of_moments(sums.n_points, sums.chisqr, sums.ss_res, sums.sum_y, sums.sum_y2),
        model=engine.model,
        names=engine.names,
        xdata=None,
        ydata=None,
        sigma=None,
        absolute_sigma=engine.fitter.absolute_sigma,
        pcov=pcov,
        lower=np.asarray(state.lower),
        upper=np.asarray(state.upper),
        rank=int(parts.rank),
        singular_values=np.asarray(parts.singular_values),
        method=engine.fitter.method,
        loss=type(engine.fitter.loss).__name__,
        p0=np.asarray(state.params),
        **solution_fields(solution),
    )
