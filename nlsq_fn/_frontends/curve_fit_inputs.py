"""A curve fit's inputs as SciPy's `curve_fit` and NLSQ's `CurveFit` take them, checked
and turned into what the core needs: the model's convention and `p0`, the bounds by name,
the `Jacobian` and `Solver` options, `sigma`, NaN handling, and the errors in the words
of the user's arguments. Shared by `CurveFit`, `curve_fit` and the streaming optimizer."""

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from .._drivers.options import has_finite_bounds
from .._drivers.solver import Solver
from .._misc import is_concrete
from .._problem.arguments import as_bounds
from .._problem.conventions import (
    NamedModel,
    UnpackedJacobian,
    count_values,
    model_convention,
    parameter_names,
    unpacked_model,
)
from .._problem.data import points_axis, sigma_shape_error
from .._problem.host_model import call_on_host, traced_or_on_host
from .scipy_compat import finite_difference_options


class _Unset:
    """Marks an argument that was not given (None is a valid `x`: SciPy passes it on)."""

    def __repr__(self):
        return "<not given>"


UNSET = _Unset()


class Inputs(NamedTuple):
    """A fit's inputs after `CurveFit._validated`: NumPy values, the model's
    convention and names."""

    xdata: Any
    ydata: np.ndarray
    sigma: np.ndarray | None
    cholesky: np.ndarray | None
    style: str
    model: Callable
    names: tuple[str, ...]
    no_p0: bool
    p0: np.ndarray
    flat_bounds: Any


def one_of(value, alias, name, alias_name, unset):
    """The guide's keyword (`model`, `x`, `y`) or SciPy's (`f`, `xdata`, `ydata`)."""
    if alias is unset:
        return value
    if value is not unset:
        raise TypeError(f"Give `{name}` or `{alias_name}`, not both.")
    return alias


def broadcast_to_model(model, xdata, p0, ydata):
    """A scalar `ydata` as an array shaped like the model's values at `p0` (SciPy
    subtracts it from them, broadcasting)."""
    out, _ = traced_or_on_host(
        model,
        xdata,
        p0,
        lambda: call_on_host(model, xdata, p0),
        lambda _, host_error: host_error,  # the model's own error, as SciPy raises it
    )
    return np.broadcast_to(ydata, np.shape(out)).astype(float)


def _is_scipy_default(bounds) -> bool:
    """Whether `bounds` is SciPy's default ``(-np.inf, np.inf)`` as two Python floats."""
    return (
        type(bounds) is tuple
        and len(bounds) == 2
        and type(bounds[0]) is float
        and type(bounds[1]) is float
        and bounds[0] == -np.inf
        and bounds[1] == np.inf
    )


def any_finite_bound(bounds) -> bool:
    if _is_scipy_default(bounds):  # (checked on every fit: at once)
        return False
    bounds = as_bounds(bounds)
    if isinstance(bounds, dict):
        return any(has_finite_bounds(pair) for pair in bounds.values())
    return has_finite_bounds(bounds)


def convention(f, p0, param_style) -> tuple:
    """``(style, wrapped model, names or None)`` of the model `f` for this `p0`."""
    style = model_convention(f, p0, param_style)
    n = None
    if p0 is not None and not isinstance(p0, dict):
        n = count_values(p0)
    names = parameter_names(f, style, n)
    if style == "named":
        return style, NamedModel(f, names), names
    if style == "unpacked":
        return style, unpacked_model(f), names
    return style, f, names


