"""A model's settled refit: its compiled fit, called with new values.

Building a fit's `(model, data, state)` from the user's inputs (the model's convention,
the solver, the model's shape checks, the Equinox modules and their device copies) costs
milliseconds in Python; the compiled fit of a 200-point decay runs in a third of one.
Once a model's fit is compiled, a refit with inputs of the same kind (same shapes, same
options, bounds finite or not as before) differs from it only in the values of a few
leaves: the inputs `x`, `y`, `sigma`, `p0` and the bounds. `FitProgram` keeps everything
else from the fit that built it, with its compiled program, and fills those slots with
the new (already validated) values: the same program on the same structure, so the
same result as building the inputs again.
"""

import threading
import weakref
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._evaluation.compiled import ProgramsByFunction, register
from .._evaluation.precision import full_precision

# The slots a refit fills: (name in `FitProgram.__call__`, its leaves in the inputs).
_SLOTS = ("x", "y", "sigma", "params", "lower", "upper")


class FitProgram:
    """`fit(model, data, state)` compiled for one structure of its inputs; called with
    new values for the slots in `_SLOTS` (NumPy arrays shaped as the first fit's)."""

    def __init__(self, fit: Callable, model, treedef, static, leaves, slots):
        self.model = model
        self._fit, self._treedef, self._static, self._slots = fit, treedef, static, slots
        self._dtypes = [leaf.dtype for leaf in leaves]
        self._out: Any = None
        self._program = jax.jit(full_precision(self._flat_fit)).lower(*leaves).compile()
        # The slots' values are the caller's each time: not kept (large data).
        self._leaves = list(leaves)
        for indices in slots.values():
            for index in indices:
                self._leaves[index] = None

    def _flat_fit(self, *leaves):
        model, data, state = eqx.combine(jax.tree.unflatten(self._treedef, leaves), self._static)
        outputs, treedef = jax.tree.flatten(self._fit(model, data, state))
        # Some twenty small outputs, packed into two arrays (the numbers of the widest
        # float dtype, the counts and flags as integers: both exact): each array copied
        # to the host costs more than its numbers.
        template = list(outputs)
        groups: tuple[list, list] = ([], [])
        entries = []
        for index, leaf in enumerate(outputs):
            if not eqx.is_array(leaf):
                continue
            group = 0 if jnp.issubdtype(leaf.dtype, jnp.inexact) else 1
            start = sum(part.size for part in groups[group])
            groups[group].append(jnp.ravel(leaf))
            entries.append((index, group, start, leaf.size, leaf.shape, np.dtype(leaf.dtype)))
            template[index] = None
        self._out = (treedef, template, entries)
        integer = jnp.int64 if jax.config.jax_enable_x64 else jnp.int32
        return tuple(
            jnp.concatenate(
                [part.astype(jnp.result_type(*parts) if g == 0 else integer) for part in parts]
            )
            if parts
            else jnp.zeros(0, integer)
            for g, parts in enumerate(groups)
        )

    def __call__(self, **values):
        leaves = list(self._leaves)
        for name, indices in self._slots.items():
            for index, value in zip(indices, values[name], strict=True):
                # (JAX's own dtype for host values: float32 when x64 is off)
                leaves[index] = np.asarray(value, self._dtypes[index])
        treedef, outputs, entries = self._out
        # (NumPy for the front end)
        packed = [np.asarray(array) for array in self._program(*leaves)]
        outputs = list(outputs)
        for index, group, start, size, shape, dtype in entries:
            outputs[index] = packed[group][start : start + size].reshape(shape).astype(dtype)
        return jax.tree.unflatten(treedef, outputs)


def fit_program(fit: Callable, model, data, state) -> FitProgram | None:
    """`fit` compiled for refits of `(model, data, state)`; None when one array fills two
    slots or a slot and another input (it could not be replaced alone)."""
    dynamic, static = eqx.partition((model, data, state), eqx.is_array)
    leaves, treedef = jax.tree.flatten(dynamic)
    slots = _slot_indices(leaves, data, state)
    if slots is None:
        return None
    return FitProgram(fit, model, treedef, static, leaves, slots)


