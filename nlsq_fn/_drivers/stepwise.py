"""The fit driven step by step from Python: a new model's fit without compiling it.

`solve` compiles the whole fit into one program: the model's evaluation and the
strategy's trust-region machinery, about a second for every new model. Only the
evaluation depends on the model. The strategy's steps (`start`, `propose`, `judge`, the
final optimality) depend on the number of parameters, the dtype and the options: they
are compiled once per such key (`nlsq_fn._drivers.host_loop`, as for streamed fits) and shared
by every model. This driver runs them from a Python loop and evaluates the model
between them op by op (JAX's eager dispatch, whose kernels are compiled once per shape
and reused by every model), so that a new model costs no compilation at all.

The same strategy code takes the same steps in the same order, so the result is
`solve`'s up to rounding (fused and unfused kernels may round differently). Only for
concrete inputs already validated by `init`; no derivatives through it (use `solve`).
"""

import contextlib
import threading
import time
import weakref
from collections.abc import Callable

import jax

from .._evaluation.linearize import Linearization, factorize, scale_for_loss
from .._evaluation.program_store import stored
from .._misc import is_concrete
from .._problem.data import Data
from .._results.solution import Solution, finished
from .._strategies.trust_region import RUNNING
from .adjoint import with_explicit_closure
from .evaluators import evaluator
from .linearize_at import problem_for, residual_and_jac
from .solver import SolverState
from .start import start_point
from .steps import judge_step, propose_step, start_loop


def can_step_from_host(state: SolverState) -> bool:
    """Whether `solve_stepwise` can drive this fit: a dense strategy with `propose` /
    `judge`, a JAX model in one shot, and no progress hooks (their table and callback
    are part of the compiled loop)."""
    return (
        state.strategy.steps_from_host
        and not getattr(state.strategy, "matrix_free", False)  # (its own linearization)
        and not state.host_model
        and state.chunk_size is None
        and state.verbose == 0
        and state.callback is None
    )


# Seconds each user function has spent in step-by-step fits so far in this process
# (weakly: a function that is gone is forgotten).
_stepwise_seconds: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# About what compiling a whole fit costs: a function is fitted step by step until its
# fits have taken that long, then compiled once (as renting skis until their price is
# paid: never more than twice the better of the two choices made in hindsight).
COMPILE_SECONDS = 1.0


def steps_from_host(function, state: SolverState) -> bool:
    """The front ends' choice: whether the next fit of the user's `function` runs step by
    step (`solve_stepwise`) rather than compiled. False for functions that cannot be
    remembered (not hashable or not weakly referenceable): those are always compiled."""
    if not can_step_from_host(state):
        return False
    try:
        return _stepwise_seconds.setdefault(function, 0.0) < COMPILE_SECONDS
    except TypeError:
        return False


# Compiling the model-independent steps and JAX's eager kernels happens once per
# process and shape, not once per model: that time is not charged to the model.
_COMPILE_EVENTS = frozenset(
    {
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    }
)
_compiling = threading.local()


def _add_compile_time(event: str, duration_secs: float, **_: str | int) -> None:
    if event in _COMPILE_EVENTS:
        _compiling.seconds = getattr(_compiling, "seconds", 0.0) + duration_secs


jax.monitoring.register_event_duration_secs_listener(_add_compile_time)


@contextlib.contextmanager
def charged_to(function):
    """Count the time of the block, less what it spent compiling, as `function`'s
    step-by-step fitting time."""
    started, compiled_before = time.perf_counter(), getattr(_compiling, "seconds", 0.0)
    try:
        yield
    finally:
        compiling = getattr(_compiling, "seconds", 0.0) - compiled_before
        elapsed = time.perf_counter() - started
        _stepwise_seconds[function] += max(elapsed - compiling, 0.0)


def solve_stepwise_while_cheaper(function, model: Callable, data: Data, state: SolverState):
    """The front ends' fast path for the user's `function`: `solve_stepwise` while its
    step-by-step fits have cost less than a compilation (`steps_from_host`) and the
    inputs are concrete; else None, and the caller runs the compiled fit."""
    if not (
        steps_from_host(function, state)
        and is_concrete(data, state.params)
        and not closes_over_traced_arrays(model, data, state.params)
    ):
        return None
    evaluate, then = evaluator(function, model, data, state)
    try:
        with charged_to(function):
            return solve_stepwise(model, data, state, evaluate)
    finally:
        then()


def closes_over_traced_arrays(model: Callable, data: Data, params) -> bool:
    """Whether the model closes over arrays traced by the user's transformation (a fit
    inside `jax.jit`): those fits must run inside the user's trace, as `solve`."""
    return with_explicit_closure(model, data, params) is not model


@stored
def _finish(strategy, x, linearization: Linearization, problem):
    return strategy.optimality(x, linearization, problem), strategy.active_constraints(x, problem)


@stored
def _summary(f, jac, loss, factorization):
    """The loss-scaled Jacobian and the summary the strategies see, from an evaluation:
    one program per shape and options, shared by every model."""
    cost, f_scaled, jac_scaled = scale_for_loss(f, jac, loss)
    return jac_scaled, Linearization(
        cost=cost, grad=jac_scaled.T @ f_scaled, factor=factorize(jac_scaled, factorization)
    )


class _Evaluation:
    """One evaluation at a point: the residuals and their Jacobian (the model's part,
    op by op or compiled, see `evaluator`), the loss-scaled Jacobian and the summary
    (compiled)."""

    def __init__(self, evaluate: Callable, model, data: Data, state: SolverState, unravel, x):
        f, jac = evaluate(model, data, state, unravel, x)
        self.fun = f
        self.jac, self.linearization = _summary(f, jac, state.loss, state.factorization)


def solve_stepwise(
    model: Callable, data: Data, state: SolverState, evaluate: Callable = residual_and_jac
) -> Solution:
    """`solve`, driven from Python (see the module's docstring); `evaluate` gives the
    residuals and Jacobian (`residual_and_jac`, op by op, or an `evaluator`'s)."""
    if not can_step_from_host(state):
        raise ValueError("This fit cannot be driven step by step; use `solve`.")
    x0, unravel = start_point(state)
    problem = problem_for(data, state)
    strategy, max_nfev = state.strategy, state.max_nfev
    current = _Evaluation(evaluate, model, data, state, unravel, x0)
    initial_cost = current.linearization.cost
    carry = start_loop(strategy, x0, current.linearization, problem, max_nfev)
    while int(carry.status) == RUNNING:
        x_trial, proposal = propose_step(strategy, carry, problem)
        trial = _Evaluation(evaluate, model, data, state, unravel, x_trial)
        carry, accepted = judge_step(
            strategy, carry, proposal, trial.linearization, problem, max_nfev
        )
        if bool(accepted):
            current = trial
    x_flat = carry.x
    optimality, active_mask = _finish(strategy, x_flat, current.linearization, problem)
    return finished(
        unravel(x_flat),
        current.linearization,
        current.fun,
        current.jac,
        optimality,
        active_mask,
        carry,
        initial_cost,
    )
