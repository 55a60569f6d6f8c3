"""``CurveFit``: a reusable, compiled curve fit (NLSQ's class), over `init` and `solve`.

The data, `p0`, `sigma` and bounds are traced arrays, so new values of the same shape
never recompile. With ``pad=True`` one compiled program also serves every dataset of the
same size bucket: data are padded to the next power of two (at least 16 points) and the
padding is masked out. Padding is opt-in because it changes what the model sees (a model
using ``x.mean()`` or ``x.size`` would be fitted to other data), and it is checked: the
padded model must reproduce the unpadded one at `p0`. (A fit with no finite bound at all
uses TRF's simpler unbounded step, a second compiled variant.)
"""

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PyTree

from .._drivers import progress as _progress
from .._drivers.refit import FitProgram, fit_program, fit_programs, hashable, slot_arrays
from .._drivers.solve import solve, with_jacobian
from .._drivers.solver import (
    Solver,
    build_state,
    check_start_and_bounds,
    flat_values,
    init,
    raise_for_start,
    start_flags,
)
from .._drivers.stepwise import solve_stepwise_while_cheaper
from .._evaluation.chunking import same_on_pieces
from .._evaluation.compiled import compiled, limit_programs
from .._evaluation.program_store import stored
from .._misc import is_concrete
from .._problem.arguments import as_bounds, as_count, as_flag, as_real, as_verbose
from .._problem.conventions import (
    NamedModel,
    UnpackedJacobian,
    UnpackedModel,
    count_values,
    is_named_model,
    model_convention,
    parameter_names,
)
from .._problem.data import Data, check_data_values
from .._problem.host_errors import reraise_host_errors
from .._problem.host_model import call_on_host, traced_shape
from .._problem.loss import AbstractLoss, Linear, as_loss
from .._results.covariance import covariance_parts
from .._results.fit_result import CurveFitResult
from .._results.solution import Solution
from .._strategies.trust_region import IMPROPER_INPUT
from .least_squares import has_finite_bounds, strategy_for
from .reusable_fitter import ReusableFitter
from .scipy_compat import (
    OptimizeWarning,
    as_core_callback,
    check_tolerances,
    finite_difference_options,
    warn_optimize,
)
from .structured import expand_result, expand_solution, parameter_structure

__all__ = ["CurveFit", "FitSolution", "OptimizeWarning"]


def _broadcast_to_model(model, xdata, p0, ydata):
    """A scalar `ydata` as an array shaped like the model's values at `p0` (SciPy
    subtracts it from them, broadcasting)."""
    out, error = traced_shape(model, xdata, p0)
    if error is not None:
        out = call_on_host(model, xdata, p0)
    return np.broadcast_to(ydata, np.shape(out)).astype(float)


class _Inputs(NamedTuple):
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


# The `Solution` fields a `CurveFitResult` carries (as NumPy).
_SOLUTION_FIELDS = (
    "x",
    "cost",
    "fun",
    "jac",
    "grad",
    "optimality",
    "active_mask",
    "nfev",
    "njev",
    "nit",
    "status",
    "success",
    "initial_cost",
)


class _Unset:
    """Marks an argument that was not given (None is a valid `x`: SciPy passes it on)."""

    def __repr__(self):
        return "<not given>"


UNSET = _Unset()


class WhitenedModel(eqx.Module):
    """``L⁻¹ model(x, params)`` for a covariance ``sigma = L Lᵀ`` (SciPy's 2-D `sigma`):
    with ``y`` whitened the same way, the residuals are ``L⁻¹ (model - y)``."""

    model: Callable
    cholesky: Float[Array, "m m"]

    def __call__(self, x, params):
        prediction = self.model(x, params)
        return jax.scipy.linalg.solve_triangular(self.cholesky, prediction, lower=True)

    def around_host(self, on_host: Callable) -> "WhitenedModel":
        """The whitening in JAX around the model run on the host (`on_host(model)`)."""
        return WhitenedModel(on_host(self.model), self.cholesky)


class _ByIdentity:
    """A NumPy array held in static configuration (the `Solver`'s `jac`), which must be
    hashable: compared by identity."""

    def __init__(self, array):
        self.array = np.asarray(array)


class WhitenedJacobian(eqx.Module):
    """``L⁻¹ jac(x, params)``: the user's `jac` for the whitened residuals."""

    jac: Callable
    cholesky: _ByIdentity

    def __call__(self, x, params):
        cholesky = jnp.asarray(self.cholesky.array)
        jac = jnp.reshape(self.jac(x, params), (cholesky.shape[0], -1))
        return jax.scipy.linalg.solve_triangular(cholesky, jac, lower=True)


