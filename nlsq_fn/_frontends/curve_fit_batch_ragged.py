"""`curve_fit_batch` over ragged datasets: lists of 1-D `x` and `y` of per-member lengths.

The model sees each member's own `x`, never a padded one: members are grouped by their
exact length and each group is one stacked fit (`fit_stack`), its results put back in
the user's order. With ``pad=True`` every member is padded to the longest (masked,
`pad_datasets`) so one program serves all lengths, once the user's own data show that
padding changes nothing the model gives on the real points."""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .._drivers.batch import pad_datasets
from .._drivers.solver import Solver
from .._evaluation.padding import check_padding_changes_nothing, padding_moves
from .._problem.data import Data
from .._results.solution import Solution
from .curve_fit_batch_stack import Progress, fit_stack


def is_ragged(xdata, ydata) -> bool:
    """Whether `xdata` and `ydata` are lists (or tuples) of per-member arrays, rather
    than arrays (or nested lists of numbers, which are arrays)."""

    def of_arrays(value):
        return isinstance(value, (list, tuple)) and all(np.ndim(item) >= 1 for item in value)

    return of_arrays(ydata) and of_arrays(xdata)


def _like_y(name: str, value, y: np.ndarray, index: int) -> np.ndarray:
    """Member `index` of `name` (``xdata`` or ``sigma``), which must be shaped as its `y`."""
    value = np.asarray(value)
    if value.shape != y.shape:
        raise ValueError(
            f"Dataset {index}: `{name}[{index}]` has shape {value.shape} but "
            f"`ydata[{index}]` has shape {y.shape}; they must match."
        )
    return value


def ragged_members(xdata, ydata, sigma, p0) -> tuple[list, list, list | None, np.ndarray]:
    """The members' ``(xs, ys, sigmas, p0)`` as NumPy arrays, checked: one `x` (and
    `sigma`) per `y`, each of its member's length; `p0` one start or one per member."""
    size = len(ydata)
    if size == 0:
        raise ValueError("`ydata` is an empty list: there are no datasets to fit.")
    if len(xdata) != size:
        raise ValueError(
            f"`xdata` has {len(xdata)} datasets but `ydata` has {size}: give one `x` array "
            "per dataset."
        )
    if sigma is not None and (not isinstance(sigma, (list, tuple)) or len(sigma) != size):
        got = f"{len(sigma)} entries" if isinstance(sigma, (list, tuple)) else type(sigma).__name__
        raise ValueError(
            f"`sigma` must be None or a list of {size} arrays, one per dataset as in "
            f"`ydata`; got {got}."
        )
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    sigmas: list[np.ndarray] | None = None if sigma is None else []
    for index in range(size):
        y = np.asarray(ydata[index])
        if y.ndim != 1 or y.size == 0:
            raise ValueError(
                f"`ydata[{index}]` must be a non-empty 1-D array, got shape {y.shape}."
            )
        xs.append(_like_y("xdata", xdata[index], y, index))
        ys.append(y)
        if sigma is not None and sigmas is not None:
            sigmas.append(_like_y("sigma", sigma[index], y, index))
    p0 = np.asarray(p0, float)
    if p0.ndim not in (1, 2) or (p0.ndim == 2 and p0.shape[0] != size):
        raise ValueError(
            f"`p0` must be (n,), one start for all, or ({size}, n), one per dataset; got "
            f"shape {p0.shape}."
        )
    return xs, ys, sigmas, p0


