"""NLSQ's names for what a `CurveFitResult` already knows: ``residuals``,
``predictions``, ``mae``, ``adj_r_squared``, ``confidence_intervals(alpha)`` and
``prediction_interval(x, alpha)`` (NLSQ's `alpha` is the confidence level, 0.95 for 95%).
Each is computed from the result's own values and methods, never a second copy."""

import functools
from typing import TYPE_CHECKING

import numpy as np


class NLSQResultNames:
    """Mixed into `CurveFitResult` (which provides `residual`, `best_fit`, `r_squared`,
    `conf_intervals`, `prediction_band`, `names`, `n_points`, `n_params`)."""

    if TYPE_CHECKING:  # what `CurveFitResult` provides, declared for the type checker
        names: tuple[str, ...]

        @property
        def residual(self) -> np.ndarray: ...
        @property
        def best_fit(self) -> np.ndarray: ...
        @property
        def r_squared(self) -> float: ...
        @property
        def n_points(self) -> int: ...
        @property
        def n_params(self) -> int: ...
        def conf_intervals(self, level: float = 0.95) -> dict: ...
        def prediction_band(self, x=None, level: float = 0.95, sigma=None) -> tuple: ...

    # Cached, as NLSQ's: the same array on each access.
    @functools.cached_property
    def residuals(self) -> np.ndarray:
        """``ydata - predictions`` (unweighted), NLSQ's name for `residual`."""
        return self.residual

    @functools.cached_property
    def predictions(self) -> np.ndarray:
        """The model at the data, NLSQ's name for `best_fit`."""
        return self.best_fit

    @property
    def mae(self) -> float:
        """Mean absolute (unweighted) residual."""
        return float(np.mean(np.abs(self.residual)))

    @property
    def adj_r_squared(self) -> float:
        """``1 - (1 - R²)(n - 1)/(n - k - 1)``; NaN when ``n - k - 1 <= 0``."""
        n, k = self.n_points, self.n_params
        if n - k - 1 <= 0:
            return float("nan")
        return float(1 - (1 - self.r_squared) * (n - 1) / (n - k - 1))

    def confidence_intervals(self, alpha: float = 0.95) -> np.ndarray:
        """``(n_params, 2)`` array of ``[lower, upper]``: `conf_intervals` at
        confidence level `alpha`, in parameter order."""
        intervals = self.conf_intervals(level=alpha)
        return np.array([intervals[name] for name in self.names], dtype=float)

    def prediction_interval(self, x=None, alpha: float = 0.95) -> np.ndarray:
        """``(n_points, 2)`` array of ``[lower, upper]`` for a new observation at `x`
        (default: the data's x): `prediction_band` at confidence level `alpha`."""
        lower, upper = self.prediction_band(x, level=alpha)
        return np.column_stack([lower, upper])
