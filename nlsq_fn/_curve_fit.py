"""``curve_fit``: SciPy's interface, as a thin layer over `init` and `solve`."""

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from beartype import beartype
from jaxtyping import jaxtyped

from ._covariance import covariance_from_jacobian
from ._data import Data
from ._least_squares import has_finite_bounds, strategy_for
from ._loss import AbstractLoss, as_loss
from ._misc import ArrayLikeOrSequence
from ._solve import solve
from ._solver import Solver, init

_solve = eqx.filter_jit(solve)


class OptimizeWarning(UserWarning):
    """The covariance could not be estimated (as SciPy's warning of that name)."""


class PositionalModel(eqx.Module):
    """``f(x, *params)`` (SciPy's convention) seen as ``model(x, params)``."""

    f: Callable = eqx.field(static=True)

    def __call__(self, x, params):
        return self.f(x, *params)


class PositionalJacobian(eqx.Module):
    jac: Callable = eqx.field(static=True)

    def __call__(self, x, params):
        return self.jac(x, *params)


def count_parameters(f: Callable) -> int:
    """Number of fit parameters of ``f(x, p1, p2, ...)``, as SciPy infers it."""
    parameters = inspect.signature(f).parameters.values()
    positional = [
        p for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if any(p.kind == p.VAR_POSITIONAL for p in parameters) or len(positional) < 2:
        raise ValueError(
            "Unable to determine the number of fit parameters; give `p0`."
        )
    return len(positional) - 1


def prepare_curve_fit(
    f, xdata, ydata, p0, sigma, bounds, method, jac, nan_policy, loss, f_scale,
    solver_options,
):
    """Validate SciPy-style arguments and build ``(model, data, state)``."""
    ydata = np.asarray(ydata)
    if ydata.size == 0:
        raise ValueError("`ydata` must not be empty!")
    if p0 is None:
        p0 = np.ones(count_parameters(f))
    p0 = np.atleast_1d(np.asarray(p0, dtype=float))
    if p0.ndim != 1:
        raise ValueError("`p0` must be 1-D.")
    if method is None:
        method = "trf" if has_finite_bounds(bounds) else "lm"
    x_is_array = not isinstance(xdata, (dict, tuple)) or isinstance(xdata, np.ndarray)
    xdata_arr = np.asarray(xdata) if x_is_array else xdata
    if nan_policy not in (None, "raise", "omit"):
        raise ValueError("nan_policy must be one of {None, 'raise', 'omit'}")
    if nan_policy == "omit":
        has_nan = np.isnan(ydata)
        if x_is_array:
            x_nan = np.isnan(xdata_arr)
            has_nan |= x_nan.any(axis=tuple(range(x_nan.ndim - 1)))
            xdata_arr = xdata_arr[..., ~has_nan]
        ydata = ydata[~has_nan]
        if sigma is not None and np.ndim(sigma) == 1:
            sigma = np.asarray(sigma)[~has_nan]
    if sigma is not None:
        sigma = np.asarray(sigma, dtype=float)
        if sigma.ndim > 1:
            raise ValueError(
                "`sigma` must be 1-D standard deviations (2-D covariance matrices are "
                "not supported)."
            )
        if sigma.size != 1 and sigma.shape != ydata.shape:
            raise ValueError(
                f"`sigma` has shape {sigma.shape} but `ydata` has shape {ydata.shape}."
            )
    strategy = strategy_for(method, has_finite_bounds(bounds))
    loss_module = as_loss(loss, f_scale)
    if method == "lm" and ydata.size < p0.size:
        raise TypeError(
            f"The number of func parameters={p0.size} must not exceed the number of "
            f"data points={ydata.size}"
        )
    if callable(jac):
        jac_mode = PositionalJacobian(jac)
    elif jac in (None, "fwd", "rev"):
        jac_mode = jac or "fwd"
    else:
        raise ValueError(f"`jac` must be a callable, None, 'fwd' or 'rev', got {jac!r}.")
    solver = Solver(
        strategy=strategy,
        loss=loss_module,
        bounds=bounds if has_finite_bounds(bounds) else None,
        jac=jac_mode,
        **solver_options,
    )
    model = PositionalModel(f)
    data = Data(xdata_arr, ydata, sigma=sigma)
    try:
        state = init(model, data, p0, solver)
    except ValueError as error:
        raise ValueError(
            str(error).replace("`y`", "`ydata`").replace("`x`", "`xdata`")
        ) from error
    return model, data, state


@jaxtyped(typechecker=beartype)
def curve_fit(
    f: Callable,
    xdata: Any,
    ydata: ArrayLikeOrSequence,
    p0: ArrayLikeOrSequence | None = None,
    sigma: ArrayLikeOrSequence | None = None,
    absolute_sigma: bool = False,
    check_finite: bool | None = None,
    bounds: tuple[Any, Any] = (-np.inf, np.inf),
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
) -> tuple:
    """Fit ``f(xdata, *params)`` to `ydata`, as `scipy.optimize.curve_fit`.

    Returns ``(popt, pcov)``, or ``(popt, pcov, infodict, mesg, ier)`` with
    `full_output`. `pcov` is computed exactly as SciPy does (pseudo-inverse of
    ``JᵀJ`` from the loss-scaled Jacobian, times the reduced chi-square unless
    `absolute_sigma`). `method` defaults to ``"lm"`` without bounds and ``"trf"`` with
    them; `jac` defaults to JAX's exact Jacobian. `f` must be written with `jax.numpy`.
    Raises `RuntimeError` when the fit fails, like SciPy.
    """
    del check_finite  # Non-finite data are always rejected (or omitted by nan_policy).
    options = dict(ftol=ftol, xtol=xtol, gtol=gtol, max_nfev=max_nfev, x_scale=x_scale)
    model, data, state = prepare_curve_fit(
        f, xdata, ydata, p0, sigma, bounds, method, jac, nan_policy, loss, f_scale,
        options,
    )
    solution = _solve(model, data, state)
    if not bool(solution.success):
        raise RuntimeError("Optimal parameters not found: " + solution.message)
    pcov = covariance_from_jacobian(
        solution.jac, solution.cost, int(data.n_points), absolute_sigma
    )
    if not bool(jnp.all(jnp.isfinite(pcov))):
        warnings.warn(
            "Covariance of the parameters could not be estimated",
            OptimizeWarning,
            stacklevel=2,
        )
    if full_output:
        infodict = dict(nfev=solution.nfev, fvec=solution.fun, solution=solution)
        return solution.x, pcov, infodict, solution.message, int(solution.status)
    return solution.x, pcov