def fit_ragged(
    model: Callable,
    members: tuple,
    solver: Solver,
    absolute_sigma: bool,
    progress: Progress,
    pad: bool,
) -> tuple[jax.Array, jax.Array, Solution]:
    """``(popt, pcov, solution)`` of every member, in the user's order; the Solution's
    `fun` and `jac` rows beyond each member's length are NaN."""
    xs, ys, sigmas, p0 = members
    lengths = np.array([y.size for y in ys])
    if pad and lengths.min() < lengths.max():
        return _fit_padded(model, members, lengths, solver, absolute_sigma, progress)
    results, order = [], []
    for length in np.unique(lengths):
        index = np.flatnonzero(lengths == length)
        data = Data(
            np.stack([xs[i] for i in index]),
            np.stack([ys[i] for i in index]),
            sigma=None if sigmas is None else np.stack([sigmas[i] for i in index]),
        )
        starts = p0 if p0.ndim == 1 else p0[index]
        popt, pcov, solution = fit_stack(
            model,
            data,
            starts,
            solver,
            absolute_sigma,
            progress,
            member_name=_in_lists(index),
        )
        results.append((popt, pcov, solution))
        order.append(index)
    inverse = np.empty(lengths.size, int)
    inverse[np.concatenate(order)] = np.arange(lengths.size)
    # `chunk_size="auto"` may chunk the long members' group alone, which keeps no
    # Jacobian: then the batch has none (as a chunked batch), not a ragged mix.
    keep_jac = all(solution.jac is not None for _, _, solution in results)
    results = [
        (popt, pcov, _nan_beyond(solution, lengths.max(), keep_jac))
        for popt, pcov, solution in results
    ]

    def in_user_order(*leaves):
        return jnp.concatenate(leaves)[inverse]

    popt, pcov, solution = jax.tree.map(in_user_order, *results)
    return popt, pcov, solution


def _in_lists(index: np.ndarray) -> Callable[[int], str]:
    """A group's member `i` as the user's lists index it."""
    return lambda i: f"Dataset {index[i]}"


def _nan_beyond(solution: Solution, length: int, keep_jac: bool) -> Solution:
    """`solution` with its per-point fields (`fun`, `jac`; `jac` None unless
    `keep_jac`) NaN from each member's own length to `length`."""
    rows = length - solution.fun.shape[1]
    fun = jnp.pad(solution.fun, ((0, 0), (0, rows)), constant_values=jnp.nan)
    jac = solution.jac if keep_jac else None
    if jac is not None:
        jac = jnp.pad(jac, ((0, 0), (0, rows), (0, 0)), constant_values=jnp.nan)
    return dataclasses.replace(solution, fun=fun, jac=jac)


def _fit_padded(model, members, lengths, solver, absolute_sigma, progress):
    """One stacked fit of every member padded to the longest (masked), after checking
    on the user's data that padding changes nothing the model gives on real points."""
    xs, ys, sigmas, p0 = members
    datasets = [
        (x, y) if sigmas is None else (x, y, sigmas[i])
        for i, (x, y) in enumerate(zip(xs, ys, strict=True))
    ]
    data = pad_datasets(datasets)
    starts = np.broadcast_to(p0, (lengths.size, p0.shape[-1]))
    # Exactly, against the model on its own `x`, for the first padded member; then, at
    # the padded size in one program, every member: its real points' values must not
    # move when the padded rows hold other inputs.
    first = int(np.flatnonzero(lengths < lengths.max())[0])
    member = jax.tree.map(lambda leaf: leaf[first], data)
    check_padding_changes_nothing(
        model, xs[first], member, member.x, jnp.asarray(starts[first]), lengths[first], True
    )
    moved = np.flatnonzero(padding_moves(model, data, jnp.asarray(starts)))
    if moved.size:
        raise ValueError(
            f"pad=True needs a pointwise model (each output depending only on its own "
            f"point), but padded to {lengths.max()} points this model gives other values "
            f"on the real points of {moved.size} datasets (dataset {moved[0]}, "
            f"{lengths[moved[0]]} points, first). Use pad=False."
        )
    popt, pcov, solution = fit_stack(
        model,
        data,
        p0,
        solver,
        absolute_sigma,
        progress,
        n_points=lengths,
        member_name=_in_lists(np.arange(lengths.size)),
    )
    mask = jnp.asarray(data.mask)
    fun = jnp.where(mask, solution.fun, jnp.nan)
    jac = solution.jac
    if jac is not None:
        jac = jnp.where(mask[..., None], jac, jnp.nan)
    return popt, pcov, dataclasses.replace(solution, fun=fun, jac=jac)
