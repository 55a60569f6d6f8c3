"""``curve_fit``: SciPy's interface, as a thin layer over `CurveFit` (and so over
`init` and `solve`)."""

from collections.abc import Callable
from typing import Any

import numpy as np

from ._arguments import as_flag
from ._curve_fit_class import CurveFit, OptimizeWarning
from ._loss import AbstractLoss
from ._misc import ArrayLikeOrSequence

__all__ = ["OptimizeWarning", "curve_fit"]


def curve_fit(
    f: Callable,
    xdata: Any,
    ydata: ArrayLikeOrSequence,
    p0: ArrayLikeOrSequence | dict | None = None,
    sigma: ArrayLikeOrSequence | None = None,
    absolute_sigma: bool = False,
    check_finite: bool | None = None,
    bounds: tuple[Any, Any] | dict = (-np.inf, np.inf),
    method: str | None = None,
    jac: Callable | str | None = None,
    *,
    full_output: bool = False,
    nan_policy: str | None = None,
    loss: str | AbstractLoss = "linear",
    f_scale: float = 1.0,
    ftol: float = 1e-8,
    xtol: float = 1e-8,
    gtol: float = 1e-8,
    max_nfev: int | None = None,
    x_scale: ArrayLikeOrSequence | str | None = None,
    verbose: int = 0,
    callback: Callable | None = None,
    pad: bool = False,
    diff_step: ArrayLikeOrSequence | None = None,
) -> tuple:
    """Fit ``f(xdata, *params)`` to `ydata`, as `scipy.optimize.curve_fit`.

    Returns ``(popt, pcov)``, or ``(popt, pcov, infodict, mesg, ier)`` with
    `full_output` (``infodict["result"]`` is the full `CurveFitResult`). `pcov` is
    computed exactly as SciPy does (pseudo-inverse of ``JᵀJ`` from the loss-scaled
    Jacobian, times the reduced chi-square unless `absolute_sigma`). `method` defaults
    to ``"lm"`` without bounds and ``"trf"`` with them or with a robust loss; `jac`
    defaults to JAX's exact Jacobian. `f` must be written with `jax.numpy`. Raises
    `RuntimeError` when the fit fails, like SciPy. Calls with data of the same shape
    share compiled code; ``pad=True`` extends that to similar lengths for pointwise
    models (see `CurveFit`).
    """
    del check_finite  # Non-finite data are always rejected (or omitted by nan_policy).
    fitter = CurveFit(
        f, xdata, ydata, p0=p0, sigma=sigma, absolute_sigma=absolute_sigma,
        bounds=bounds, method=method, loss=loss, f_scale=f_scale, x_scale=x_scale,
        jac=jac, ftol=ftol, xtol=xtol, gtol=gtol, max_nfev=max_nfev, verbose=verbose,
        callback=callback, nan_policy=nan_policy, pad=pad, diff_step=diff_step,
    )
    result = fitter.fit()
    if not result.success:
        raise RuntimeError("Optimal parameters not found: " + result.message)
    if as_flag(full_output, "full_output"):
        infodict = dict(nfev=result.nfev, fvec=result.fun, result=result)
        return result.popt, result.pcov, infodict, result.message, result.status
    return result.popt, result.pcov
