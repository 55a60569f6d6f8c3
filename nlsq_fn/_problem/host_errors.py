"""Exceptions raised by the user's code on the host reach the caller as themselves.

A NumPy model or `jac`, a NumPy loss, a callback (and the iteration table) run inside
the compiled loop through `jax.pure_callback`, and JAX reports whatever they raise as
``JaxRuntimeError: INTERNAL: CpuCallback error...``: ``except ValueError`` would no
longer catch the model's error, nor Ctrl-C raise `KeyboardInterrupt`. SciPy lets them
through unchanged, and so do the front ends here: every host function goes through
`host_callback`, which files what it raises under a number written into JAX's error, and
`reraise_host_errors` (around each front end) raises the filed exception instead.

A number in the message rather than a record per fit: JAX may call the function on
another thread than the fit's (it does on GPUs), and several fits may run at once.
"""

import functools
import itertools
import logging
import re
import threading
from collections.abc import Callable

import jax

# Exceptions of fits that no front end collects (a `solve` under the user's own `jit`)
# are dropped, oldest first, beyond this many.
_KEPT = 64
_TAG = "nlsq_fn host error #"
_TAGGED = re.compile(re.escape(_TAG) + r"(\d+)")

_filed: dict[int, BaseException] = {}
_lock = threading.Lock()
_numbers = itertools.count()


class HostCallbackError(RuntimeError):
    """Stands, inside JAX's error, for an exception raised by host code during a
    compiled fit (chained to it); the front ends raise that exception instead."""


def _file(error: BaseException) -> int:
    with _lock:
        number = next(_numbers)
        _filed[number] = error
        while len(_filed) > _KEPT:
            del _filed[next(iter(_filed))]
    return number


def _take(message: str) -> BaseException | None:
    """The filed exception named in JAX's error `message` (the last one: the first
    failure ends the computation, but a message may quote earlier ones)."""
    numbers = _TAGGED.findall(message)
    if not numbers:
        return None
    with _lock:
        return _filed.pop(int(numbers[-1]), None)


def stand_in(error: BaseException) -> HostCallbackError:
    """A `HostCallbackError` for `error`, raised by the user's code on the host, which
    the front ends replace by `error` itself. (Raised at `init` too: no ``except
    ValueError`` on the way rewords the user's error.)"""
    number = _file(error)
    return HostCallbackError(f"{_TAG}{number}: {type(error).__name__}: {error}")


def _filing(function: Callable) -> Callable:
    def call(*args):
        try:
            return function(*args)
        except BaseException as error:  # KeyboardInterrupt (Ctrl-C) too
            raise stand_in(error) from error

    return call


def host_callback(function: Callable, result_shape_dtypes, *args, vmap_method: str):
    """`jax.pure_callback` of `function`, whose exceptions the front ends re-raise."""
    return jax.pure_callback(_filing(function), result_shape_dtypes, *args, vmap_method=vmap_method)


def _interrupted(message: str) -> bool:
    # Ctrl-C can land in JAX's own code around the call, before `_filing` sees it.
    lines = message.strip().splitlines()
    return bool(lines) and lines[-1].strip() == "KeyboardInterrupt"


def reraise_host_errors(front_end: Callable) -> Callable:
    """`front_end` raising the exception of host code that failed inside its compiled
    fit, rather than JAX's `JaxRuntimeError` about it (others pass unchanged)."""

    @functools.wraps(front_end)
    def call(*args, **kwargs):
        try:
            return front_end(*args, **kwargs)
        # (A callback dispatched eagerly, in a step-by-step fit, fails as ValueError.)
        except (jax.errors.JaxRuntimeError, HostCallbackError, ValueError) as error:
            message = str(error)
            original = _take(message)
            if original is None and not _interrupted(message):
                raise
        # Raised outside the `except` block: the user's exception keeps its own cause
        # and context, without JAX's error attached.
        raise KeyboardInterrupt if original is None else original

    return call


class _WithoutFiledErrors(logging.Filter):
    """JAX also logs each failed callback with its traceback; for a filed exception
    that is noise (the front end raises it, and JAX's error quotes it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, HostCallbackError)


logging.getLogger("jax._src.callback").addFilter(_WithoutFiledErrors())