def initial_params(f, p0, xdata, ydata, style, names):
    if style == "named":
        values = {}
        if p0 is None or isinstance(p0, dict):
            given = dict(p0 or {})
            if not set(names) <= set(given):  # complete p0 from the guess
                values = dict(f.guess(xdata, ydata))
            values.update(given)
            unknown = set(values) - set(names)
            if unknown:
                raise ValueError(
                    f"`p0` names unknown parameters {sorted(unknown)}; the model's "
                    f"parameters are {list(names)}."
                )
            p0 = [values[name] for name in names]
    elif p0 is None:
        if names is None:
            what = (
                "model(x, params) takes an array of unknown length"
                if style == "array"
                else "the model takes *args"
            )
            raise ValueError(
                f"Unable to determine the number of fit parameters ({what}); give `p0`."
            )
        p0 = np.ones(len(names))
    elif isinstance(p0, dict):  # by name, as a `bounds` dict: in the signature's order
        if names is None or style == "array":
            raise ValueError("`p0` as a dict needs a model with named parameters.")
        unknown, missing = set(p0) - set(names), set(names) - set(p0)
        if unknown or missing:
            raise ValueError(
                f"`p0` must name each of the model's parameters {list(names)}; "
                f"unknown: {sorted(unknown)}, missing: {sorted(missing)}."
            )
        p0 = [p0[name] for name in names]
    if is_concrete(p0):
        p0 = np.atleast_1d(np.asarray(p0))
        if np.iscomplexobj(p0) or p0.dtype.kind not in "biuf":
            raise ValueError(f"`p0` must be real numbers, got dtype {p0.dtype}.")
        p0 = p0.astype(float)
    else:  # traced (under jit / vmap / grad): a list of tracers or an array
        p0 = jnp.atleast_1d(jnp.asarray(p0))
        if not jnp.issubdtype(p0.dtype, jnp.inexact):
            p0 = p0.astype(jnp.result_type(float))
    if p0.size == 0:
        raise ValueError("`p0` has no parameters.")
    if p0.ndim != 1:
        raise ValueError(f"`p0` must be 1-D, got shape {p0.shape}.")
    if names is not None and len(names) != p0.size:
        raise ValueError(
            f"`p0` has {p0.size} values but the model has {len(names)} parameters {list(names)}."
        )
    return p0


def flat_bounds(bounds, names):
    bounds = as_bounds(bounds)
    if not isinstance(bounds, dict):
        return bounds
    unknown = set(bounds) - set(names)
    if unknown:
        raise ValueError(f"`bounds` names unknown parameters {sorted(unknown)}.")
    lower = [bounds.get(name, (-np.inf, np.inf))[0] for name in names]
    upper = [bounds.get(name, (-np.inf, np.inf))[1] for name in names]
    return np.asarray(lower, float), np.asarray(upper, float)


def jacobian_option(jac, style):
    if callable(jac):
        return UnpackedJacobian(jac) if style == "unpacked" else jac
    if jac is None or jac in ("fwd", "rev", "2-point", "3-point", "cs"):
        # SciPy's finite-difference names are passed on to the core's Solver.
        return jac or "fwd"
    raise ValueError(
        f"`jac` must be a callable, None, 'fwd', 'rev', '2-point', '3-point' or 'cs', got {jac!r}."
    )


def core_solver(fitter, bounds, style, **overrides):
    """The core `Solver` for a `CurveFit`'s options; `overrides` replace fields (the streaming
    optimizer sets its own `factorization` and `chunk_size`)."""
    options = (
        dict(jac=jacobian_option(fitter.jac, style))
        | finite_difference_options(fitter.diff_step)
        | overrides
    )
    return Solver(
        strategy=fitter.strategy,
        loss=fitter.loss,
        bounds=bounds if has_finite_bounds(bounds) else None,
        x_scale=fitter.x_scale,
        max_nfev=fitter.max_nfev,
        # Only the table is printed from inside the loop; verbose=1 reports after
        # the fit and shares the compiled code of verbose=0.
        verbose=2 if fitter.verbose == 2 else 0,
        callback=fitter.callback,
        **fitter.tolerances,
        **options,
    )


