"""A curve fit's whole fit, as one compiled program or step by step: the checks of the
model at the start, the solve and the covariance's parts, as `CurveFit` runs them on
concrete inputs (a settled refit calls the same program, `nlsq_fn._drivers.refit`)."""

import equinox as eqx

from .._evaluation.compiled import compiled
from .._evaluation.program_store import stored
from .._results.covariance import covariance_parts
from .._strategies.trust_region import IMPROPER_INPUT
from .solve import solve, with_jacobian
from .start import start_flags
from .stepwise import solve_stepwise_while_cheaper

# How many times the fit has been traced (each trace is one compilation): tests read it.
trace_count = 0


@compiled
def whole_fit(model, data, state):
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


covariance_parts_stored = stored(covariance_parts)


def whole_fit_stepwise(function, model, data, state):
    """`whole_fit` driven from Python (`solve_stepwise`) while that is cheaper than compiling
    it for the user's `function`: nothing compiled for the model, so a new model's first
    fit costs milliseconds instead of a compilation. Else None: then `whole_fit`."""
    solution = solve_stepwise_while_cheaper(function, model, data, state)
    if solution is None:
        return None
    # Input `init` accepted is improper only where the model or cost is not finite at
    # the start: then (only) the checks that say which.
    checks = start_flags(model, data, state) if solution.status == IMPROPER_INPUT else None
    parts = covariance_parts_stored(solution.jac, solution.cost, data.n_points)
    return solution, parts, checks
