"""SciPy's conventions at the front ends: its callbacks, tolerances, `Bounds` objects
and warning class, without importing SciPy (it is only looked up when the user has
already imported it)."""

import inspect
import sys
from collections.abc import Callable

import equinox as eqx
import numpy as np

from .._misc import warn_user
from .._results.optimize_result import OptimizeResult

EPS = float(np.finfo(float).eps)


class OptimizeWarning(UserWarning):
    """The covariance could not be estimated, for all or some parameters (as SciPy's
    warning of that name)."""


def warn_optimize(message: str) -> None:
    """Warn with `OptimizeWarning`; when SciPy is already imported, with a subclass of
    SciPy's `OptimizeWarning` too, so that code (and tests) written for SciPy catch it."""
    category = OptimizeWarning
    scipy_optimize = sys.modules.get("scipy.optimize")
    scipy_class = getattr(scipy_optimize, "OptimizeWarning", None)
    if isinstance(scipy_class, type) and issubclass(scipy_class, Warning):
        category = _both_warnings(scipy_class)
    warn_user(message, category)


_BOTH: dict = {}


def _both_warnings(scipy_class):
    if scipy_class not in _BOTH:
        _BOTH[scipy_class] = type("OptimizeWarning", (OptimizeWarning, scipy_class), {})
    return _BOTH[scipy_class]


def check_tolerances(ftol, xtol, gtol, method: str) -> tuple[float, float, float]:
    """SciPy's rules: None disables a criterion (0). `least_squares`: below machine
    epsilon warns; `lm` needs all three above epsilon, the others at least one.
    ``method="leastsq"`` (`curve_fit`'s 'lm'): MINPACK takes any tolerance >= 0, with
    no warning (the core checks the signs, and that one is positive)."""
    if method == "leastsq":
        f, x, g = (0.0 if tol is None else float(tol) for tol in (ftol, xtol, gtol))
        return f, x, g

    def check(tol, name):
        if tol is None:
            return 0.0
        if tol < EPS:
            warn_user(
                f"Setting `{name}` below the machine epsilon ({EPS:.2e}) effectively "
                "disables the corresponding termination condition."
            )
        return float(tol)

    ftol, xtol, gtol = check(ftol, "ftol"), check(xtol, "xtol"), check(gtol, "gtol")
    if method == "lm" and (ftol < EPS or xtol < EPS or gtol < EPS):
        raise ValueError(
            f"All tolerances must be higher than machine epsilon ({EPS:.2e}) for method 'lm'."
        )
    if ftol < EPS and xtol < EPS and gtol < EPS:
        raise ValueError(
            f"At least one of the tolerances must be higher than machine epsilon ({EPS:.2e})."
        )
    return ftol, xtol, gtol


class ScipyCallback(eqx.Module):
    """SciPy's ``callback(intermediate_result)`` or ``callback(x)`` seen as the core's
    ``callback(iteration, params, cost, grad) -> stop``. Raising `StopIteration` stops
    the fit, as in SciPy 1.16+. Equal callbacks give equal wrappers (shared compiled
    code)."""

    callback: Callable = eqx.field(static=True)
    with_result: bool = eqx.field(static=True)

    def __call__(self, iteration, params, cost, grad):
        x = np.array(params, dtype=float)
        try:
            if self.with_result:
                self.callback(
                    intermediate_result=OptimizeResult(
                        x=x, cost=float(cost), nit=int(iteration), grad=np.asarray(grad)
                    )
                )
            else:
                self.callback(x)
        except StopIteration:
            return True
        return False


class GuideCallback(eqx.Module):
    """The NLSQ guide's ``callback(iteration, cost, grad)`` seen as the core's
    ``callback(iteration, params, cost, grad) -> stop``; returning True stops the fit."""

    callback: Callable = eqx.field(static=True)

    def __call__(self, iteration, params, cost, grad):
        return bool(self.callback(iteration, cost, grad))


def _required_positional(callback) -> int | None:
    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):
        return None
    return sum(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        for p in parameters
    )


def as_core_callback(callback: Callable | None) -> Callable | None:
    """The core's four-argument callback from any of the accepted forms:
    ``callback(intermediate_result)`` (by that parameter name, as SciPy decides),
    ``callback(x)``, the NLSQ guide's ``callback(iteration, cost, grad)``, or nlsq_fn's
    own ``callback(iteration, params, cost, grad)``."""
    if callback is None:
        return None
    if not callable(callback):
        raise TypeError(f"`callback` must be callable or None, got {type(callback).__name__}.")
    try:
        names = set(inspect.signature(callback).parameters)
    except (TypeError, ValueError):
        names = set()
    if names == {"intermediate_result"}:
        return ScipyCallback(callback, with_result=True)
    required = _required_positional(callback)
    if required == 4:
        return callback
    if required == 3:
        return GuideCallback(callback)
    if required is not None and required > 1:
        # Else it would fail inside the fit, called with the wrong arguments.
        raise TypeError(
            f"`callback` takes {required} required positional arguments; it must be "
            "callback(intermediate_result), callback(x), callback(iteration, cost, grad) "
            "or callback(iteration, params, cost, grad)."
        )
    return ScipyCallback(callback, with_result=False)


def finite_difference_options(diff_step) -> dict:
    """``diff_step`` for the core `Solver` when it takes one (finite-difference
    Jacobians, ``jac="2-point"`` and co.); with JAX's exact Jacobian a step size means
    nothing, so without such a field it is dropped."""
    from .._drivers.solver import Solver

    if diff_step is None or "diff_step" not in Solver.__dataclass_fields__:
        return {}
    return {"diff_step": diff_step}
