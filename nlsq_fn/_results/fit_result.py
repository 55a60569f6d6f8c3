"""The result of `CurveFit.fit`: SciPy's fields, the covariance, statistics, intervals,
bands, a report, diagnostics and a plot."""

import dataclasses
import functools
from typing import TYPE_CHECKING

import numpy as np

from .._problem.data import Data
from .._strategies.trust_region import STATUS_MESSAGES
from . import report as _report, stats as _stats
from .nlsq_result_names import NLSQResultNames
from .solution import Solution

# The `Solution` fields a `CurveFitResult` carries (SciPy's `OptimizeResult` fields,
# as NumPy values; all but the factor of JᵀJ): `solution_fields` reads them.
SOLUTION_FIELDS = tuple(f.name for f in dataclasses.fields(Solution) if f.name != "factor")


def solution_fields(solution) -> dict:
    """A `Solution`'s `SOLUTION_FIELDS` as NumPy values, the keyword arguments of a
    `CurveFitResult`."""
    return {name: np.asarray(getattr(solution, name)) for name in SOLUTION_FIELDS}


class CurveFitResult(NLSQResultNames):
    """Everything about one curve fit (plain NumPy values).

    SciPy's `OptimizeResult` fields: `x` (= `popt`), `cost`, `fun` (weighted
    residuals ``(model - y) / sigma``), `jac`, `grad`, `optimality`, `active_mask`,
    `nfev`, `njev`, `nit`, `status`, `message`, `success`; and `initial_cost`, `pcov`
    (= `cov`, as SciPy's `curve_fit` computes it), `perr` (= `stderr`), `params` (a dict
    by name), `correlation`, the statistics `chisqr`, `redchi`, `rmse`, `r_squared`,
    `aic`, `bic` (formulas in `nlsq_fn._results.stats`), `conf_intervals()`, `eval()`,
    `confidence_band()`, `prediction_band()`, `diagnostics`, `summary()`, `plot()`.
    With ``fixed=`` / ``ties=`` it reports every parameter; `fixed` and `tied` name
    those the fit did not vary.
    ``popt, pcov = result`` unpacks like SciPy's return value (and, as `curve_fit`
    returns it with ``full_output=True``, like its 5-tuple); NLSQ's names
    (`residuals`, `predictions`, `mae`, `adj_r_squared`, `confidence_intervals`,
    `prediction_interval`) come from `NLSQResultNames`.

    A streamed fit (`StreamingOptimizer`) keeps no per-point arrays: its result has no
    `xdata`, `ydata`, `best_fit` or `residual`, `fun` is empty, `jac` is the ``n × n``
    Jacobian factor (``jacᵀ jac = JᵀJ``), and the statistics come from `sums` (a
    `FitSums` summed pass by pass) instead of the per-point arrays.
    """

    # What the result unpacks as: SciPy's ``(popt, pcov)`` unless `curve_fit` set its
    # 5-tuple (``full_output=True``).
    returned: tuple | None = None
    # Parameters held at a value (`fixed=`) or given by a tie (`ties=`): reported with
    # the others, but not varied by the fit (`n_params` counts the free ones).
    fixed: tuple = ()
    tied: tuple = ()
    # Where the statistics come from: None, the per-point arrays (`ydata`, `best_fit`,
    # `fun`); else the sums of a fit that kept no per-point arrays (a streamed fit).
    sums: _stats.FitSums | None = None

    if TYPE_CHECKING:  # SciPy's fields, set from `fields` in `__init__`
        x: np.ndarray
        cost: float
        fun: np.ndarray
        jac: np.ndarray
        grad: np.ndarray
        optimality: float
        active_mask: np.ndarray
        nfev: int
        njev: int
        nit: int
        status: int
        success: bool
        initial_cost: float

    def __init__(
        self,
        record=None,
        /,
        *,
        model=None,
        names=(),
        xdata=None,
        ydata=None,
        sigma=None,
        absolute_sigma=False,
        pcov=None,
        sums=None,  # a `FitSums` (see the class attribute)
        **fields,
    ):
        if record is not None:
            # NLSQ's ``CurveFitResult(OptimizeResult(...))``: a record filled in by hand
            # (``result["popt"] = ...``); what it lacks raises when asked for.
            for key, value in dict(record).items():
                self[key] = value
            return
        self.model = model
        self.names = tuple(names)
        self.xdata, self.ydata, self.sigma = xdata, ydata, sigma
        self.absolute_sigma = absolute_sigma
        self.pcov = pcov
        self.sums = sums
        for name, value in fields.items():
            setattr(self, name, value)
        self.success = bool(self.success)
        self.status = int(self.status)
        for name in ("nfev", "njev", "nit"):
            setattr(self, name, int(getattr(self, name)))
        for name in ("cost", "optimality", "initial_cost"):
            setattr(self, name, float(getattr(self, name)))

    # SciPy's names and NLSQ's.
    @property
    def popt(self) -> np.ndarray:
        return self.x

    @property
    def cov(self) -> np.ndarray:
        return self.pcov

    @property
    def message(self) -> str:
        return STATUS_MESSAGES[self.status]

    def _as_tuple(self) -> tuple:
        return (self.popt, self.pcov) if self.returned is None else self.returned

    def __iter__(self):
        return iter(self._as_tuple())

    def __len__(self) -> int:
        return len(self._as_tuple())

    def __setitem__(self, key: str, value) -> None:
        """NLSQ's ``result["name"] = value`` (``"popt"`` is `x`)."""
        setattr(self, "x" if key == "popt" else key, value)

    def __getitem__(self, key):
        """``result[0]`` as SciPy's tuple; ``result["popt"]`` as NLSQ's dict."""
        if isinstance(key, str):
            try:
                return getattr(self, key)
            except AttributeError:
                raise KeyError(key) from None
        return self._as_tuple()[key]

    @property
    def params(self) -> dict:
        return dict(zip(self.names, self.popt.tolist(), strict=True))

    @property
    def perr(self) -> np.ndarray:
        """Standard errors, ``sqrt(diag(pcov))``."""
        return np.sqrt(np.diag(self.pcov))

    stderr = perr

    @property
    def correlation(self) -> np.ndarray:
        return _stats.correlation_from_covariance(self.pcov)

    @property
    def n_points(self) -> int:
        return int(self.ydata.size if self.sums is None else self.sums.n_points)

    @property
    def n_params(self) -> int:
        """The parameters the fit varied (fixed and tied ones are not counted)."""
        return int(self.popt.size) - len(self.fixed) - len(self.tied)

    @property
    def varied(self) -> np.ndarray:
        """Whether each parameter was varied by the fit (not fixed, not tied)."""
        return np.array([name not in self.fixed + self.tied for name in self.names])

    @property
    def dof(self) -> int:
        return self.n_points - self.n_params

    @property
    def best_fit(self) -> np.ndarray:
        """The model at the data (from the residuals: no new evaluation)."""
        if self.ydata is None:
            raise AttributeError("A streamed fit keeps no per-point values; use eval(x).")
        if self.sigma is not None and np.ndim(self.sigma) == 2:  # whitened by L⁻¹
            return self.ydata + np.linalg.cholesky(self.sigma) @ self.fun
        sigma = 1.0 if self.sigma is None else self.sigma
        return self.ydata + np.reshape(self.fun, self.ydata.shape) * sigma

    @property
    def residual(self) -> np.ndarray:
        """``ydata - best_fit`` (unweighted)."""
        return self.ydata - self.best_fit

    @functools.cached_property
    def _goodness(self) -> dict:
        sums = self.sums
        if sums is None:  # from the per-point arrays
            sums = _stats.FitSums.of_points(self.ydata, self.best_fit, self.fun)
        return sums.statistics(self.n_params)

    chisqr = property(lambda self: self._goodness["chisqr"])
    redchi = property(lambda self: self._goodness["redchi"])
    rmse = property(lambda self: self._goodness["rmse"])
    r_squared = property(lambda self: self._goodness["r_squared"])
    aic = property(lambda self: self._goodness["aic"])
    bic = property(lambda self: self._goodness["bic"])

    def conf_intervals(self, level: float = 0.95) -> dict:
        """``{name: (low, high)}``: ``popt ± t_{(1+level)/2, dof} · perr``."""
        t = _stats.two_sided_t(level, self.dof)
        half = t * self.perr
        return {
            name: (float(p - h), float(p + h))
            for name, p, h in zip(self.names, self.popt, half, strict=True)
        }

    def eval(self, x=None, params=None) -> np.ndarray:
        """The model at `x` (default: the data's x) with `params` (default: `popt`)."""
        if x is None and self.xdata is None:
            raise ValueError("A streamed fit keeps no data: give `x`.")
        x = self.xdata if x is None else Data(x, np.zeros(())).x  # lists as arrays
        params = self.popt if params is None else np.asarray(params, float)
        return np.asarray(self.model(x, params))

    def curve_std(self, x=None) -> np.ndarray:
        """Delta-method standard deviation of the fitted curve at `x` (flattened)."""
        x = self.xdata if x is None else Data(x, np.zeros(())).x
        return np.sqrt(_stats.curve_variance(self.model, x, self.popt, self.pcov))

    def confidence_band(self, x=None, level: float = 0.95, *, alpha: float | None = None):
        """``(lower, upper)`` around the fitted curve: ``ŷ ± t · curve_std``.
        (`alpha` is NLSQ's name for `level`.)"""
        level = level if alpha is None else alpha
        y = np.ravel(self.eval(x))
        half = _stats.two_sided_t(level, self.dof) * self.curve_std(x)
        return y - half, y + half

    def prediction_band(self, x=None, level: float = 0.95, sigma=None):
        """``(lower, upper)`` for a new observation at `x`: the curve's variance plus
        the noise variance ``sigma² · s²`` (``s² = redchi``, or 1 with
        `absolute_sigma`). `sigma` is the new points' uncertainty: by default the data's
        `sigma` at the data's x, or 1 when the fit had no `sigma`."""
        if sigma is None:
            if self.sigma is None:
                sigma = 1.0
            elif x is None and np.ndim(self.sigma) == 2:  # a covariance matrix
                sigma = np.sqrt(np.diag(self.sigma))
            elif x is None:
                sigma = np.ravel(self.sigma)
            else:
                raise ValueError(
                    "This fit used `sigma`: give `sigma` at the new points for a prediction band."
                )
        noise = np.square(sigma) * (1.0 if self.absolute_sigma else self.redchi)
        y = np.ravel(self.eval(x))
        std = np.sqrt(np.square(self.curve_std(x)) + noise)
        half = _stats.two_sided_t(level, self.dof) * std
        return y - half, y + half

    @functools.cached_property
    def diagnostics(self) -> list:
        """Possible problems with the fit, each with a concrete hint."""
        return _report.diagnose(self)

    def summary(self, correlation_threshold: float = 0.1, level: float = 0.95) -> str:
        """A report like lmfit's ``fit_report``."""
        return _report.summary(self, correlation_threshold, level)

    def __repr__(self) -> str:
        return _report.one_line(self)

    def plot(self, **options):
        """Data, fit, optional confidence band and residuals (needs matplotlib)."""
        from .plot import plot_fit

        return plot_fit(self, **options)