def slot_arrays(data, state) -> dict[str, list]:
    """The arrays of each slot in `data` and `state`."""
    return dict(
        x=jax.tree.leaves(data.x),
        y=[data.y],
        sigma=[] if data.sigma is None else [data.sigma],
        params=jax.tree.leaves(state.params),
        lower=[state.lower],
        upper=[state.upper],
    )


def _slot_indices(leaves, data, state) -> dict[str, list[int]] | None:
    """Where each slot's arrays are among `leaves` (found by identity: the flattened
    inputs hold the very arrays of `data` and `state`); None if an array is there twice."""
    where = {id(leaf): i for i, leaf in enumerate(leaves)}
    arrays = slot_arrays(data, state)
    if len(where) != len(leaves) or any(id(a) not in where for a in sum(arrays.values(), [])):
        return None
    return {name: [where[id(array)] for array in arrays[name]] for name in _SLOTS}


# Each model's `FitProgram`s, by key.
fit_programs = register(ProgramsByFunction())

_lock = threading.Lock()
# The kinds of fit (keys) each user function has been fitted with step by step, and the
# threads compiling their `FitProgram`s.
_seen: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_compiling: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compile_when_refitted(function, key, fit: Callable, model, data, state) -> None:
    """After a step-by-step fit of the user's `function`: from its second fit of this
    kind (a model being refitted, likely again and again), compile its `FitProgram` in a
    background thread, so that later refits find it ready instead of paying a
    compilation (or running step by step) in the foreground. The thread holds Python's
    lock only while tracing; XLA's compiler, most of the time, releases it."""
    if jax.process_count() > 1:
        # Several processes (`jax.distributed`) meet at a barrier on exit, which a
        # process still compiling here would reach late.
        return
    with _lock:
        try:
            kinds = _seen.setdefault(function, set())
            threads = _compiling.setdefault(function, {})
        except TypeError:  # not weakly referenceable
            return
        if key not in kinds:
            kinds.add(key)
            return
        if key in threads or fit_programs.get(function, key) is not None:
            return
        # Not a daemon: Python would stop it at exit inside XLA's compiler, which aborts
        # the process; a script that ends at once waits for it instead.
        thread = threading.Thread(
            target=_compile,
            args=(function, key, fit, model, data, state, bool(jax.config.jax_enable_x64)),
            name="nlsq_fn refit compilation",
        )
        threads[key] = thread
    thread.start()


def _compile(function, key, fit, model, data, state, x64: bool) -> None:
    try:
        with jax.enable_x64(x64):  # (a thread starts from the global setting)
            program = fit_program(fit, model, data, state)
    except Exception:
        return  # the foreground's compilation, if it comes to one, reports errors
    if program is not None:
        fit_programs.put(function, key, program)


def compiled_in_background(function, key) -> "FitProgram | None":
    """The `FitProgram` a background thread compiles for `function` and `key`, once it
    has finished; None if none was started (or it failed)."""
    with _lock:
        thread = _compiling.get(function, {}).get(key)
    if thread is None:
        return None
    thread.join()
    return fit_programs.get(function, key)


def wait_for_background_compilations() -> None:
    """Wait until every background compilation of a `FitProgram` has finished."""
    with _lock:
        threads = [t for by_key in _compiling.values() for t in by_key.values()]
    for thread in threads:
        thread.join()


def hashable(value):
    """`value` as a hashable key part (arrays by their values), or raises `TypeError`."""
    if isinstance(value, (np.ndarray, jax.Array, list)):
        array = np.asarray(value)
        return ("array", array.shape, array.dtype.str, array.tobytes())
    hash(value)
    return value
