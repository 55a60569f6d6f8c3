"""NLSQ's reusable fitter: ``CurveFit(flength=..., use_dynamic_sizing=...)`` made without
a model, then ``.curve_fit(f, xdata, ydata, p0, ...)`` for each fit, as NLSQ's users
write it. A thin layer over `curve_fit` (SciPy's interface).

`flength` and `use_dynamic_sizing` are accepted and have no effect: in NLSQ they pad the
data to a fixed length so that one compiled program serves several data sizes, while
nlsq_fn decides shapes itself (a model's first fits compile nothing, then one program
per data shape; ``pad=True`` reuses programs across lengths for pointwise models). NLSQ's
other constructor options (stability guards, cache settings) are accepted for the same
reason and likewise change nothing.
"""

from collections.abc import Callable

import numpy as np

# NLSQ's `CurveFit.__init__` keywords other than `flength` and `use_dynamic_sizing`.
NLSQ_FITTER_OPTIONS = frozenset(
    {
        "enable_stability",
        "enable_recovery",
        "enable_overflow_check",
        "cache_config",
        "max_jacobian_elements_for_svd",
    }
)
# NLSQ's linear solvers for the step; nlsq_fn's step is always the exact dense one.
NLSQ_SOLVERS = ("auto", "svd", "cg", "lsqr", "minibatch")
# NLSQ's `curve_fit` keywords that change nothing here (timing, solver selection,
# NLSQ's diagnostics), dropped before calling SciPy's interface.
NLSQ_CALL_OPTIONS = frozenset(
    {
        "timeit",
        "batch_size",
        "compute_diagnostics",
        "diagnostics_level",
        "diagnostics_config",
        "return_eval",
    }
)


class ReusableFitter:
    """Mixed into `CurveFit`: what a `CurveFit()` made without a model can do."""

    def _become_reusable(self, flength, use_dynamic_sizing, options: dict) -> None:
        unknown = sorted(set(options) - NLSQ_FITTER_OPTIONS)
        if unknown:
            raise TypeError(
                f"CurveFit() got an unexpected keyword argument {unknown[0]!r}.\n"
                "Without a model, CurveFit is NLSQ's reusable fitter: "
                "CurveFit(flength=..., use_dynamic_sizing=...).curve_fit(f, xdata, ydata)."
            )
        if flength is not None and not flength > 0:
            raise ValueError(f"`flength` must be a positive length or None, got {flength!r}.")
        self.f: Callable | None = None
        self.flength = flength
        self.use_dynamic_sizing = bool(use_dynamic_sizing)

    def curve_fit(
        self,
        f,
        xdata,
        ydata,
        p0=None,
        sigma=None,
        absolute_sigma=False,
        check_finite=None,
        bounds=None,
        method=None,
        jac=None,
        **kwargs,
    ):
        """``scipy.optimize.curve_fit(f, xdata, ydata, ...)`` (see `nlsq_fn.curve_fit`);
        NLSQ's extra keywords ``timeit``, ``solver`` (one of NLSQ's names; the step is
        always the exact dense one), ``batch_size``, ``return_eval`` and its diagnostics
        options are accepted and ignored; ``data_mask`` (True for
        the points to fit) selects points."""
        from .curve_fit import curve_fit

        for name in NLSQ_CALL_OPTIONS & set(kwargs):
            kwargs.pop(name)
        solver = kwargs.pop("solver", "auto")
        if solver not in NLSQ_SOLVERS:
            raise ValueError(f"Invalid solver {solver!r}: NLSQ's are {', '.join(NLSQ_SOLVERS)}.")
        mask = kwargs.pop("data_mask", None)
        if mask is not None:
            xdata, ydata, sigma = _masked(mask, xdata, ydata, sigma)
        if bounds is None:
            bounds = (-float("inf"), float("inf"))
        return curve_fit(
            f, xdata, ydata, p0, sigma, absolute_sigma, check_finite, bounds, method, jac, **kwargs
        )


def _masked(mask, xdata, ydata, sigma):
    """The points where `mask` is True (NLSQ's ``data_mask``)."""
    mask = np.asarray(mask, dtype=bool)
    ydata = np.asarray(ydata)
    if mask.shape != ydata.shape:
        raise ValueError(f"`data_mask` has shape {mask.shape}; `ydata` has {ydata.shape}.")
    xdata = np.asarray(xdata)
    xdata = xdata[..., mask] if xdata.ndim > 1 else xdata[mask]
    if sigma is not None and np.ndim(sigma) == 1:
        sigma = np.asarray(sigma)[mask]
    return xdata, ydata[mask], sigma
