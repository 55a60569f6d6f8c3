"""``CurveFit``: a reusable, compiled curve fit (NLSQ's class), over `init` and `solve`.

The data, `p0`, `sigma` and bounds are traced arrays, so new values of the same shape
never recompile. With ``pad=True`` one compiled program also serves every dataset of the
same size bucket: data are padded to the next power of two (at least 16 points) and the
padding is masked out. Padding is opt-in because it changes what the model sees (a model
using ``x.mean()`` or ``x.size`` would be fitted to other data), and it is checked: the
padded model must reproduce the unpadded one at `p0`. (A fit with no finite bound at all
uses TRF's simpler unbounded step, a second compiled variant.)
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .._drivers.options import check_bounds_supported, strategy_for
from .._drivers.refit import (
    compile_when_refitted,
    compiled_in_background,
    fit_program,
    fit_programs,
    slot_arrays,
)
from .._drivers.solver import (
    Solver,
    build_state,
    init,
)
from .._drivers.whole_fit import whole_fit, whole_fit_stepwise
from .._evaluation.chunking import bucket_size
from .._evaluation.compiled import limit_programs
from .._evaluation.padding import (
    check_padding_changes_nothing,
    has_points_axis,
    pad_points,
)
from .._misc import is_concrete
from .._problem.arguments import as_bounds, as_count, as_flag, as_real, as_verbose
from .._problem.conventions import is_named_model, model_convention
from .._problem.data import Data
from .._problem.host_errors import reraise_host_errors
from .._problem.loss import AbstractLoss, Linear, as_loss
from .._problem.whitening import ByIdentity, WhitenedJacobian, WhitenedModel
from .._results.fit_result import CurveFitResult
from .._results.fit_solution import FitSolution, fit_solution
from .curve_fit_inputs import (
    UNSET,
    Inputs,
    any_finite_bound,
    broadcast_to_model,
    check_sigma,
    convention,
    core_solver,
    feasible_start,
    flat_bounds,
    init_message,
    initial_params,
    omit_or_raise_nan,
    one_of,
    user_message,
)
from .curve_fit_refit import refit, refit_key
from .curve_fit_result import curve_fit_result
from .curve_fit_traced import fit_traced
from .reusable_fitter import ReusableFitter
from .scipy_compat import (
    OptimizeWarning,
    as_core_callback,
    check_tolerances,
)
from .structured import expand_result, expand_solution, parameter_structure

__all__ = ["CurveFit", "FitSolution", "OptimizeWarning"]


class CurveFit(ReusableFitter):
    """A curve fit that compiles once and can be rerun on new data (NLSQ's class).

    Its model's first fits run step by step (nothing compiled for the model, see
    `nlsq_fn._drivers.stepwise`); from its second fit on data of the same kind the whole fit
    is compiled in a background thread (or, without one, once its fits have taken about a
    second) and then reused. With ``pad=True`` (made to be reused) it is compiled at once.

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
        model = one_of(model, f, "model", "f", None)
        x = one_of(x, xdata, "x", "xdata", UNSET)
        y = one_of(y, ydata, "y", "ydata", None)
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

    def _resolve(self, x, y, p0, sigma, bounds):
        if self.f is None:
            raise TypeError(
                "This CurveFit() was made without a model (NLSQ's reusable fitter): "
                "call .curve_fit(f, xdata, ydata, p0) instead of .fit()."
            )
        bounds = self.bounds if bounds is None else as_bounds(bounds)
        check_bounds_supported(self.strategy, any_finite_bound(bounds), "CurveFit")
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
        return self._build(self._validated(*self._resolve(xdata, ydata, p0, sigma, bounds)))

    def _validated(self, xdata, ydata, p0, sigma, bounds) -> "Inputs":
        """The user's values (as `_resolve` gives them) checked and in NumPy (what every
        fit needs, whether it builds its inputs or refits a compiled program)."""
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
        xdata, ydata, sigma = omit_or_raise_nan(xdata, ydata, sigma, self.nan_policy, x_is_array)
        sigma, cholesky = check_sigma(sigma, ydata)
        style, model, names = convention(self.f, p0, self.param_style)
        no_p0 = p0 is None and style != "named"
        p0 = initial_params(self.f, p0, xdata, ydata, style, names)
        names = names or tuple(f"p{i}" for i in range(p0.size))
        if ydata.ndim == 0:  # SciPy broadcasts a scalar `ydata` against f's values
            ydata = broadcast_to_model(model, xdata, p0, ydata)
        if no_p0 and any_finite_bound(bounds):
            lower, upper = flat_bounds(bounds, names)
            p0 = feasible_start(lower, upper, p0.size)
        if self.method == "lm" and ydata.size < p0.size:
            raise TypeError(
                f"The number of func parameters={p0.size} must not exceed the number of "
                f"data points={ydata.size}"
            )
        bounds_by_index = flat_bounds(bounds, names)
        return Inputs(
            xdata, ydata, sigma, cholesky, style, model, names, no_p0, p0, bounds_by_index
        )

    def _build(self, inputs: "Inputs"):
        """`prepare`'s ``(model, data, state, unpadded)`` from validated inputs."""
        xdata, ydata, sigma, cholesky, style, model, names, no_p0, p0, bounds_by_index = inputs
        unpadded = dict(xdata=xdata, ydata=ydata, sigma=sigma, names=names)
        solver = core_solver(self, bounds_by_index, style)
        m = ydata.shape[0] if ydata.ndim == 1 else None
        if cholesky is not None:  # correlated errors: whitened, not padded
            model = WhitenedModel(model, jnp.asarray(cholesky))
            if callable(solver.jac):  # (a static field: a new Solver, not `tree_at`)
                whitened = WhitenedJacobian(solver.jac, ByIdentity(cholesky))
                solver = core_solver(self, bounds_by_index, style, jac=whitened)
            white_y = np.linalg.solve(cholesky, ydata)  # triangular: exact enough
            data = Data(xdata, white_y)
        elif self.pad and m is not None and has_points_axis(xdata, m):
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
                check_padding_changes_nothing(
                    model, xdata, data, x_padded, p0, m, first=not self._padding_checked
                )
                self._padding_checked = True
        else:
            data = Data(xdata, ydata, sigma=sigma)
        try:
            # The model's values at the start are checked inside the compiled fit.
            state = build_state(model, data, p0, solver, check_start=False)
        except ValueError as error:
            raise ValueError(init_message(error, names, no_p0, style)) from error
        return model, data, state, unpadded

    def _check_model_on(self, model, xdata, ydata, p0, names):
        """`init`'s model checks on the unpadded data, so errors name the user's sizes."""
        try:
            init(model, Data(xdata, ydata), p0, Solver(strategy=self.strategy))
        except ValueError as error:
            raise ValueError(user_message(error, names)) from error

    @reraise_host_errors
    def fit(
        self, x=UNSET, y=None, p0=None, sigma=None, bounds=None, *, xdata=UNSET, ydata=None
    ) -> "CurveFitResult | FitSolution":
        """Fit (new) data; arguments not given are the ones given to `CurveFit`. New
        values of all of them reuse the compiled fit, as long as the data stay in the
        same size bucket and `sigma` stays given (or not). Traced inputs (inside
        `jax.jit`, `jax.vmap`, `jax.grad`) give a `FitSolution` pytree."""
        x = one_of(x, xdata, "x", "xdata", UNSET)
        y = one_of(y, ydata, "y", "ydata", None)
        resolved = self._resolve(x, y, p0, sigma, bounds)
        if self.structure is None:
            return self._fit_resolved(resolved)
        fitted = self._fit_resolved(resolved)
        if isinstance(fitted, FitSolution):
            return expand_solution(self.structure, fitted)
        return expand_result(self.structure, fitted)

    def _fit_resolved(self, resolved) -> "CurveFitResult | FitSolution":
        if not is_concrete(*resolved):
            return fit_traced(self, *resolved)
        inputs = self._validated(*resolved)
        key = refit_key(self, inputs)
        program = None if key is None else fit_programs.get(self.timing_key, key)
        if program is not None:
            return refit(self, program, inputs)
        model, data, state, unpadded = self._build(inputs)
        limit_programs()
        fitted = None
        # A model's first fits run step by step (nothing compiled for it); once they
        # have cost what a compilation would, and for a padded CurveFit (made to be
        # reused), the whole fit is compiled once and reused.
        if not self.pad:
            fitted = whole_fit_stepwise(self.timing_key, model, data, state)
        if fitted is not None and key is not None and not state.chunk_size:
            # A model fitted step by step a second time is being refitted: its compiled
            # fit is built meanwhile, in the background.
            compile_when_refitted(self.timing_key, key, whole_fit.__wrapped__, model, data, state)
        if fitted is None and key is not None and not state.chunk_size:
            program = compiled_in_background(self.timing_key, key) or fit_program(
                whole_fit.__wrapped__, model, data, state
            )
            if program is not None:
                fit_programs.put(self.timing_key, key, program)
                fitted = program(**slot_arrays(data, state))
        fitted = fitted or whole_fit(model, data, state)
        solution, parts, _ = fitted
        m = unpadded["ydata"].size
        if not is_concrete(solution):  # the model closes over traced arrays
            return fit_solution(solution, parts, self.absolute_sigma, m, state.params)
        return curve_fit_result(
            self, inputs, model, (state.params, state.lower, state.upper), fitted
        )
