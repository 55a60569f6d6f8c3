"""What a concrete curve fit returns: the `CurveFitResult` of a fit's outputs, with its
start's checks raised, the covariance and SciPy's warnings."""

import jax
import numpy as np

from .._drivers import progress as _progress
from .._drivers.start import raise_for_start
from .._problem.whitening import WhitenedModel
from .._results.covariance import scaled_covariance
from .._results.fit_result import CurveFitResult, solution_fields
from .curve_fit_inputs import Inputs, init_message
from .scipy_compat import warn_optimize


def curve_fit_result(fitter, inputs: Inputs, model, start, fitted) -> CurveFitResult:
    """The `CurveFitResult` of `fitter`'s (a `CurveFit`) concrete fit: its start's
    checks raised, the covariance, SciPy's warnings."""
    solution, parts, checks = fitted
    names = inputs.names
    if checks is not None:
        try:
            raise_for_start(*checks)
        except ValueError as error:
            message = init_message(error, names, inputs.no_p0, inputs.style)
            raise ValueError(message) from error
    # NumPy from here on: an eager `jnp` call would compile a program each.
    parts = jax.tree.map(np.asarray, parts)
    pcov = np.asarray(scaled_covariance(parts, fitter.absolute_sigma))
    rank, singular_values = parts.rank, parts.singular_values
    if fitter.verbose >= 1:
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
    fields = solution_fields(solution)
    m = inputs.ydata.size
    fields["fun"] = fields["fun"][:m]
    fields["jac"] = fields["jac"][:m]
    return CurveFitResult(
        model=model.model if isinstance(model, WhitenedModel) else model,
        pcov=pcov,
        absolute_sigma=fitter.absolute_sigma,
        lower=lower,
        upper=upper,
        rank=int(rank),
        singular_values=np.asarray(singular_values),
        method=fitter.method,
        loss=type(fitter.loss).__name__,
        loss_function=fitter.loss,  # (with its f_scale: for `profile_interval`)
        p0=params,
        xdata=inputs.xdata,
        ydata=inputs.ydata,
        sigma=inputs.sigma,
        names=names,
        **fields,
    )
