"""``curve_fit``: SciPy's interface, as a thin layer over `CurveFit` (and so over
`init` and `solve`)."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .._drivers.options import check_bounds_supported
from .._misc import is_concrete
from .._problem.arguments import as_flag
from .._results.fit_result import CurveFitResult
from .curve_fit_class import CurveFit
from .curve_fit_inputs import any_finite_bound
from .scipy_compat import OptimizeWarning
from .structured import parameter_structure

__all__ = ["OptimizeWarning", "curve_fit"]

# What `curve_fit(..., **kwargs)` passes on, as SciPy does: to `least_squares` for
# 'trf' (and 'dogbox'), to `leastsq` for 'lm'; nlsq_fn's own options for every method.
_OPTIONS = {
    "loss",
    "f_scale",
    "ftol",
    "xtol",
    "gtol",
    "max_nfev",
    "x_scale",
    "verbose",
    "callback",
    "diff_step",
    "param_style",
    "pad",
    "fixed",
    "ties",
}
_LEAST_SQUARES_ONLY = {"tr_solver", "tr_options", "jac_sparsity", "workers"}
_LEASTSQ_ONLY = {"maxfev", "epsfcn", "factor", "diag", "col_deriv"}
# MINPACK's `info` for each least_squares status (SciPy's `curve_fit` returns it as
# `ier` with method='lm').
_MINPACK_INFO = {1: 4, 2: 1, 3: 2, 4: 3}


def _options_for(method: str, kwargs: dict) -> dict:
    """SciPy's keyword arguments in nlsq_fn's terms; unknown ones raise `TypeError` as
    the function SciPy forwards them to would."""
    if "args" in kwargs:
        raise ValueError("'args' is not a supported keyword argument.")
    kwargs = dict(kwargs)
    lm = method == "lm"
    accepted = _OPTIONS | (_LEASTSQ_ONLY if lm else _LEAST_SQUARES_ONLY | {"maxfev"})
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        target = "leastsq" if lm else "least_squares"
        raise TypeError(f"{target}() got an unexpected keyword argument {unknown[0]!r}")
    if "maxfev" in kwargs:
        maxfev = kwargs.pop("maxfev")
        kwargs.setdefault("max_nfev", maxfev)
    for name in ("tr_options", "workers", "epsfcn", "factor"):
        # No effect here: the step is always exact; `epsfcn` only sizes MINPACK's finite
        # differences and `factor` its first step bound.
        kwargs.pop(name, None)
    if kwargs.pop("tr_solver", None) not in (None, "exact"):
        raise ValueError("`tr_solver` must be None or 'exact' (the dense step).")
    if kwargs.pop("jac_sparsity", None) is not None:
        raise ValueError("`jac_sparsity` is not supported: JAX computes the exact Jacobian.")
    if kwargs.pop("col_deriv", False):
        raise ValueError("`col_deriv=True` is not supported: `jac` returns (m, n).")
    diag = kwargs.pop("diag", None)
    if diag is not None:  # leastsq's `diag` is the inverse of least_squares' `x_scale`
        kwargs.setdefault("x_scale", 1.0 / np.asarray(diag, dtype=float))
    return kwargs


def _check_finite(xdata, ydata):
    """SciPy's ``check_finite``: `ydata` (and array-like `xdata`) must be finite."""
    for name, value in (("ydata", ydata), ("xdata", xdata)):
        if name == "xdata" and not isinstance(value, (list, tuple, np.ndarray)):
            continue
        if not is_concrete(value):
            continue
        array = np.asarray(value)
        if array.dtype.kind in "biufc" and not np.all(np.isfinite(array)):
            raise ValueError(f"array must not contain infs or NaNs (`{name}`)")


def resolve_auto_p0(f, xdata, ydata, p0):
    """NLSQ's ``p0="auto"``: the function's ``estimate_p0(xdata, ydata)`` when it has one
    (the functions of NLSQ's library in `nf.models`), else None (SciPy's default, or a
    model's own guess)."""
    if not (isinstance(p0, str) and p0 == "auto"):
        return p0
    estimate = getattr(f, "estimate_p0", None)
    return None if estimate is None else estimate(np.asarray(xdata), np.asarray(ydata))


