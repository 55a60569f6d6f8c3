"""A `CurveFit`'s settled refit: the key of the compiled `FitProgram` a fit can reuse, and
the refit itself, with the same value checks as `init`'s (`nlsq_fn._drivers.refit`)."""

import jax
import numpy as np

from .._drivers.options import has_finite_bounds
from .._drivers.refit import FitProgram, hashable
from .._drivers.solver import flat_values
from .._drivers.start import check_start_and_bounds
from .._problem.data import check_data_values
from .._results.fit_result import CurveFitResult
from .curve_fit_inputs import Inputs, init_message
from .curve_fit_result import curve_fit_result


def refit_key(fitter, inputs: Inputs) -> tuple | None:
    """What shapes this fit's `(model, data, state)` besides the values a
    `FitProgram` fills in; None where a refit builds them anew: padding, correlated
    errors and fixed or tied parameters hold arrays of their own, `x` as a pytree is
    not a slot, and chunks are proved on each dataset (`CurveFit.fit` keeps only
    one-shot fits)."""
    x, y = inputs.xdata, inputs.ydata
    if (
        fitter.pad
        or fitter.structure is not None
        or inputs.cholesky is not None
        or not isinstance(x, np.ndarray)
        or y.ndim == 0
    ):
        return None
    try:
        options = (
            fitter.method,
            fitter.strategy,
            fitter.loss,
            hashable(fitter.x_scale),
            fitter.jac,
            hashable(fitter.diff_step),
            tuple(fitter.tolerances.values()),
            fitter.max_nfev,
            fitter.verbose,
            fitter.callback,
            fitter.nan_policy,
            fitter.param_style,
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


def refit(fitter, program: FitProgram, inputs: Inputs) -> CurveFitResult:
    """A fit on the structure of an earlier one: its compiled program, called with the
    new values after the same value checks as `init`'s."""
    x, y, sigma, p0 = inputs.xdata, inputs.ydata, inputs.sigma, inputs.p0
    lower, upper = (
        np.asarray(flat_values(bound, p0, name, p0.dtype))
        for bound, name in zip(inputs.flat_bounds, ("lower bound", "upper bound"), strict=True)
    )
    try:
        check_data_values(y, x, sigma)
        check_start_and_bounds(p0, p0, lower, upper, fitter.strategy)
    except ValueError as error:
        message = init_message(error, inputs.names, inputs.no_p0, inputs.style)
        raise ValueError(message) from error
    fitted = program(
        x=[x],
        y=[y],
        sigma=[] if sigma is None else [sigma],
        params=[p0],
        lower=[lower],
        upper=[upper],
    )
    return curve_fit_result(fitter, inputs, program.model, (p0, lower, upper), fitted)