class FitSolution(eqx.Module):
    """What `CurveFit.fit` returns when it runs under `jax.jit`, `jax.vmap` or
    `jax.grad` (traced inputs): a pytree of JAX arrays with the fields of
    `CurveFitResult` that need no concrete values: the core's `Solution` (its fields,
    `x`, `cost`, `fun`, `jac`, ..., `status`, `success`, read through), `pcov`, the
    Jacobian's `rank` and `p0`. Batched fits give a leading batch axis on every field."""

    solution: Solution
    pcov: Float[Array, "n n"]
    rank: Int[Array, ""]
    p0: PyTree = None

    def __getattr__(self, name):
        # Only reached for names the module does not have: the `Solution`'s fields.
        if name.startswith("__") or name == "solution":
            raise AttributeError(name)
        return getattr(self.solution, name)

    @property
    def popt(self):
        return self.solution.x

    @property
    def cov(self):
        return self.pcov

    @property
    def perr(self):
        """Standard errors, ``sqrt(diag(pcov))``."""
        return jnp.sqrt(jnp.diagonal(self.pcov, axis1=-2, axis2=-1))

    stderr = perr

    def __iter__(self):
        return iter((self.popt, self.pcov))


# How many times the fit has been traced (each trace is one compilation): tests read it.
trace_count = 0


@compiled
def _fit(model, data, state):
    """The whole fit as one compiled program: the checks of the model at the start,
    the solve, the covariance's parts. (Every other compiled program on the way,
    even an eager `jnp` call, would be one more compilation in a fresh process.)"""
    global trace_count
    trace_count += 1
    # `prepare` leaves these checks to this program (`raise_for_start` after it);
    # a model run on the host was checked there.
    checks = None if state.host_model else start_flags(model, data, state)
    solution = solve(model, data, state)
    # A chunked fit (large data, `chunk_size="auto"`) never formed J; the covariance
    # comes from its n x n factor (same singular values), the returned `jac` from one
    # more evaluation.
    if solution.jac is not None:
        parts = covariance_parts(solution.jac, solution.cost, data.n_points)
        # No one reads the factor of J here: leaving it out of the outputs lets XLA
        # drop its QR from the program.
        solution = eqx.tree_at(lambda s: s.factor, solution, None)
    else:
        parts = covariance_parts(solution.factor, solution.cost, data.n_points)
    # `absolute_sigma` is applied outside: one compiled program serves both settings.
    return with_jacobian(model, data, state, solution), parts, checks


_covariance_parts = stored(covariance_parts)


def _fit_stepwise(function, model, data, state):
    """`_fit` driven from Python (`solve_stepwise`) while that is cheaper than compiling
    it for the user's `function`: nothing compiled for the model, so a new model's first
    fit costs milliseconds instead of a compilation. Else None: then `_fit`."""
    solution = solve_stepwise_while_cheaper(function, model, data, state)
    if solution is None:
        return None
    # Input `init` accepted is improper only where the model or cost is not finite at
    # the start: then (only) the checks that say which.
    checks = start_flags(model, data, state) if solution.status == IMPROPER_INPUT else None
    parts = _covariance_parts(solution.jac, solution.cost, data.n_points)
    return solution, parts, checks


def any_finite_bound(bounds) -> bool:
    bounds = as_bounds(bounds)
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


def pad_points(leaf, m, size):
    leaf = np.asarray(leaf)
    axis = points_axis(leaf, m)
    if axis is None or size == m:
        return leaf
    widths = [(0, 0)] * leaf.ndim
    widths[axis] = (0, size - m)
    return np.pad(leaf, widths, mode="edge")  # repeat a real input: the model stays finite


def _check_padding_changes_nothing(model, x, padded: Data, x_padded, p0, m, first: bool):
    """Raise unless the model, on the padded data as the fit evaluates it (the padded
    rows masked: `Data.model_x`), gives on the first `m` points what it gives on `x`
    at `p0`, in values and slopes: padding must never change what the model sees.

    On the first padded fit of a `CurveFit` that is checked exactly, against the model
    on the unpadded `x`. Later fits must not compile anything for a new length, so they
    are checked at the padded size: the model's first `m` outputs must not move when
    the padded rows hold other inputs (those of the last point instead of the first),
    which shows that they do not depend on the padding (a mean, a maximum, a sum of
    all points would move). Where both paddings are the same inputs, exactly again."""
    fitted_x = padded.model_x
    rows = slice(0, m)
    distinct = any(
        not np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(jax.tree.leaves(fitted_x), jax.tree.leaves(x_padded), strict=True)
    )
    if first or not distinct:
        same = same_on_pieces(model, x, p0, [(fitted_x, rows, rows)])
    else:
        same = same_on_pieces(model, fitted_x, p0, [(x_padded, rows, rows)])
    if same:
        return
    raise ValueError(
        f"pad=True needs a pointwise model (each output depending only on its own "
        f"point), but on these {m} points padded to {padded.y.shape[0]} this model gives "
        "other values (it uses `x` as a whole, e.g. x.mean(), x.size or a convolution). "
        "Use pad=False."
    )


