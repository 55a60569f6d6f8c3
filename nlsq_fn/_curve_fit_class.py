"""``CurveFit``: a reusable, compiled curve fit (NLSQ's class), over `init` and `solve`.

The data, `p0`, `sigma` and bounds are traced arrays, so new values of the same shape
never recompile. With ``pad=True`` one compiled program also serves every dataset of the
same size bucket: data are padded to the next power of two (at least 16 points) and the
padding is masked out. Padding is opt-in because it changes what the model sees (a model
using ``x.mean()`` or ``x.size`` would be fitted to other data), and it is checked: the
padded model must reproduce the unpadded one at `p0`. (A fit with no finite bound at all
uses TRF's simpler unbounded step, a second compiled variant.)
"""

import inspect
import re
import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _progress
from ._arguments import as_bounds, as_count, as_flag, as_real, as_verbose
from ._covariance import covariance_parts
from ._data import Data
from ._fit_result import CurveFitResult
from ._least_squares import has_finite_bounds, strategy_for
from ._loss import AbstractLoss, Linear, as_loss
from ._solve import solve, with_jacobian
from ._solver import Solver, init


class OptimizeWarning(UserWarning):
    """The covariance could not be estimated, for all or some parameters (as SciPy's
    warning of that name)."""


class PositionalModel(eqx.Module):
    """``f(x, *params)`` (SciPy's convention) seen as ``model(x, params)``. The
    function is a static field: wrappers of the same function compare and hash equal,
    so they share compiled code."""

    f: Callable = eqx.field(static=True)

    def __call__(self, x, params):
        return self.f(x, *params)


class NamedModel(eqx.Module):
    """A model taking a dict of named parameters (`nlsq_fn.models`), seen as a model of
    the flat parameter vector in the order of `names`."""

    model: Callable = eqx.field(static=True)
    names: tuple[str, ...] = eqx.field(static=True)

    def __call__(self, x, params):
        return self.model(x, {name: params[i] for i, name in enumerate(self.names)})


class PositionalJacobian(eqx.Module):
    jac: Callable = eqx.field(static=True)

    def __call__(self, x, params):
        return self.jac(x, *params)


# How many times the fit has been traced (each trace is one compilation): tests read it.
trace_count = 0


@eqx.filter_jit
def _fit(model, data, state):
    global trace_count
    trace_count += 1
    solution = solve(model, data, state)
    # A chunked fit (large data, `chunk_size="auto"`) never formed J; the covariance
    # comes from its n x n factor (same singular values), the returned `jac` from one
    # more evaluation.
    reduced = solution.jac if solution.jac is not None else solution.factor
    parts = covariance_parts(reduced, solution.cost, data.n_points)
    # `absolute_sigma` is applied outside: one compiled program serves both settings.
    return with_jacobian(model, data, state, solution), parts


