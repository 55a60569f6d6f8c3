"""Many fits as one compiled call: ragged datasets padded to one batch, batched starts.

`solve` is pure, so ``jax.vmap`` over its `data` and `state` fits a whole batch; inside
the vmapped ``lax.while_loop`` each member stops on its own criteria and is frozen from
then on (its parameters, counters and status no longer change), while the others go on.
"""

from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import PyTree

from .._evaluation.compiled import compiled
from .._problem.data import Data, sigma_shape_error, validate_data
from .._problem.host_errors import reraise_host_errors
from .._results.solution import Solution
from .._strategies.bounds import make_strictly_feasible
from .compaction import solve_compacted
from .solve import solve
from .solver import Solver, SolverState, init
from .stepwise import can_step_from_host, closes_over_traced_arrays


def _fields(dataset, index: int) -> tuple:
    """``(x, y, sigma, mask)`` of one dataset as NumPy arrays (no device round trips)."""
    x: Any
    y: Any
    sigma: Any
    mask: Any
    if isinstance(dataset, Data):
        x, y, sigma, mask = dataset.x, dataset.y, dataset.sigma, dataset.mask
    elif isinstance(dataset, (tuple, list)) and len(dataset) in (2, 3):
        # (type: ignore: mypy cannot star a tuple-or-list.)
        x, y, sigma, mask = *dataset, *([None] * (4 - len(dataset)))  # type: ignore[misc]
        if isinstance(x, list):  # a list `x` is an array, as `Data` takes it (ragged: a
            try:  # pytree); in NumPy: a device copy per dataset cost 0.3 ms
                x = np.asarray(x)
            except ValueError:
                pass
    else:
        raise TypeError(
            f"Dataset {index} must be an nlsq_fn.Data or a tuple (x, y) or (x, y, sigma), "
            f"got {type(dataset).__name__}."
        )
    y = np.asarray(y)
    if y.ndim == 0 or y.shape[0] == 0:
        raise ValueError(f"Dataset {index} has no points (`y` has shape {y.shape}).")
    if sigma is not None:
        sigma = np.asarray(sigma)
        if sigma.shape not in ((), y.shape):
            raise sigma_shape_error(sigma.shape, y.shape, where=f"Dataset {index}: ")
        sigma = np.broadcast_to(sigma, y.shape)
    mask = np.ones(y.shape, bool) if mask is None else np.asarray(mask, bool)
    if mask.shape != y.shape:
        raise ValueError(
            f"Dataset {index}: `mask` has shape {mask.shape} but `y` has shape {y.shape}."
        )
    return jax.tree.map(np.asarray, x), y, sigma, mask


def _pad(array, length, mode):
    """Pad `array` along its first axis to `length` (``edge``: repeat the last row)."""
    array = np.asarray(array)
    # (Filled, not `np.pad`: 1 µs against 11-13 µs, for thousands of small datasets.)
    padded = np.empty((length, *array.shape[1:]), array.dtype)
    padded[: array.shape[0]] = array
    padded[array.shape[0] :] = array[-1] if mode == "edge" else mode
    return padded


