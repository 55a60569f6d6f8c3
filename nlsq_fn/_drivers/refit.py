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

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import numpy as np

from .._evaluation.compiled import ProgramsByFunction, register
from .packed import Layout

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
        self._program = jax.jit(self._flat_fit).lower(*leaves).compile()
        # The slots' values are the caller's each time: not kept (large data).
        self._leaves = list(leaves)
        for indices in slots.values():
            for index in indices:
                self._leaves[index] = None

    def _flat_fit(self, *leaves):
        model, data, state = eqx.combine(jax.tree.unflatten(self._treedef, leaves), self._static)
        outputs = self._fit(model, data, state)
        dynamic, static = eqx.partition(outputs, eqx.is_array)
        # Some twenty small outputs, packed into one array per dtype: each array copied
        # to the host costs more than its numbers.
        layout = Layout(dynamic)
        self._out = (layout, static)
        return layout.pack(jax.tree.map(lambda leaf: leaf[None], dynamic))

    def __call__(self, **values):
        leaves = list(self._leaves)
        for name, indices in self._slots.items():
            for index, value in zip(indices, values[name], strict=True):
                # (JAX's own dtype for host values: float32 when x64 is off)
                leaves[index] = np.asarray(value, self._dtypes[index])
        layout, static = self._out
        packed = jax.device_get(self._program(*leaves))  # (the front end reads NumPy)
        return eqx.combine(jax.tree.map(lambda leaf: leaf[0], layout.unpack(packed)), static)


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


def hashable(value):
    """`value` as a hashable key part (arrays by their values), or raises `TypeError`."""
    if isinstance(value, (np.ndarray, jax.Array, list)):
        array = np.asarray(value)
        return ("array", array.shape, array.dtype.str, array.tobytes())
    hash(value)
    return value