def curve_fit(
    f: Callable,
    xdata,
    ydata,
    p0=None,
    sigma=None,
    absolute_sigma: bool = False,
    check_finite: bool | None = None,
    bounds=(-np.inf, np.inf),
    method: str | None = None,
    jac: Callable | str | None = None,
    *,
    full_output: bool = False,
    nan_policy: str | None = None,
    **kwargs,
) -> "CurveFitResult | tuple":
    """Fit ``f(xdata, *params)`` to `ydata`, as `scipy.optimize.curve_fit`.

    Returns a `CurveFitResult` that unpacks as SciPy's ``(popt, pcov)``, or
    ``(popt, pcov, infodict, mesg, ier)`` with `full_output` (and indexes like that
    tuple), and also carries the statistics (``r_squared``, ``rmse``...), intervals,
    ``summary()`` and ``plot()``. With `full_output`: `infodict` has SciPy's keys
    (``nfev`` and ``fvec``; with
    method='lm' also MINPACK's ``fjac``, ``ipvt`` (0-based, as SciPy's) and ``qtf``, and
    ``njev`` when `jac` is a function, and `ier` MINPACK's code) and
    ``infodict["result"]`` is the full `CurveFitResult`. `pcov` is computed exactly as
    SciPy does (pseudo-inverse of ``JᵀJ`` from the loss-scaled Jacobian, times the
    reduced chi-square unless `absolute_sigma`). `sigma` may be 1-D (standard
    deviations) or 2-D (a covariance matrix, whitened by its Cholesky factor).
    `bounds` may be a pair or a `scipy.optimize.Bounds`.

    `method` defaults to ``"lm"`` without bounds and ``"trf"`` with them or with a
    robust loss; `jac` defaults to JAX's exact Jacobian. `**kwargs` are SciPy's:
    passed to `least_squares` (``loss``, ``f_scale``, ``x_scale``, ``max_nfev`` or
    ``maxfev``, ``ftol``...) or, for 'lm', `leastsq`'s (``maxfev``, ``diag``, ``ftol``,
    ``xtol``, ``gtol``; ``epsfcn`` and ``factor`` have no effect); ``param_style`` and
    ``pad`` are `CurveFit`'s. ``fixed={"b": 1.3}`` holds parameters at values and
    ``ties={"c": lambda p: 2 * p["a"]}`` makes them functions of the free and fixed
    ones (by name: from `f`'s signature, a dict `p0`, or `nf.models`); then `p0` and
    `bounds` may be given for all parameters or for the free ones, the fit varies the
    free ones only, and `popt` / `pcov` cover all parameters (fixed: variance 0; tied:
    propagated through the tie's Jacobian). `f` may also be the NLSQ guide's ``model(x, params)``
    (see `CurveFit` for the rule). `f` must be written with `jax.numpy`.

    ``check_finite`` (default: True unless `nan_policy` is given) rejects NaN or inf in
    the data as SciPy does; `nan_policy` is None, ``"raise"`` or ``"omit"``. Non-finite
    data are rejected even with ``check_finite=False`` (a fit to NaN means nothing).
    Raises `RuntimeError` when the fit fails, like SciPy. A model's first fits run step
    by step, compiling nothing for the model (milliseconds for a new model; see
    `nlsq_fn._drivers.stepwise`); from a model's second fit on data of the same kind its fit
    is compiled in a background thread (or, without one, once its fits have taken about a
    second), and calls with data of the same shape share that code; ``pad=True`` extends that to
    similar lengths for pointwise models (see `CurveFit`). Under `jax.jit` / `jax.vmap` /
    `jax.grad` it returns JAX arrays and raises nothing for a failed fit (check
    ``infodict["result"].success`` with `full_output`).
    """
    p0 = resolve_auto_p0(f, xdata, ydata, p0)  # NLSQ's p0="auto"
    if check_finite is None:
        check_finite = nan_policy is None
    if check_finite:
        _check_finite(xdata, ydata)
    elif nan_policy == "propagate":
        raise ValueError("`nan_policy='propagate'` is not supported by this function.")
    if isinstance(xdata, (list, tuple)) and is_concrete(xdata):
        # SciPy converts sequences to a float array before calling `f`.
        xdata = np.asarray(xdata, dtype=float)
    if kwargs.get("fixed") or kwargs.get("ties"):
        # The fit is one of the free parameters: its bounds choose the method.
        structure = parameter_structure(
            f, p0, kwargs.get("fixed"), kwargs.get("ties"), kwargs.get("param_style")
        )
        bounds = structure.free_bounds(bounds)
    bounded = any_finite_bound(bounds)
    if method is None:
        robust = kwargs.get("loss", "linear") != "linear"
        method = "trf" if bounded or robust else "lm"
    check_bounds_supported(method, bounded, "curve_fit")
    options = _options_for(method, kwargs)
    fitter = CurveFit(
        f,
        xdata,
        ydata,
        p0=p0,
        sigma=sigma,
        absolute_sigma=absolute_sigma,
        bounds=bounds,
        method=method,
        jac=jac,
        nan_policy=nan_policy,
        **options,
    )
    result = fitter.fit()
    traced = not isinstance(result.success, (bool, np.bool_))
    if not traced and not result.success:
        raise RuntimeError("Optimal parameters not found: " + result.message)
    full_output = as_flag(full_output, "full_output")
    if traced and not full_output:
        return result.popt, result.pcov
    if not full_output:
        return result  # unpacks as (popt, pcov); NLSQ's statistics on top
    infodict = dict(nfev=result.nfev, fvec=result.fun, result=result)
    ier = result.status
    message = result.message if not traced else None
    if method == "lm" and not traced:
        infodict.update(_minpack_factors(result.jac, result.fun))
        if callable(jac):  # MINPACK counts the calls of a given Jacobian only
            infodict["njev"] = result.njev
        ier = _MINPACK_INFO.get(ier, ier)
        message = _minpack_message(ier, **fitter.tolerances)
    if traced:
        return result.popt, result.pcov, infodict, message, ier
    result.returned = (result.popt, result.pcov, infodict, message, ier)
    return result