def pad_datasets(datasets: Sequence, length: int | None = None) -> Data:
    """Stack datasets of different lengths into one batched `Data`, padded and masked.

    **Arguments:**

    - `datasets`: a sequence of `Data` (or ``(x, y)`` / ``(x, y, sigma)`` tuples). The
        first axis of `y`, and of every non-scalar leaf of `x`, counts the points; the
        other axes and the structure of `x` must agree across datasets.
    - `length`: the padded number of points; default the longest dataset's.

    **Returns:** one `Data` whose leaves carry a leading batch axis, with ``mask`` False
    at the padding (combined with each dataset's own mask). Padded inputs repeat each
    dataset's last point, so the model stays finite there; they count for nothing.
    Fit it with `solve_batch`, or ``eqx.filter_vmap(nf.solve, in_axes=(None, 0, None))``.
    """
    members = [_fields(d, i) for i, d in enumerate(datasets)]
    if not members:
        raise ValueError("`datasets` is empty.")
    counts = [y.shape[0] for _, y, _, _ in members]
    length = max(counts) if length is None else int(length)
    if length < max(counts):
        raise ValueError(f"`length`={length} is shorter than the longest dataset ({max(counts)}).")
    structure = jax.tree.structure(members[0][0])
    tail = members[0][1].shape[1:]
    for index, ((x, y, _, _), count) in enumerate(zip(members, counts, strict=True)):
        # (type: ignore: jax's stub leaves PyTreeDef unresolved.)
        if jax.tree.structure(x) != structure or y.shape[1:] != tail:  # type: ignore[operator]
            raise ValueError(
                f"Dataset {index} differs from dataset 0 in the structure of `x` or the "
                "trailing shape of `y`; only the number of points may differ."
            )
        for leaf in jax.tree.leaves(x):
            if leaf.ndim > 0 and leaf.shape[0] != count:
                raise ValueError(
                    f"Dataset {index}: an `x` leaf of shape {leaf.shape} does not have "
                    f"one row per point ({count}); padding needs per-point inputs."
                )

    def stack_x(*leaves):
        if leaves[0].ndim == 0:
            return np.stack(leaves)
        return np.stack([_pad(leaf, length, "edge") for leaf in leaves])

    x = jax.tree.map(stack_x, *[m[0] for m in members])
    y = np.stack([_pad(m[1], length, "edge") for m in members])
    mask = np.stack([_pad(m[3], length, False) for m in members])
    sigma = None
    if any(m[2] is not None for m in members):
        sigma = np.stack(
            [_pad(np.ones(m[1].shape) if m[2] is None else m[2], length, 1.0) for m in members]
        )
    batch = Data(x, y, sigma=sigma, mask=mask)
    try:
        validate_data(batch)  # NaN/inf, sigma > 0: once, over the whole (masked) batch
    except ValueError as error:  # name the dataset at fault
        for index, (x, y, sigma, mask) in enumerate(members):
            try:
                validate_data(Data(x, y, sigma=sigma, mask=mask))
            except ValueError as member_error:
                raise ValueError(f"Dataset {index}: {member_error}") from None
        raise error
    return batch


def _member(data: Data, index: int) -> Data:
    return jax.tree.map(lambda leaf: leaf[index], data)


@reraise_host_errors
def init_batch(model: Callable, data: Data, p0: PyTree, solver: Solver = Solver()) -> SolverState:
    """`init` for a batch of datasets (leading axis of every leaf of `data`).

    Validates the whole batch's data at once and the model on its first member; the
    returned state (one starting point, shared by every member) goes to `solve_batch`.
    For a different start per member, pass it through `with_starts`.
    """
    validate_data(data)
    return init(model, _member(data, 0), p0, solver)


def with_starts(state: SolverState, starts: PyTree) -> SolverState:
    """`state` repeated over a batch of starting points.

    `starts` is shaped like the parameters with a leading batch axis on every leaf.
    Starts on or outside a bound are moved strictly inside, as `init` does (onto the
    box for `Dogbox`, which may start on a bound). The result has a leading batch axis
    on every array, so `solve_batch` (or ``eqx.filter_vmap`` with ``in_axes=0`` for the
    state) fits each start.
    """
    # One program: op by op, a new batch size would compile some twenty small ones.
    return _with_starts(state, starts)