def parameter_names(f: Callable) -> tuple[str, ...] | None:
    """Names of the fit parameters of ``f(x, p1, p2, ...)``, None if ``*args``."""
    names = getattr(f, "param_names", None)
    if names is not None:
        return tuple(names)
    try:
        parameters = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return None
    positional = [
        p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return tuple(positional[1:]) if len(positional) >= 2 else None


def _finite(bounds) -> bool:
    if isinstance(bounds, dict):
        return any(has_finite_bounds(pair) for pair in bounds.values())
    return has_finite_bounds(bounds)


def bucket_size(m: int) -> int:
    """Padded length for `m` points: the next power of two, at least 16."""
    return max(16, 1 << (int(m) - 1).bit_length())


def points_axis(leaf, m: int) -> int | None:
    """The axis of an `x` array that counts the `m` points: the last one in SciPy's
    ``(k, M)`` convention, else the first (one row per point, as a DataFrame)."""
    shape = np.shape(leaf)
    if len(shape) == 0:
        return None
    if shape[-1] == m:
        return len(shape) - 1
    return 0 if shape[0] == m else None


def _pad_points(leaf, m, size):
    leaf = np.asarray(leaf)
    axis = points_axis(leaf, m)
    if axis is None or size == m:
        return leaf
    widths = [(0, 0)] * leaf.ndim
    widths[axis] = (0, size - m)
    return np.pad(leaf, widths, mode="edge")  # repeat a real input: the model stays finite


def _check_pointwise(model, x, x_padded, p0, m):
    """Raise unless the model on the padded `x` gives, on the first `m` points, what it
    gives on `x` at `p0`: padding must never change the data the model sees."""
    exact = np.asarray(model(x, p0), dtype=float)
    padded = np.asarray(model(x_padded, p0), dtype=float)
    if padded.ndim != 1 or padded.shape[0] < m:
        raise ValueError(
            f"pad=True: the model returns shape {padded.shape} on the padded data; it must "
            "return one value per point. Use pad=False."
        )
    scale = np.max(np.abs(exact), initial=0.0)
    if exact.shape != (m,) or not np.allclose(
        padded[:m], exact, rtol=1e-9, atol=1e-12 * scale, equal_nan=True
    ):
        raise ValueError(
            "pad=True needs a pointwise model (each output depending only on its own "
            "point), but this model gives other values on the padded data (it uses `x` "
            "as a whole, e.g. x.mean(), x.size or a convolution). Use pad=False."
        )


def _omit_or_raise_nan(xdata, ydata, sigma, nan_policy, x_is_array):
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


def _user_message(error, names) -> str:
    """A core error in the words of `curve_fit`'s arguments."""
    message = str(error).replace("`y`", "`ydata`").replace("`x`", "`xdata`")
    # The core names flat parameters p[0], p[1], ...: use the model's names.
    return re.sub(r"\bp\[(\d+)\]", lambda m: f"'{names[int(m[1])]}'", message)


class CurveFit:
    """A curve fit that compiles once and can be rerun on new data (NLSQ's class).

    `f` is either SciPy-style, ``f(x, p1, p2, ...)``, or a model of `nlsq_fn.models`
    (named parameters, initial values from its ``guess(x, y)`` when `p0` is None).
    The other arguments mean what they mean in `scipy.optimize.curve_fit` /
    `least_squares`; in addition

    - `bounds` may be a dict ``{name: (lower, upper)}``;
    - `verbose`: 0, 1 (termination report) or 2 (SciPy's iteration table, printed from
      inside the compiled loop);
    - `callback`: ``callback(iteration, params, cost, grad)`` after each iteration;
      returning True stops the fit (status -3);
    - `pad`: False (default) fits exactly the data given, compiling once per data
      shape. True pads the data to size buckets (powers of two, masked) so that new
      lengths reuse compiled code; only for pointwise models (each output depending on
      its own point only), which is checked on the first fit.

    `fit()` fits the data given here; ``fit(xdata, ydata, p0=..., sigma=...)`` fits new
    data with the same model and options. It returns a `CurveFitResult` and does not
    raise when the fit fails (check ``result.success``).
    """

    def __init__(
        self,
        f: Callable,
        xdata=None,
        ydata=None,
        p0=None,
        sigma=None,
        absolute_sigma: bool = False,
        bounds=(-np.inf, np.inf),
        method: str | None = None,
        loss: str | AbstractLoss = "linear",
        f_scale: float = 1.0,
        x_scale=None,
        jac: Callable | str | None = None,
        ftol: float = 1e-8,
        xtol: float = 1e-8,
        gtol: float = 1e-8,
        max_nfev: int | None = None,
        verbose: int = 0,
        callback: Callable | None = None,
        nan_policy: str | None = None,
        pad: bool = False,
        diff_step=None,
    ):
        if not callable(f):
            raise TypeError("`f` must be callable: f(x, *params) or an nlsq_fn model.")
        verbose = as_verbose(verbose)
        absolute_sigma = as_flag(absolute_sigma, "absolute_sigma")
        ftol, xtol, gtol = as_real(ftol, "ftol"), as_real(xtol, "xtol"), as_real(gtol, "gtol")
        f_scale = as_real(f_scale, "f_scale")
        max_nfev = as_count(max_nfev, "max_nfev")
        bounds = as_bounds(bounds)
        self.f = f
        self.xdata, self.ydata, self.p0, self.sigma = xdata, ydata, p0, sigma
        self.absolute_sigma = bool(absolute_sigma)
        self.bounds = bounds
        self.loss = as_loss(loss, f_scale)
        if method is None:
            robust = not isinstance(self.loss, Linear)
            method = "trf" if robust or self._has_bounds() else "lm"
        if method == "lm" and not isinstance(self.loss, Linear):
            raise ValueError("method='lm' supports only the 'linear' loss; use 'trf'.")
        self.method = method
        self.strategy = strategy_for(method, self._has_bounds())
        self.x_scale = x_scale
        self.jac = jac
        self.diff_step = diff_step
        self.tolerances = dict(ftol=ftol, xtol=xtol, gtol=gtol)
        self.max_nfev = max_nfev
        self.verbose = verbose
        self.callback = callback
        self.nan_policy = nan_policy
        self.pad = bool(pad)
        self._pointwise_checked = False
        self.named = hasattr(f, "param_names") and hasattr(f, "guess")
        self.names = parameter_names(f)
        self.model = NamedModel(f, self.names) if self.named else PositionalModel(f)

    def _has_bounds(self):
        return _finite(self.bounds)

    def _initial_params(self, p0, xdata, ydata):
        if self.named:
            values = {}
            if p0 is None or isinstance(p0, dict):
                given = dict(p0 or {})
                if not set(self.names) <= set(given):  # complete p0 from the guess
                    values = dict(self.f.guess(xdata, ydata))
                values.update(given)
                unknown = set(values) - set(self.names)
                if unknown:
                    raise ValueError(
                        f"`p0` names unknown parameters {sorted(unknown)}; the model's "
                        f"parameters are {list(self.names)}."
                    )
                p0 = [values[name] for name in self.names]
        elif isinstance(p0, dict):  # by name, as a `bounds` dict: in the signature's order
            if self.names is None:
                raise ValueError("`p0` as a dict needs a model with named parameters.")
            unknown, missing = set(p0) - set(self.names), set(self.names) - set(p0)
            if unknown or missing:
                raise ValueError(
                    f"`p0` must name each of the model's parameters {list(self.names)}; "
                    f"unknown: {sorted(unknown)}, missing: {sorted(missing)}."
                )
            p0 = [p0[name] for name in self.names]
        elif p0 is None:
            if self.names is None:
                raise ValueError("Unable to determine the number of fit parameters; give `p0`.")
            p0 = np.ones(len(self.names))
        p0 = np.atleast_1d(np.asarray(p0))
        if np.iscomplexobj(p0) or p0.dtype.kind not in "biuf":
            raise ValueError(f"`p0` must be real numbers, got dtype {p0.dtype}.")
        p0 = p0.astype(float)
        if p0.size == 0:
            raise ValueError("`p0` has no parameters.")
        if p0.ndim != 1:
            raise ValueError(f"`p0` must be 1-D, got shape {p0.shape}.")
        if self.names is not None and len(self.names) != p0.size:
            raise ValueError(
                f"`p0` has {p0.size} values but the model has {len(self.names)} "
                f"parameters {list(self.names)}."
            )
        return p0

    @staticmethod
    def _flat_bounds(bounds, names):
        if not isinstance(bounds, dict):
            return bounds
        unknown = set(bounds) - set(names)
        if unknown:
            raise ValueError(f"`bounds` names unknown parameters {sorted(unknown)}.")
        lower = [bounds.get(name, (-np.inf, np.inf))[0] for name in names]
        upper = [bounds.get(name, (-np.inf, np.inf))[1] for name in names]
        return np.asarray(lower, float), np.asarray(upper, float)

    def _jacobian(self):
        if callable(self.jac):
            return PositionalJacobian(self.jac)
        if self.jac in (None, "fwd", "rev", "2-point", "3-point", "cs"):
            return self.jac or "fwd"
        raise ValueError(
            "`jac` must be a callable, None, 'fwd', 'rev', '2-point', '3-point' or 'cs', "
            f"got {self.jac!r}."
        )

    def prepare(self, xdata=None, ydata=None, p0=None, sigma=None, bounds=None):
        """Validate and pad the inputs: ``(model, data, state, unpadded)`` where
        `unpadded` holds the cleaned NumPy data of the counted points."""
        bounds = self.bounds if bounds is None else as_bounds(bounds)
        if _finite(bounds) and not self.strategy.supports_bounds:
            raise ValueError(
                "This CurveFit uses method='lm', which doesn't support bounds; create it "
                "with method='trf' (or with bounds)."
            )
        xdata = self.xdata if xdata is None else xdata
        ydata = self.ydata if ydata is None else ydata
        p0 = self.p0 if p0 is None else p0
        sigma = self.sigma if sigma is None else sigma
        if xdata is None or ydata is None:
            raise ValueError("Give `xdata` and `ydata` (to CurveFit or to fit).")
        ydata = np.asarray(ydata)
        if ydata.size == 0:
            raise ValueError("`ydata` must not be empty!")
        if not np.issubdtype(ydata.dtype, np.number) or np.iscomplexobj(ydata):
            raise ValueError(f"`ydata` must be real numbers, got dtype {ydata.dtype}.")
        ydata = ydata.astype(float)
        x_is_array = not isinstance(xdata, (dict, tuple))
        if x_is_array:
            xdata = np.asarray(xdata)
            if np.issubdtype(xdata.dtype, np.integer) or xdata.dtype == bool:
                xdata = xdata.astype(float)
        xdata, ydata, sigma = _omit_or_raise_nan(
            xdata, ydata, sigma, self.nan_policy, x_is_array
        )
        if sigma is not None:
            sigma = np.asarray(sigma, dtype=float)
            if sigma.ndim > 1 and ydata.ndim == 1:
                raise ValueError(
                    "`sigma` must be 1-D standard deviations (2-D covariance matrices are "
                    "not supported)."
                )
            if sigma.size != 1 and sigma.shape != ydata.shape:
                raise ValueError(
                    f"`sigma` has shape {sigma.shape} but `ydata` has shape {ydata.shape}."
                )
            sigma = np.broadcast_to(sigma, ydata.shape)
        no_p0 = p0 is None and not self.named
        p0 = self._initial_params(p0, xdata, ydata)
        names = self.names or tuple(f"p{i}" for i in range(p0.size))
        if no_p0 and _finite(bounds):
            p0 = feasible_start(*self._flat_bounds(bounds, names), p0.size)
        if self.method == "lm" and ydata.size < p0.size:
            raise TypeError(
                f"The number of func parameters={p0.size} must not exceed the number of "
                f"data points={ydata.size}"
            )
        unpadded = dict(xdata=xdata, ydata=ydata, sigma=sigma, names=names)
        m = ydata.shape[0] if ydata.ndim == 1 else None
        if self.pad and m is not None:
            size = bucket_size(m)
            x_padded = jax.tree.map(lambda leaf: _pad_points(leaf, m, size), xdata)
            if not self._pointwise_checked:
                # Once per CurveFit: checking every fit would cost eager compilations
                # for each new length, the very thing padding is there to avoid.
                self._check_model_on(xdata, ydata, p0, names)
                _check_pointwise(self.model, xdata, x_padded, p0, m)
                self._pointwise_checked = True
            y_padded = np.pad(ydata, (0, size - m))
            sigma_padded = None if sigma is None else np.pad(
                sigma, (0, size - m), constant_values=1.0
            )
            mask = np.arange(size) < m
            data = Data(x_padded, y_padded, sigma=sigma_padded, mask=mask)
        else:
            data = Data(xdata, ydata, sigma=sigma)
        bounds = self._flat_bounds(bounds, names)
        solver = Solver(
            strategy=self.strategy,
            loss=self.loss,
            bounds=bounds if has_finite_bounds(bounds) else None,
            x_scale=self.x_scale,
            max_nfev=self.max_nfev,
            jac=self._jacobian(),
            diff_step=self.diff_step,
            # Only the table is printed from inside the loop; verbose=1 reports after
            # the fit and shares the compiled code of verbose=0.
            verbose=2 if self.verbose == 2 else 0,
            callback=self.callback,
            **self.tolerances,
        )
        try:
            state = init(self.model, data, p0, solver)
        except ValueError as error:
            raise ValueError(_user_message(error, names)) from error
        return self.model, data, state, unpadded

    def _check_model_on(self, xdata, ydata, p0, names):
        """`init`'s model checks on the unpadded data, so errors name the user's sizes."""
        try:
            init(self.model, Data(xdata, ydata), p0, Solver(strategy=self.strategy))
        except ValueError as error:
            raise ValueError(_user_message(error, names)) from error

    def fit(self, xdata=None, ydata=None, p0=None, sigma=None, bounds=None) -> CurveFitResult:
        """Fit (new) data; arguments not given are the ones given to `CurveFit`. New
        values of all of them reuse the compiled fit, as long as the data stay in the
        same size bucket and `sigma` stays given (or not)."""
        model, data, state, unpadded = self.prepare(xdata, ydata, p0, sigma, bounds)
        solution, parts = _fit(model, data, state)
        pcov = parts.covariance(self.absolute_sigma)
        rank, singular_values = parts.rank, parts.singular_values
        if self.verbose >= 1:
            _progress.print_final_report(solution)
        n_params = state.lower.size
        pcov = np.asarray(pcov)
        if int(rank) < n_params:
            undetermined = np.flatnonzero(np.asarray(parts.undetermined))
            names = unpadded["names"]
            warnings.warn(
                f"Covariance of the parameters could not be estimated for "
                f"{[names[i] for i in undetermined]}: the Jacobian at the solution has "
                f"rank {int(rank)} < {n_params} parameters, so the data do not determine "
                "them (their variances are inf).",
                OptimizeWarning,
                stacklevel=2,
            )
        elif not np.all(np.isfinite(pcov)):
            warnings.warn(
                "Covariance of the parameters could not be estimated",
                OptimizeWarning,
                stacklevel=2,
            )
        m = unpadded["ydata"].size
        fields = {
            name: np.asarray(getattr(solution, name))
            for name in (
                "x", "cost", "fun", "jac", "grad", "optimality", "active_mask", "nfev",
                "njev", "nit", "status", "success", "initial_cost",
            )
        }
        fields["fun"] = fields["fun"][:m]
        fields["jac"] = fields["jac"][:m]
        return CurveFitResult(
            model=model,
            pcov=pcov,
            absolute_sigma=self.absolute_sigma,
            lower=np.asarray(state.lower),
            upper=np.asarray(state.upper),
            rank=int(rank),
            singular_values=np.asarray(singular_values),
            method=self.method,
            loss=type(self.loss).__name__,
            p0=np.asarray(jnp.asarray(state.params)),
            **unpadded,
            **fields,
        )
