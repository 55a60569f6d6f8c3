"""``CurveFit``: a reusable, compiled curve fit (NLSQ's class), over `init` and `solve`.

One compiled program serves every dataset of the same size bucket: data are padded to
the next power of two (at least 16 points) and the padding is masked out, and the data,
`p0`, `sigma` and bounds are traced arrays, so new values never recompile. (A fit with no
finite bound at all uses TRF's simpler unbounded step, a second compiled variant.)
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
from ._covariance import covariance_parts
from ._data import Data
from ._fit_result import CurveFitResult
from ._least_squares import has_finite_bounds, strategy_for
from ._loss import AbstractLoss, Linear, as_loss
from ._solve import solve, with_jacobian
from ._solver import Solver, init


class OptimizeWarning(UserWarning):
    """The covariance could not be estimated, or only as a pseudo-inverse (as SciPy's
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


def _pad_last_axis(leaf, m, size):
    leaf = np.asarray(leaf)
    if leaf.ndim == 0 or leaf.shape[-1] != m or size == m:
        return leaf
    widths = [(0, 0)] * (leaf.ndim - 1) + [(0, size - m)]
    return np.pad(leaf, widths, mode="edge")  # repeat a real input: the model stays finite


def _omit_or_raise_nan(xdata, ydata, sigma, nan_policy, x_is_array):
    if nan_policy not in (None, "raise", "omit"):
        raise ValueError("nan_policy must be one of {None, 'raise', 'omit'}")
    y_nan = np.isnan(ydata)
    x_nan = np.zeros(ydata.shape, bool)
    if x_is_array and np.issubdtype(xdata.dtype, np.floating) and xdata.shape[-1:] == (
        ydata.shape[-1:]
    ):
        x_nan = np.isnan(xdata)
        x_nan = x_nan.any(axis=tuple(range(x_nan.ndim - 1))) if x_nan.ndim > 1 else x_nan
    if nan_policy == "raise" and (y_nan.any() or x_nan.any()):
        where = "`ydata`" if y_nan.any() else "`xdata`"
        raise ValueError(f"The input contains nan values ({where}).")
    if nan_policy == "omit" and (y_nan.any() or x_nan.any()):
        if ydata.ndim != 1:
            raise ValueError("nan_policy='omit' needs 1-D `ydata`.")
        keep = ~(y_nan | x_nan)
        ydata = ydata[keep]
        if x_is_array:
            xdata = xdata[..., keep]
        if sigma is not None and np.ndim(sigma) == 1:
            sigma = np.asarray(sigma)[keep]
    return xdata, ydata, sigma


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
    - `pad`: pad the data to size buckets (powers of two) so that new lengths reuse
      compiled code; False compiles for each exact shape.

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
        pad: bool = True,
    ):
        if not callable(f):
            raise TypeError("`f` must be callable: f(x, *params) or an nlsq_fn model.")
        if verbose not in (0, 1, 2):
            raise ValueError(f"`verbose` must be 0, 1 or 2, got {verbose!r}.")
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
        self.tolerances = dict(ftol=ftol, xtol=xtol, gtol=gtol)
        self.max_nfev = max_nfev
        self.verbose = verbose
        self.callback = callback
        self.nan_policy = nan_policy
        self.pad = pad
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
        elif p0 is None:
            if self.names is None:
                raise ValueError("Unable to determine the number of fit parameters; give `p0`.")
            p0 = np.ones(len(self.names))
        p0 = np.atleast_1d(np.asarray(p0, dtype=float))
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
        if self.jac in (None, "fwd", "rev"):
            return self.jac or "fwd"
        raise ValueError(f"`jac` must be a callable, None, 'fwd' or 'rev', got {self.jac!r}.")

    def prepare(self, xdata=None, ydata=None, p0=None, sigma=None, bounds=None):
        """Validate and pad the inputs: ``(model, data, state, unpadded)`` where
        `unpadded` holds the cleaned NumPy data of the counted points."""
        bounds = self.bounds if bounds is None else bounds
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
        if not np.issubdtype(ydata.dtype, np.number):
            raise ValueError(f"`ydata` must be numeric, got dtype {ydata.dtype}.")
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
        p0 = self._initial_params(p0, xdata, ydata)
        names = self.names or tuple(f"p{i}" for i in range(p0.size))
        if self.method == "lm" and ydata.size < p0.size:
            raise TypeError(
                f"The number of func parameters={p0.size} must not exceed the number of "
                f"data points={ydata.size}"
            )
        unpadded = dict(xdata=xdata, ydata=ydata, sigma=sigma, names=names)
        m = ydata.shape[0] if ydata.ndim == 1 else None
        if self.pad and m is not None:
            size = bucket_size(m)
            x_padded = jax.tree.map(lambda leaf: _pad_last_axis(leaf, m, size), xdata)
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
            # Only the table is printed from inside the loop; verbose=1 reports after
            # the fit and shares the compiled code of verbose=0.
            verbose=2 if self.verbose == 2 else 0,
            callback=self.callback,
            **self.tolerances,
        )
        try:
            state = init(self.model, data, p0, solver)
        except ValueError as error:
            message = str(error).replace("`y`", "`ydata`").replace("`x`", "`xdata`")
            # The core names flat parameters p[0], p[1], ...: use the model's names.
            message = re.sub(r"\bp\[(\d+)\]", lambda m: f"'{names[int(m[1])]}'", message)
            raise ValueError(message) from error
        return self.model, data, state, unpadded

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
        if not np.all(np.isfinite(pcov)):
            warnings.warn(
                "Covariance of the parameters could not be estimated",
                OptimizeWarning,
                stacklevel=2,
            )
        elif int(rank) < n_params:
            warnings.warn(
                f"The Jacobian at the solution has rank {int(rank)} < {n_params} "
                "parameters: `pcov` is a pseudo-inverse and some parameter combinations "
                "are not determined by the data.",
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
