"""Progress reporting from inside the compiled loop: SciPy's iteration table
(``verbose=2``) and a user callback that may stop the fit.

Both go through host callbacks, so they cost nothing unless asked for: `solve` only
calls into this module when ``verbose == 2`` or a callback is set (both static).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from .._problem.host_errors import host_callback
from .._strategies.trust_region import RUNNING, STOPPED


def _column(value, spec):
    return " " * 15 if math.isnan(value) else format(value, spec)


def print_header() -> None:
    print(
        "{:^15}{:^15}{:^15}{:^15}{:^15}{:^15}".format(
            "Iteration", "Total nfev", "Cost", "Cost reduction", "Step norm", "Optimality"
        )
    )


def print_row(iteration, nfev, cost, cost_reduction, step_norm, optimality) -> None:
    """One line of SciPy's table; NaN leaves a column blank (as on iteration 0)."""
    print(
        f"{int(iteration):^15}{int(nfev):^15}{float(cost):^15.4e}"
        f"{_column(float(cost_reduction), '^15.2e')}{_column(float(step_norm), '^15.2e')}"
        f"{float(optimality):^15.2e}"
    )


def _host_start(cost, optimality):
    if np.ndim(cost):  # a batch (under vmap): one table per member would interleave
        print(
            f"verbose=2: {np.size(cost)} fits run as one batch (vmap); the iteration "
            "table is printed for single fits only."
        )
        return np.ones(np.shape(cost), bool)
    print_header()
    print_row(0, 1, cost, math.nan, math.nan, optimality)
    return np.asarray(True)


def _host_row(finished, iteration, nfev, cost, reduction, step_norm, optimality):
    if np.ndim(finished) == 0 and finished:
        print_row(iteration, nfev, cost, reduction, step_norm, optimality)
    return np.ones(np.shape(finished), bool)


def _print_on_host(host, *args):
    """Call `host` once, with whole batches under vmap (``expand_dims``), so that it
    can tell a batch from a single fit. Its answer (always True) is returned to be
    folded into the loop's status: a used result keeps the call (and its place in the
    sequence of iterations) alive."""
    return host_callback(
        host, jax.ShapeDtypeStruct((), jnp.bool_), *args, vmap_method="expand_dims"
    )


def report_start(cost, optimality):
    """Traced: the table's header and iteration 0 (True, to be used by the caller)."""
    return _print_on_host(_host_start, cost, optimality)


def _finished_iteration(old, new):
    # A member of a batch that has already stopped is stepped again (and the step
    # discarded) while others run: it reports nothing more.
    return (new.nit > old.nit) & (old.status == RUNNING)


def report_iteration(old, new, optimality):
    """Traced: a row when an iteration has finished (a step accepted, or the end);
    True, to be used by the caller."""
    return _print_on_host(
        _host_row,
        _finished_iteration(old, new),
        new.nit,
        new.nfev,
        new.linearization.cost,
        old.linearization.cost - new.linearization.cost,
        jnp.linalg.norm(new.x - old.x),
        optimality,
    )


def ask_callback(callback, finished, iteration, params, cost, grad):
    """Traced: call ``callback(iteration, params, cost, grad)`` on the host after a
    finished iteration; True (as a traced bool) when it asks to stop (returns True or
    raises `StopIteration`)."""

    def host(finished, iteration, params, cost, grad):
        if not finished:
            return np.asarray(False)
        try:
            return np.asarray(bool(callback(int(iteration), params, cost, grad)))
        except StopIteration:  # SciPy's way of stopping (1.16+)
            return np.asarray(True)

    # A pure callback (whose answer is used, so it is never dropped) rather than an IO
    # one: JAX supports it in a while loop under `vmap`, one host call per member.
    return host_callback(
        host,
        jax.ShapeDtypeStruct((), jnp.bool_),
        finished,
        iteration,
        params,
        cost,
        grad,
        vmap_method="sequential",
    )


def after_iteration(old, new, state, unravel, optimality_of):
    """Report and consult the callback after one pass of the loop body; returns the
    status, set to `STOPPED` when the callback asks to stop."""
    status = new.status
    if state.verbose == 2:
        printed = report_iteration(old, new, optimality_of(new.x, new.linearization))
        status = jnp.where(printed, status, STOPPED).astype(status.dtype)
    if state.callback is not None:
        finished = _finished_iteration(old, new)
        stop = ask_callback(
            state.callback,
            finished,
            new.nit,
            unravel(new.x),
            new.linearization.cost,
            new.linearization.grad,
        )
        status = jnp.where(stop & (status == RUNNING), STOPPED, status).astype(status.dtype)
    return status


def print_final_report(solution) -> None:
    """``verbose >= 1``: SciPy's closing lines."""
    print(solution.message)
    print(
        f"Function evaluations {int(solution.nfev)}, initial cost "
        f"{float(solution.initial_cost):.4e}, final cost {float(solution.cost):.4e}, "
        f"first-order optimality {float(solution.optimality):.2e}."
    )