def check_sigma(sigma, ydata):
    """1-D standard deviations (broadcast to `ydata`), or a 2-D covariance matrix and
    its lower Cholesky factor, as SciPy's `curve_fit` takes them."""
    if sigma is None:
        return None, None
    sigma = np.asarray(sigma, dtype=float)
    if sigma.ndim == 2 and ydata.ndim == 1 and sigma.shape == (ydata.size, ydata.size):
        try:
            cholesky = np.linalg.cholesky(sigma)
        except np.linalg.LinAlgError as error:
            raise ValueError("`sigma` must be positive definite.") from error
        return sigma, cholesky
    if sigma.size != 1 and sigma.shape != ydata.shape:
        mismatch = sigma_shape_error(sigma.shape, ydata.shape, y_name="`ydata`")
        raise ValueError(
            f"{mismatch} (Or give a scalar, or a {ydata.size}x{ydata.size} covariance matrix.)"
        )
    return np.broadcast_to(sigma, ydata.shape), None


def omit_or_raise_nan(xdata, ydata, sigma, nan_policy, x_is_array):
    if nan_policy == "propagate":
        raise ValueError("`nan_policy='propagate'` is not supported by this function.")
    if nan_policy not in (None, "raise", "omit"):
        raise ValueError("nan_policy must be one of {None, 'raise', 'omit'}")
    y_nan = np.isnan(ydata)
    x_nan = np.zeros(ydata.shape, bool)
    axis = points_axis(xdata, ydata.shape[0]) if x_is_array and ydata.ndim == 1 else None
    if axis is not None and np.issubdtype(xdata.dtype, np.floating):
        x_nan = np.isnan(np.moveaxis(xdata, axis, -1))
        x_nan = x_nan.any(axis=tuple(range(x_nan.ndim - 1))) if x_nan.ndim > 1 else x_nan
    if nan_policy == "raise" and (y_nan.any() or x_nan.any()):
        where = "`ydata`" if y_nan.any() else "`xdata`"
        raise ValueError(f"The input contains nan values ({where}).")
    if nan_policy == "omit" and (y_nan.any() or x_nan.any()):
        if ydata.ndim != 1:
            raise ValueError("nan_policy='omit' needs 1-D `ydata`.")
        keep = ~(y_nan | x_nan)
        ydata = ydata[keep]
        if axis is not None:
            xdata = np.compress(keep, xdata, axis=axis)
        if sigma is not None and np.ndim(sigma) == 1:
            sigma = np.asarray(sigma)[keep]
        elif sigma is not None and np.ndim(sigma) == 2:  # a covariance: rows and columns
            sigma = np.asarray(sigma)[keep][:, keep]
    return xdata, ydata, sigma


def feasible_start(lower, upper, n: int) -> np.ndarray:
    """SciPy's start when `p0` is not given but bounds are: 1, or the middle of a finite
    interval, or one unit inside a single finite bound."""
    lower, upper = (np.broadcast_to(np.asarray(b, dtype=float), (n,)) for b in (lower, upper))
    p0 = np.ones(n)
    both = np.isfinite(lower) & np.isfinite(upper)
    p0[both] = 0.5 * (lower[both] + upper[both])
    only_lower = np.isfinite(lower) & ~np.isfinite(upper)
    p0[only_lower] = lower[only_lower] + 1
    only_upper = ~np.isfinite(lower) & np.isfinite(upper)
    p0[only_upper] = upper[only_upper] - 1
    return p0


def init_message(error, names, no_p0, style) -> str:
    """An error of `init` in the words of `curve_fit`, with a hint where the model got
    one scalar parameter by SciPy's rule for lack of `p0`."""
    message = user_message(error, names)
    if no_p0 and style == "unpacked" and len(names) == 1:
        message = (
            message.rstrip(".")
            + "."
            + (
                f" Without `p0` the model was called with one scalar parameter "
                f"{names[0]!r} (SciPy's rule); if it takes an array of parameters, "
                "give `p0`."
            )
        )
    return message


def user_message(error, names) -> str:
    """A core error in the words of `curve_fit`'s arguments."""
    message = str(error).replace("`y`", "`ydata`").replace("`x`", "`xdata`")
    # The core names flat parameters p[0], p[1], ...: use the model's names.
    return re.sub(r"\bp\[(\d+)\]", lambda m: f"'{names[int(m[1])]}'", message)