def _minpack_message(info: int, ftol: float, xtol: float, gtol: float) -> str:
    """`leastsq`'s message for MINPACK's `info` (what SciPy's `curve_fit` returns as
    `mesg` with method='lm')."""
    ftol, xtol, gtol = (0.0 if tol is None else tol for tol in (ftol, xtol, gtol))
    messages = {
        1: "Both actual and predicted relative reductions in the sum of squares\n  are at "
        f"most {ftol:f}",
        2: f"The relative error between two consecutive iterates is at most {xtol:f}",
        3: "Both actual and predicted relative reductions in the sum of squares\n  are at "
        f"most {ftol:f} and the relative error between two consecutive iterates is at "
        f"\n  most {xtol:f}",
        4: "The cosine of the angle between func(x) and any column of the\n  Jacobian is "
        f"at most {gtol:f} in absolute value",
    }
    return messages.get(info, "")


def _minpack_factors(jac, fvec) -> dict:
    """MINPACK's ``fjac``, ``ipvt`` and ``qtf``: ``J P = Q R`` with column pivoting;
    ``fjac.T[:n]`` holds ``R``, ``ipvt`` the pivots (0-based, as SciPy's MINPACK
    returns them since it was ported to C, ``J[:, ipvt] = Q R``), ``qtf = (Qᵀ fvec)[:n]``."""
    jac, fvec = np.asarray(jac, dtype=float), np.asarray(fvec, dtype=float)
    q, r, pivots = jax.scipy.linalg.qr(jnp.asarray(jac), mode="economic", pivoting=True)
    n = jac.shape[1]
    fjac = np.zeros((n, jac.shape[0]))
    fjac[:, : r.shape[0]] = np.asarray(r).T
    return dict(
        fjac=fjac,
        ipvt=np.asarray(pivots, dtype=np.int32),
        qtf=(np.asarray(q).T @ fvec)[:n],
    )
