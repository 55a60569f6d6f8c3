"""How a step-by-step fit evaluates the model: op by op, or compiled for a cold start.

Op by op (JAX's eager dispatch), a new model costs no compilation once JAX has compiled
each operation's kernel for these shapes. A process's first model pays for those
kernels: about a second for the two dozen operations of a small model and its
derivatives, kernels that every later model of these shapes reuses. So the first model
of its shapes in a process gets its evaluation compiled as one program instead (a few
hundred milliseconds), and a background thread compiles the op-by-op kernels (one more
evaluation of that model at the start, whose result is dropped) for the models that
follow, while the user reads the first result. A model with a compiled evaluation keeps
using it: it is faster than op by op. Either way the model sees the same inputs and the
fit takes the same steps (results equal up to rounding, as `solve`'s).
"""

import threading
from collections.abc import Callable, Hashable

import equinox as eqx
import jax
import numpy as np
from jax.flatten_util import ravel_pytree

from .._evaluation.compiled import ProgramsByFunction, register
from .._evaluation.precision import full_precision
from .._evaluation.program_store import set_up_lapack_meanwhile
from .._problem.data import Data
from .linearize_at import residual_and_jac
from .solver import SolverState
from .start import start_point

_lock = threading.Lock()
# Shapes whose op-by-op kernels are compiled (or being compiled: the event is set when
# they are).
_kernels: dict[Hashable, threading.Event] = {}
_compiled_evaluations = register(ProgramsByFunction())


def evaluator(function, model: Callable, data: Data, state: SolverState) -> tuple:
    """The evaluation `solve_stepwise` should use for this fit of the user's `function`
    (see the module's docstring): `residual_and_jac`, or a compiled one; and what to
    call once the fit is done (the background compilation of the op-by-op kernels, when
    this fit is the first of its shapes: started after it, since its thread would hold
    Python's lock for much of the time it runs)."""
    if not _canonical(model, data, state):
        return residual_and_jac, _nothing
    key = _shapes(data, state)
    compiled = _compiled_evaluations.get(function, key)
    if compiled is not None:
        return compiled, _nothing
    with _lock:
        pending = _kernels.get(key)
        if pending is None:
            ready = _kernels[key] = threading.Event()
    if pending is not None:
        pending.wait()  # (a previous model's warm-up, still compiling these kernels)
        return residual_and_jac, _nothing
    compiled = _compiled_evaluation()
    _compiled_evaluations.put(function, key, compiled)
    # The fit's stored steps call LAPACK: its set-up (SciPy's imports) overlaps with the
    # compilation of this evaluation.
    set_up_lapack_meanwhile()

    def compile_kernels() -> None:
        if jax.process_count() > 1:
            # Several processes (`jax.distributed`) meet at a barrier on exit, which a
            # process still compiling here would reach late: op by op as before.
            ready.set()
            return
        # Not a daemon: Python would stop it at exit inside XLA's compiler, which aborts
        # the process; a script that ends at once waits for it instead (about a second).
        x64 = bool(jax.config.jax_enable_x64)  # (a thread starts from the global setting)
        thread = threading.Thread(target=_compile_kernels, args=(ready, model, data, state, x64))
        thread.start()

    return compiled, compile_kernels


def _nothing() -> None:
    pass


def _canonical(*trees) -> bool:
    """Whether every array has JAX's dtype for the current precision: one made while
    x64 was on and used after it was switched off (a float64 buffer where float32 is
    expected) fails in a compiled program, while op by op it is converted."""
    return all(
        jax.dtypes.canonicalize_dtype(leaf.dtype) == leaf.dtype
        for leaf in jax.tree.leaves(trees)
        if isinstance(leaf, jax.Array)
    )


def wait_for_kernels() -> None:
    """Wait until every background compilation of op-by-op kernels has finished."""
    with _lock:
        events = list(_kernels.values())
    for event in events:
        event.wait()


def _shapes(data: Data, state: SolverState) -> Hashable:
    """What decides which kernels an op-by-op evaluation needs, besides the model."""
    arrays = jax.tree.leaves((data, state.params))
    jac = state.jac if isinstance(state.jac, str) else type(state.jac).__name__
    return (
        bool(jax.config.jax_enable_x64),  # (the kernels' dtypes follow it)
        jax.tree.structure(data),
        tuple((np.shape(a), str(getattr(a, "dtype", type(a)))) for a in arrays),
        jac,
        state.diff_step,
    )


def _compiled_evaluation() -> Callable:
    """`residual_and_jac` as one compiled program (the model's arrays, such as
    `least_squares`' `args`, are its inputs)."""

    @eqx.filter_jit
    @full_precision
    def evaluate(model, data, state, x):
        return residual_and_jac(model, data, state, ravel_pytree(state.params)[1], x)

    def evaluation(model, data, state, unravel, x):
        try:
            return evaluate(model, data, state, x)
        except jax.errors.JaxRuntimeError as error:
            # After a switch of `jax.enable_x64` in one process, JAX's fast dispatch
            # path was seen to give a program the other setting's buffers (as in
            # `tests/conftest.py`); it fails before running anything: op by op instead.
            if "RuntimeProgramInputMismatch" not in str(error):
                raise
            return residual_and_jac(model, data, state, unravel, x)

    return evaluation


def _compile_kernels(
    ready: threading.Event, model, data: Data, state: SolverState, x64: bool
) -> None:
    """One op-by-op evaluation at the start, for its kernels, in the fit's precision;
    errors are the fit's to report, not this thread's."""
    try:
        with jax.enable_x64(x64):
            x0, unravel = start_point(state)
            jax.block_until_ready(residual_and_jac(model, data, state, unravel, x0))
    except Exception:
        pass
    finally:
        ready.set()