def _omit_or_raise_nan(xdata, ydata, sigma, nan_policy, x_is_array):
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


def _init_message(error, names, no_p0, style) -> str:
    """An error of `init` in the words of `curve_fit`, with a hint where the model got
    one scalar parameter by SciPy's rule for lack of `p0`."""
    message = _user_message(error, names)
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


def _user_message(error, names) -> str:
    """A core error in the words of `curve_fit`'s arguments."""
    message = str(error).replace("`y`", "`ydata`").replace("`x`", "`xdata`")
    # The core names flat parameters p[0], p[1], ...: use the model's names.
    return re.sub(r"\bp\[(\d+)\]", lambda m: f"'{names[int(m[1])]}'", message)


class CurveFit(ReusableFitter):
    """A curve fit that compiles once and can be rerun on new data (NLSQ's class).

    Its model's first fits run step by step (nothing compiled for the model, see
    `nlsq_fn._drivers.stepwise`); once they have taken about a second the whole fit is compiled
    once and reused. With ``pad=True`` (made to be reused) it is compiled at once.

    ``CurveFit(model, x, y, p0, ...).fit()``. The model takes its parameters in one of
    two ways, told apart by the rule documented in `nlsq_fn._problem.conventions`:

    - the NLSQ guide's ``model(x, params)``: one array of parameters (indexed,
      unpacked, ``len(params)``, ``params.at[i]``); a user ``jac(x, params)`` returns
      the ``(m, n)`` Jacobian;
    - SciPy's ``f(x, a, b, c)``: one argument per parameter, whose names appear in
      reports; a user ``jac(x, a, b, c)`` returns ``(m, n)``;

    or it is a model of `nlsq_fn.models` (named parameters, initial values from its
    ``guess(x, y)`` when `p0` is None). ``f(x, q)`` with a single parameter after `x`
    is ambiguous: it takes the array when `p0` has several values or ``q`` is named
    like a vector (``params``, ``p``, ``theta``...), a scalar otherwise or without
    `p0` (SciPy's one-parameter model);
    ``param_style="array"`` / ``"unpacked"`` overrides the rule.

    The other arguments mean what they mean in `scipy.optimize.curve_fit` /
    `least_squares` (SciPy's keyword names ``f``, ``xdata``, ``ydata`` are accepted as
    well as the guide's ``model``, ``x``, ``y``); in addition

    - `sigma`: 1-D standard deviations, or a 2-D covariance matrix (residuals whitened
      by its Cholesky factor, as SciPy);
    - `bounds`: a pair, a `scipy.optimize.Bounds` or a dict ``{name: (lower, upper)}``;
    - `verbose`: 0, 1 (termination report) or 2 (SciPy's iteration table, printed from
      inside the compiled loop);
    - `callback`: ``callback(iteration, params, cost, grad)`` after each iteration,
      returning True (or raising `StopIteration`) stops the fit (status -3); SciPy's
      ``callback(intermediate_result)`` and ``callback(x)`` work too;
    - `fixed`, `ties`: ``fixed={"b": 1.3}`` holds parameters at values, ``ties={"c":
      lambda p: 2 * p["a"]}`` makes them functions of the free and fixed ones (`p` by
      name). The fit varies the free parameters only (`p0` and `bounds` may be given for
      all parameters or for the free ones; a fixed value must lie within its bounds, a
      tie cannot be bounded); the result covers all of them, in the model's order, with
      the covariance propagated (``E C Eᵀ``, ``E`` the Jacobian of the map free -> all),
      and its `fixed` / `tied` fields and `summary()` mark them;
    - `pad`: False (default) fits exactly the data given, compiling once per data
      shape. True pads the data to size buckets (powers of two, masked) so that new
      lengths reuse compiled code; only for pointwise models (each output depending on
      its own point only), which is checked on the first fit.

    `fit()` fits the data given here; ``fit(x, y, p0=..., sigma=...)`` fits new data
    with the same model and options. It returns a `CurveFitResult` (NumPy values,
    statistics, report) and does not raise when the fit fails (check
    ``result.success``). Inside `jax.jit`, `jax.vmap` or `jax.grad` (traced data, `p0`,
    `sigma` or bounds, or a model closing over traced arrays) it returns a
    `FitSolution` pytree of JAX arrays instead, without warnings or printing.
    """

    def __init__(
        self,
        model: Callable | None = None,
        x=UNSET,
        y=None,
        p0=None,
        sigma=None,
        absolute_sigma: bool = False,
        bounds=(-np.inf, np.inf),
        method: str | None = None,
        loss: str | Callable | AbstractLoss = "linear",
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
        param_style: str | None = None,
        diff_step=None,
        *,
        f: Callable | None = None,
        xdata=UNSET,
        ydata=None,
        fixed: dict | None = None,
        ties: dict | None = None,
        flength=None,
        use_dynamic_sizing: bool = False,
        **nlsq_options,
    ):
        if model is None and f is None:
            self._become_reusable(flength, use_dynamic_sizing, nlsq_options)
            return
        if nlsq_options:
            raise TypeError(
                f"CurveFit() got an unexpected keyword argument {next(iter(nlsq_options))!r}."
            )
        model = _one_of(model, f, "model", "f", None)
        x = _one_of(x, xdata, "x", "xdata", UNSET)
        y = _one_of(y, ydata, "y", "ydata", None)
        if not callable(model):
            raise TypeError(
                "`model` must be callable: model(x, params), f(x, *params) or an "
                f"nlsq_fn model; got {type(model).__name__}."
            )
        verbose = as_verbose(verbose)
        absolute_sigma = as_flag(absolute_sigma, "absolute_sigma")
        ftol, xtol, gtol = (
            None if tol is None else as_real(tol, name)
            for tol, name in ((ftol, "ftol"), (xtol, "xtol"), (gtol, "gtol"))
        )
        f_scale = as_real(f_scale, "f_scale")
        max_nfev = as_count(max_nfev, "max_nfev")
        # Step-by-step fits are charged to the user's function (a structured model,
        # holding arrays, cannot be remembered).
        self.timing_key = model
        self.structure = None
        if fixed or ties:
            # The fit is one of the free parameters (`StructuredModel`, an array model);
            # `fit` expands its result to all of them.
            self.structure = parameter_structure(model, p0, fixed, ties, param_style)
            bounds = self.structure.free_bounds(bounds)  # checks the fixed values
            model, param_style = self.structure, "array"
        self.f = model
        self.xdata, self.ydata, self.p0, self.sigma = x, y, p0, sigma
        self.absolute_sigma = bool(absolute_sigma)
        self.bounds = as_bounds(bounds)
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
        # SciPy's curve_fit runs 'lm' through `leastsq`, with MINPACK's rules.
        rules = "leastsq" if method == "lm" else method
        ftol, xtol, gtol = check_tolerances(ftol, xtol, gtol, rules)
        self.tolerances = dict(ftol=ftol, xtol=xtol, gtol=gtol)
        self.max_nfev = max_nfev
        self.verbose = verbose
        self.callback = as_core_callback(callback)
        self.nan_policy = nan_policy
        self.pad = bool(pad)
        self._model_checked = False
        self._padding_checked = False
        self.param_style = param_style
        model_convention(model, None, param_style)  # validates param_style early
        self.named = is_named_model(model)

    def _has_bounds(self):
        return any_finite_bound(self.bounds)

    def _convention(self, p0):
        """``(style, wrapped model, names or None)`` for this `p0`."""
        style = model_convention(self.f, p0, self.param_style)
        n = None
        if p0 is not None and not isinstance(p0, dict):
            n = count_values(p0)
        names = parameter_names(self.f, style, n)
        if style == "named":
            return style, NamedModel(self.f, names), names
        if style == "unpacked":
            return style, UnpackedModel(self.f), names
        return style, self.f, names

    def _initial_params(self, p0, xdata, ydata, style, names):
        if style == "named":
            values = {}
            if p0 is None or isinstance(p0, dict):
                given = dict(p0 or {})
                if not set(names) <= set(given):  # complete p0 from the guess
                    values = dict(self.f.guess(xdata, ydata))
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
                f"`p0` has {p0.size} values but the model has {len(names)} "
                f"parameters {list(names)}."
            )
        return p0

    @staticmethod
    def _flat_bounds(bounds, names):
        bounds = as_bounds(bounds)
        if not isinstance(bounds, dict):
            return bounds
        unknown = set(bounds) - set(names)
        if unknown:
            raise ValueError(f"`bounds` names unknown parameters {sorted(unknown)}.")
        lower = [bounds.get(name, (-np.inf, np.inf))[0] for name in names]
        upper = [bounds.get(name, (-np.inf, np.inf))[1] for name in names]
        return np.asarray(lower, float), np.asarray(upper, float)

    def _jacobian(self, style):
        if callable(self.jac):
            return UnpackedJacobian(self.jac) if style == "unpacked" else self.jac
        if self.jac is None or self.jac in ("fwd", "rev", "2-point", "3-point", "cs"):
            # SciPy's finite-difference names are passed on to the core's Solver.
            return self.jac or "fwd"
        raise ValueError(
            "`jac` must be a callable, None, 'fwd', 'rev', '2-point', '3-point' or 'cs', "
            f"got {self.jac!r}."
        )

    def _solver(self, bounds, style, **overrides):
        """The core `Solver` for these options; `overrides` replace fields (the streaming
        optimizer sets its own `factorization` and `chunk_size`)."""
        options = (
            dict(jac=self._jacobian(style)) | finite_difference_options(self.diff_step) | overrides
        )
        return Solver(
            strategy=self.strategy,
            loss=self.loss,
            bounds=bounds if has_finite_bounds(bounds) else None,
            x_scale=self.x_scale,
            max_nfev=self.max_nfev,
            # Only the table is printed from inside the loop; verbose=1 reports after
            # the fit and shares the compiled code of verbose=0.
            verbose=2 if self.verbose == 2 else 0,
            callback=self.callback,
            **self.tolerances,
            **options,
        )

    def _resolve(self, x, y, p0, sigma, bounds):
        if self.f is None:
            raise TypeError(
                "This CurveFit() was made without a model (NLSQ's reusable fitter): "
                "call .curve_fit(f, xdata, ydata, p0) instead of .fit()."
            )
        bounds = self.bounds if bounds is None else as_bounds(bounds)
        if any_finite_bound(bounds) and not self.strategy.supports_bounds:
            raise ValueError(
                "This CurveFit uses method='lm', which doesn't support bounds; create it "
                "with method='trf' (or with bounds)."
            )
        x = self.xdata if x is UNSET else x
        y = self.ydata if y is None else y
        p0 = self.p0 if p0 is None else p0
        sigma = self.sigma if sigma is None else sigma
        if x is UNSET or y is None:
            raise ValueError("Give `x` and `y` (to CurveFit or to fit).")
        if self.structure is not None:
            # p0 and bounds of all parameters (or of the free ones: then this changes
            # nothing, so resolving twice is harmless) as those of the free ones.
            full_bounds = self.structure.bounds_of_all(bounds)
            p0 = self.structure.free_p0(p0, x, y, full_bounds)
            free = self.structure.free_indices()
            bounds = full_bounds[0][free], full_bounds[1][free]
        return x, y, p0, sigma, bounds

    @reraise_host_errors
    def prepare(self, xdata=UNSET, ydata=None, p0=None, sigma=None, bounds=None):
        """Validate and pad the inputs: ``(model, data, state, unpadded)`` where
        `unpadded` holds the cleaned NumPy data of the counted points."""
        return self._build(self._validated(xdata, ydata, p0, sigma, bounds))

    def _validated(self, xdata, ydata, p0, sigma, bounds) -> "_Inputs":
        """The user's values checked and in NumPy (what every fit needs, whether it
        builds its inputs or refits a compiled program)."""
        xdata, ydata, p0, sigma, bounds = self._resolve(xdata, ydata, p0, sigma, bounds)
        ydata = np.asarray(ydata)
        if ydata.size == 0:
            raise ValueError("`ydata` must not be empty!")
        if not np.issubdtype(ydata.dtype, np.number) or np.iscomplexobj(ydata):
            raise ValueError(f"`ydata` must be real numbers, got dtype {ydata.dtype}.")
        ydata = ydata.astype(float)
        x_is_array = xdata is not None and not isinstance(xdata, (dict, tuple))
        if x_is_array:
            xdata = np.asarray(xdata)
            if np.issubdtype(xdata.dtype, np.integer) or xdata.dtype == bool:
                xdata = xdata.astype(float)
        xdata, ydata, sigma = _omit_or_raise_nan(xdata, ydata, sigma, self.nan_policy, x_is_array)
        sigma, cholesky = _check_sigma(sigma, ydata)
        style, model, names = self._convention(p0)
        no_p0 = p0 is None and style != "named"
        p0 = self._initial_params(p0, xdata, ydata, style, names)
        names = names or tuple(f"p{i}" for i in range(p0.size))
        if ydata.ndim == 0:  # SciPy broadcasts a scalar `ydata` against f's values
            ydata = _broadcast_to_model(model, xdata, p0, ydata)
        if no_p0 and any_finite_bound(bounds):
            lower, upper = self._flat_bounds(bounds, names)
            p0 = feasible_start(lower, upper, p0.size)
        if self.method == "lm" and ydata.size < p0.size:
            raise TypeError(
                f"The number of func parameters={p0.size} must not exceed the number of "
                f"data points={ydata.size}"
            )
        flat_bounds = self._flat_bounds(bounds, names)
        return _Inputs(xdata, ydata, sigma, cholesky, style, model, names, no_p0, p0, flat_bounds)

    def _build(self, inputs: "_Inputs"):
        """`prepare`'s ``(model, data, state, unpadded)`` from validated inputs."""
        xdata, ydata, sigma, cholesky, style, model, names, no_p0, p0, flat_bounds = inputs
        unpadded = dict(xdata=xdata, ydata=ydata, sigma=sigma, names=names)
        solver = self._solver(flat_bounds, style)
        m = ydata.shape[0] if ydata.ndim == 1 else None
        if cholesky is not None:  # correlated errors: whitened, not padded
            model = WhitenedModel(model, jnp.asarray(cholesky))
            if callable(solver.jac):  # (a static field: a new Solver, not `tree_at`)
                whitened = WhitenedJacobian(solver.jac, _ByIdentity(cholesky))
                solver = self._solver(flat_bounds, style, jac=whitened)
            white_y = np.linalg.solve(cholesky, ydata)  # triangular: exact enough
            data = Data(xdata, white_y)
        elif self.pad and m is not None and _has_points_axis(xdata, m):
            size = bucket_size(m)
            x_padded = jax.tree.map(lambda leaf: pad_points(leaf, m, size), xdata)
            if not self._model_checked:
                self._check_model_on(model, xdata, ydata, p0, names)
                self._model_checked = True
            y_padded = np.pad(ydata, (0, size - m))
            sigma_padded = (
                None if sigma is None else np.pad(sigma, (0, size - m), constant_values=1.0)
            )
            mask = np.arange(size) < m
            data = Data(x_padded, y_padded, sigma=sigma_padded, mask=mask)
            if size != m:
                # Every fit, on its own data: a model may be pointwise on one dataset
                # and not on another (x.mean() moves with the padding of each).
                _check_padding_changes_nothing(
                    model, xdata, data, x_padded, p0, m, first=not self._padding_checked
                )
                self._padding_checked = True
        else:
            data = Data(xdata, ydata, sigma=sigma)
        try:
            # The model's values at the start are checked inside the compiled fit.
            state = build_state(model, data, p0, solver, check_start=False)
        except ValueError as error:
            raise ValueError(_init_message(error, names, no_p0, style)) from error
        return model, data, state, unpadded

    def _check_model_on(self, model, xdata, ydata, p0, names):
        """`init`'s model checks on the unpadded data, so errors name the user's sizes."""
        try:
            init(model, Data(xdata, ydata), p0, Solver(strategy=self.strategy))
        except ValueError as error:
            raise ValueError(_user_message(error, names)) from error

    @reraise_host_errors
    def fit(
        self, x=UNSET, y=None, p0=None, sigma=None, bounds=None, *, xdata=UNSET, ydata=None
    ) -> "CurveFitResult | FitSolution":
        """Fit (new) data; arguments not given are the ones given to `CurveFit`. New
        values of all of them reuse the compiled fit, as long as the data stay in the
        same size bucket and `sigma` stays given (or not). Traced inputs (inside
        `jax.jit`, `jax.vmap`, `jax.grad`) give a `FitSolution` pytree."""
        x = _one_of(x, xdata, "x", "xdata", UNSET)
        y = _one_of(y, ydata, "y", "ydata", None)
        resolved = self._resolve(x, y, p0, sigma, bounds)
        if self.structure is None:
            return self._fit_resolved(resolved)
        fitted = self._fit_resolved(resolved)
        if isinstance(fitted, FitSolution):
            return expand_solution(self.structure, fitted)
        return expand_result(self.structure, fitted)

    def _fit_resolved(self, resolved) -> "CurveFitResult | FitSolution":
        if not is_concrete(*resolved):
            return self._fit_traced(*resolved)
        inputs = self._validated(*resolved)
        key = self._refit_key(inputs)
        program = None if key is None else fit_programs.get(self.timing_key, key)
        if program is not None:
            return self._refit(program, inputs)
        model, data, state, unpadded = self._build(inputs)
        limit_programs()
        fitted = None
        # A model's first fits run step by step (nothing compiled for it); once they
        # have cost what a compilation would, and for a padded CurveFit (made to be
        # reused), the whole fit is compiled once and reused.
        if not self.pad:
            fitted = _fit_stepwise(self.timing_key, model, data, state)
        if fitted is None and key is not None and not state.chunk_size:
            program = fit_program(_fit.__wrapped__, model, data, state)
            if program is not None:
                fit_programs.put(self.timing_key, key, program)
                fitted = program(**slot_arrays(data, state))
        fitted = fitted or _fit(model, data, state)
        solution, parts, _ = fitted
        m = unpadded["ydata"].size
        if not is_concrete(solution):  # the model closes over traced arrays
            return _fit_solution(solution, parts, self.absolute_sigma, m, state.params)
        return self._result(inputs, model, (state.params, state.lower, state.upper), fitted)

    def _refit_key(self, inputs: "_Inputs") -> tuple | None:
        """What shapes this fit's `(model, data, state)` besides the values a
        `FitProgram` fills in; None where a refit builds them anew: padding, correlated
        errors and fixed or tied parameters hold arrays of their own, `x` as a pytree is
        not a slot, and chunks are proved on each dataset (`_fit_resolved` keeps only
        one-shot fits)."""
        x, y = inputs.xdata, inputs.ydata
        if (
            self.pad
            or self.structure is not None
            or inputs.cholesky is not None
            or not isinstance(x, np.ndarray)
            or y.ndim == 0
        ):
            return None
        try:
            options = (
                self.method,
                self.strategy,
                self.loss,
                hashable(self.x_scale),
                self.jac,
                hashable(self.diff_step),
                tuple(self.tolerances.values()),
                self.max_nfev,
                self.verbose,
                self.callback,
                self.nan_policy,
                self.param_style,
            )
            hash(options)
        except TypeError:
            return None
        return (
            options,
            bool(jax.config.jax_enable_x64),  # (the program's dtypes follow it)
            inputs.style,
            inputs.names,
            (x.shape, x.dtype.str),
            y.shape,
            inputs.sigma is None,
            inputs.p0.size,
            has_finite_bounds(inputs.flat_bounds),
        )

    def _refit(self, program: FitProgram, inputs: "_Inputs") -> "CurveFitResult":
        """A fit on the structure of an earlier one: its compiled program, called with the
        new values after the same value checks as `init`'s."""
        x, y, sigma, p0 = inputs.xdata, inputs.ydata, inputs.sigma, inputs.p0
        lower, upper = (
            np.asarray(flat_values(bound, p0, name, p0.dtype))
            for bound, name in zip(inputs.flat_bounds, ("lower bound", "upper bound"), strict=True)
        )
        try:
            check_data_values(y, x, sigma)
            check_start_and_bounds(p0, p0, lower, upper, self.strategy)
        except ValueError as error:
            message = _init_message(error, inputs.names, inputs.no_p0, inputs.style)
            raise ValueError(message) from error
        fitted = program(
            x=[x],
            y=[y],
            sigma=[] if sigma is None else [sigma],
            params=[p0],
            lower=[lower],
            upper=[upper],
        )
        return self._result(inputs, program.model, (p0, lower, upper), fitted)

    def _result(self, inputs: "_Inputs", model, start, fitted) -> "CurveFitResult":
        """The `CurveFitResult` of a concrete fit: its start's checks raised, the
        covariance, SciPy's warnings."""
        solution, parts, checks = fitted
        names = inputs.names
        if checks is not None:
            try:
                raise_for_start(*checks)
            except ValueError as error:
                message = _init_message(error, names, inputs.no_p0, inputs.style)
                raise ValueError(message) from error
        # NumPy from here on: an eager `jnp` call would compile a program each.
        parts = jax.tree.map(np.asarray, parts)
        pcov = np.asarray(parts.covariance(self.absolute_sigma))
        rank, singular_values = parts.rank, parts.singular_values
        if self.verbose >= 1:
            _progress.print_final_report(solution)
        params, lower, upper = (np.asarray(value) for value in start)
        n_params = lower.size
        if int(rank) < n_params:
            undetermined = np.flatnonzero(np.asarray(parts.undetermined))
            warn_optimize(
                f"Covariance of the parameters could not be estimated for "
                f"{[names[i] for i in undetermined]}: the Jacobian at the solution has "
                f"rank {int(rank)} < {n_params} parameters, so the data do not determine "
                "them (their variances are inf)."
            )
        elif not np.all(np.isfinite(pcov)):
            warn_optimize("Covariance of the parameters could not be estimated")
        fields = {name: np.asarray(getattr(solution, name)) for name in _SOLUTION_FIELDS}
        m = inputs.ydata.size
        fields["fun"] = fields["fun"][:m]
        fields["jac"] = fields["jac"][:m]
        return CurveFitResult(
            model=model.model if isinstance(model, WhitenedModel) else model,
            pcov=pcov,
            absolute_sigma=self.absolute_sigma,
            lower=lower,
            upper=upper,
            rank=int(rank),
            singular_values=np.asarray(singular_values),
            method=self.method,
            loss=type(self.loss).__name__,
            loss_function=self.loss,  # (with its f_scale: for `profile_interval`)
            p0=params,
            xdata=inputs.xdata,
            ydata=inputs.ydata,
            sigma=inputs.sigma,
            names=names,
            **fields,
        )

    def _fit_traced(self, x, y, p0, sigma, bounds) -> "FitSolution":
        """The pure path: `init` and `solve` on JAX arrays, no padding, no NumPy, no
        warnings (it runs inside a transformation)."""
        if self.nan_policy == "omit":
            raise ValueError(
                "nan_policy='omit' needs concrete data (it changes the number of points); "
                "it cannot be used inside jax.jit / jax.vmap / jax.grad."
            )
        y = jnp.asarray(y)
        if not jnp.issubdtype(y.dtype, jnp.inexact):
            y = y.astype(jnp.result_type(float))
        if isinstance(x, (list, np.ndarray)) or (
            isinstance(x, jax.Array) and not jnp.issubdtype(x.dtype, jnp.inexact)
        ):
            x = jnp.asarray(x, jnp.result_type(float))
        cholesky = None
        if sigma is not None:
            sigma = jnp.asarray(sigma, y.dtype)
            if sigma.ndim == 2 and y.ndim == 1 and sigma.shape == (y.size, y.size):
                cholesky, sigma = jnp.linalg.cholesky(sigma), None
            elif sigma.size != 1 and sigma.shape != y.shape:
                raise ValueError(f"`sigma` has shape {sigma.shape} but `y` has shape {y.shape}.")
        style, model, names = self._convention(p0)
        p0 = self._initial_params(p0, x, y, style, names)
        names = names or tuple(f"p{i}" for i in range(p0.size))
        solver = self._solver(self._flat_bounds(bounds, names), style)
        if cholesky is not None:
            model = WhitenedModel(model, cholesky)
            if callable(solver.jac):
                solver = eqx.tree_at(
                    lambda s: s.jac, solver, WhitenedJacobian(solver.jac, cholesky)
                )
            y = jax.scipy.linalg.solve_triangular(cholesky, y, lower=True)
        data = Data(x, y, sigma=sigma)
        state = init(model, data, p0, solver)
        solution = solve(model, data, state)
        parts = covariance_parts(solution.jac, solution.cost, data.n_points)
        return _fit_solution(solution, parts, self.absolute_sigma, y.size, state.params)


