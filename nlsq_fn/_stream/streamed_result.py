"""The result of a streamed fit: `CurveFitResult` from ``n``-sized summaries and sums.

A streamed fit keeps no per-point arrays: its covariance comes from the Jacobian factor,
its statistics (`chisqr`, `r_squared`, `aic`, ...) from sums over the last pass.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._results.covariance import covariance_parts
from .._results.fit_result import CurveFitResult
from .._strategies.bounds import find_active_constraints


def streamed_result(engine, state, problem, carry, sums, initial_cost) -> CurveFitResult:
    """The `StreamedFitResult` of `engine`'s fit (a `StreamEngine`) ending at `carry`
    (its summary)."""
    x, lin = carry.x, carry.linearization
    parts = covariance_parts(lin.factor, lin.cost, sums.n_points)
    pcov = np.asarray(parts.covariance(engine.fitter.absolute_sigma))
    if state.strategy.supports_bounds:
        active = find_active_constraints(x, state.lower, state.upper, state.xtol)
    else:
        active = jnp.zeros(x.shape, jnp.int32)
    return StreamedFitResult(
        sums=jax.tree.map(float, sums),
        model=engine.model,
        names=engine.names,
        xdata=None,
        ydata=None,
        sigma=None,
        absolute_sigma=engine.fitter.absolute_sigma,
        pcov=pcov,
        x=np.asarray(x),
        cost=lin.cost,
        fun=np.zeros(0),
        jac=np.asarray(lin.factor),
        grad=np.asarray(lin.grad),
        optimality=state.strategy.optimality(x, lin, problem),
        active_mask=np.asarray(active),
        nfev=carry.nfev,
        njev=carry.njev,
        nit=carry.nit,
        status=carry.status,
        success=carry.status > 0,
        initial_cost=initial_cost,
        lower=np.asarray(state.lower),
        upper=np.asarray(state.upper),
        rank=int(parts.rank),
        singular_values=np.asarray(parts.singular_values),
        method=engine.fitter.method,
        loss=type(engine.fitter.loss).__name__,
        p0=np.asarray(state.params),
    )


class StreamedFitResult(CurveFitResult):
    """A `CurveFitResult` without per-point arrays: `fun` is empty and `jac` is the
    ``n × n`` Jacobian factor (``jacᵀ jac = JᵀJ``); the statistics (`chisqr`,
    `redchi`, `rmse`, `r_squared`, `aic`, `bic`) come from sums over the data."""

    def __init__(self, *, sums: Any, **fields):  # a `Sums` of Python floats
        self.sums = sums
        super().__init__(**fields)

    @property
    def n_points(self) -> int:
        return int(self.sums.n_points)

    @property
    def _goodness(self) -> dict:
        s = self.sums
        n = s.n_points
        # The formulas of `nlsq_fn._results.stats.goodness_of_fit`, from sums:
        # Σ (y - ȳ)² = Σ y² - (Σ y)² / n.
        dof = n - self.n_params
        ss_tot = s.sum_y2 - s.sum_y**2 / n
        tiny = np.finfo(float).tiny
        log_term = n * np.log(max(s.chisqr, tiny) / n)
        return dict(
            chisqr=s.chisqr,
            redchi=s.chisqr / dof if dof > 0 else float("inf"),
            rmse=float(np.sqrt(s.ss_res / n)),
            r_squared=1 - s.ss_res / ss_tot if ss_tot > 0 else float("nan"),
            aic=float(log_term + 2 * self.n_params),
            bic=float(log_term + np.log(n) * self.n_params),
        )

    @property
    def best_fit(self):
        raise AttributeError("A streamed fit keeps no per-point values; use eval(x).")

    residual = best_fit

    def eval(self, x=None, params=None):
        if x is None:
            raise ValueError("A streamed fit keeps no data: give `x`.")
        return super().eval(x, params)