@compiled
def _with_starts(state: SolverState, starts: PyTree) -> SolverState:
    flat = jax.vmap(lambda p: ravel_pytree(p)[0])(starts)
    _, unravel = ravel_pytree(state.params)
    if flat.ndim != 2 or flat.shape[1] != state.lower.shape[-1]:
        raise ValueError("`starts` must be shaped like the parameters, with a leading batch axis.")
    if state.strategy.supports_bounds and state.strategy.starts_strictly_inside:
        flat = jax.vmap(make_strictly_feasible, in_axes=(0, None, None))(
            flat.astype(state.lower.dtype), state.lower, state.upper
        )
    elif state.strategy.supports_bounds:  # Dogbox starts on the bounds, not inside
        flat = jnp.clip(flat.astype(state.lower.dtype), state.lower, state.upper)
    size = flat.shape[0]
    batched = jax.tree.map(
        lambda leaf: jnp.broadcast_to(leaf, (size, *jnp.shape(leaf))),
        eqx.filter(state, eqx.is_array),
    )
    batched = eqx.combine(batched, eqx.filter(state, eqx.is_array, inverse=True))
    return eqx.tree_at(lambda s: s.params, batched, jax.vmap(unravel)(flat))


def is_batched_state(state: SolverState) -> bool:
    """Whether `state` carries a leading batch axis (bounds are flat in a single state)."""
    return state.lower.ndim == 2


def can_compact(model: Callable, data: Data, state: SolverState) -> bool:
    """Whether `solve_batch` can drop finished members as it goes: concrete inputs (not
    traced by the user's ``jax.jit`` / ``jax.grad``, the model's closure included), on
    one device (a batch spread over devices by `shard_batch` stays there, in one
    program), and a fit the strategy's steps can drive from Python
    (`can_step_from_host`)."""
    if not can_step_from_host(state) or np.shape(data.y)[0] == 0:
        return False
    leaves = jax.tree.leaves(eqx.filter((model, data, state), eqx.is_array))
    if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return False
    if any(isinstance(leaf, jax.Array) and len(leaf.sharding.device_set) > 1 for leaf in leaves):
        return False
    params = state.params
    if is_batched_state(state):
        params = jax.tree.map(lambda leaf: leaf[0], params)
    return not closes_over_traced_arrays(model, _member(data, 0), params)


@reraise_host_errors
def solve_batch(
    model: Callable,
    data: Data,
    state: SolverState,
    *,
    compact: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Solution:
    """Fit every member of a batch of datasets.

    `data` has a leading batch axis on every leaf (see `pad_datasets`); `state` is a
    single state shared by all members (from `init_batch`) or a batched one (from
    `with_starts`). Returns one `Solution` with a leading batch axis on every field: each
    member's own parameters, ``status``, ``success``, ``nfev``, ... (``message`` lists
    the reasons).

    Called on concrete inputs, members that have stopped leave the working batch as the
    fit goes (`nlsq_fn._drivers.compaction`), so that the batch's time follows its typical
    member rather than its slowest. Under ``jax.jit`` or ``jax.grad`` (or with
    ``compact=False``) it is one compiled call, ``eqx.filter_vmap(nf.solve, in_axes=(None,
    0, 0 or None))``. Either way each member's result is its fit by `solve` (the same
    optimum: the programs differ, and across a batch of small float64 fits each
    iteration takes the normal equations where they are safe,
    `nlsq_fn._evaluation.normal_equations`). ``compact=True`` insists on compaction and raises
    where it cannot run. `progress`, if given, is called with ``(finished members,
    batch size)`` as a compacted batch goes (a one-program batch reports nothing).
    """
    batched_state = is_batched_state(state)
    possible = can_compact(model, data, state)
    if compact and not possible:
        raise ValueError(
            "`compact=True` needs concrete inputs (not under `jax.jit` / `jax.grad`), a "
            "JAX model in one shot (no `chunk_size`) and no progress output or callback."
        )
    if possible and compact is not False:
        return solve_compacted(model, data, state, batched_state, progress)
    # if_array: map the arrays only; Python scalars in the modules (a loss's f_scale)
    # are shared by all members.
    state_axis = eqx.if_array(0) if batched_state else None
    return eqx.filter_vmap(solve, in_axes=(None, eqx.if_array(0), state_axis))(model, data, state)