def _has_points_axis(xdata, m) -> bool:
    """Whether some array in `xdata` runs along the points (so a padded `x` gives a
    padded prediction); a model that ignores `x` (SciPy allows ``xdata=None``) is not
    padded."""
    return any(points_axis(leaf, m) is not None for leaf in jax.tree.leaves(xdata))


def _one_of(value, alias, name, alias_name, unset):
    """The guide's keyword (`model`, `x`, `y`) or SciPy's (`f`, `xdata`, `ydata`)."""
    if alias is unset:
        return value
    if value is not unset:
        raise TypeError(f"Give `{name}` or `{alias_name}`, not both.")
    return alias


def _check_sigma(sigma, ydata):
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
        raise ValueError(
            f"`sigma` has shape {sigma.shape} but `ydata` has shape {ydata.shape}; give "
            f"standard deviations of that shape, a scalar, or a {ydata.size}x{ydata.size} "
            "covariance matrix."
        )
    return np.broadcast_to(sigma, ydata.shape), None


def _fit_solution(solution, parts, absolute_sigma, m, p0) -> FitSolution:
    """The traced fit's result; `fun` and `jac` without the padded rows."""
    solution = eqx.tree_at(lambda s: (s.fun, s.jac), solution, (solution.fun[:m], solution.jac[:m]))
    return FitSolution(solution, parts.covariance(absolute_sigma), parts.rank, p0)
