"""The inputs of a fit by blocks (`global_fit`, `odr`): the datasets checked and stacked
into one padded, masked `Data`, the flat start and bounds of the stacked parameters
``θ = [shared, local_1, ..., local_k]``, their names, and the `Solver`."""

from collections.abc import Mapping, Sequence

import numpy as np

from .._drivers.options import strategy_for
from .._drivers.solver import Solver
from .._evaluation.padding import pad_points
from .._problem.arguments import as_bounds
from .._problem.data import Data
from .._problem.loss import as_loss


def checked_datasets(datasets) -> list[tuple]:
    """`(x, y, sigma or None)` for each dataset, checked."""
    if isinstance(datasets, (np.ndarray, Mapping, str)) or not isinstance(datasets, Sequence):
        raise ValueError(
            "`datasets` must be a list of (x, y) or (x, y, sigma) tuples, got "
            f"{type(datasets).__name__}."
        )
    if len(datasets) == 0:
        raise ValueError("`datasets` is empty.")
    checked = []
    for i, dataset in enumerate(datasets):
        if not isinstance(dataset, (tuple, list)) or len(dataset) not in (2, 3):
            raise ValueError(
                f"`datasets[{i}]` must be a tuple (x, y) or (x, y, sigma), got "
                f"{type(dataset).__name__}"
                + (f" of length {len(dataset)}." if hasattr(dataset, "__len__") else ".")
            )
        x, y = np.asarray(dataset[0], dtype=float), np.asarray(dataset[1], dtype=float)
        sigma = None if len(dataset) == 2 or dataset[2] is None else dataset[2]
        if y.ndim != 1 or y.size == 0:
            raise ValueError(f"`datasets[{i}]`: y must be 1-D and not empty, got shape {y.shape}.")
        if x.ndim == 0 or y.size not in (x.shape[0], x.shape[-1]):
            raise ValueError(f"`datasets[{i}]`: x has shape {x.shape} but y has {y.size} points.")
        if sigma is not None:
            sigma = (
                np.broadcast_to(np.asarray(sigma, dtype=float), y.shape)
                if np.size(sigma) in (1, y.size)
                else None
            )
            if sigma is None:
                raise ValueError(
                    f"`datasets[{i}]`: sigma has {np.size(dataset[2])} values but y has {y.size}."
                )
        checked.append((x, y, sigma))
    return checked


def flat_start(model, names, shared, local, p0, datasets) -> np.ndarray:
    """The flat start θ from `p0` (a dict by name or a sequence in the model's order;
    a local parameter's value a scalar for every dataset or one per dataset), or from a
    named model's guess per dataset (a shared parameter's: their mean), else ones."""
    k = len(datasets)
    values: dict  # by name: a number, or one per dataset
    if p0 is None:
        guess = getattr(model, "guess", None)
        if guess is None:
            values = {name: 1.0 for name in names}
        else:
            guesses = [guess(x, y) for x, y, _ in datasets]
            values = {name: np.array([g[name] for g in guesses], float) for name in names}
            values |= {name: float(np.mean(values[name])) for name in shared}
    elif isinstance(p0, Mapping):
        unknown = sorted(set(p0) - set(names))
        missing = [name for name in names if name not in p0]
        if unknown or missing:
            raise ValueError(
                f"`p0` must name each of the model's parameters {list(names)}; unknown: "
                f"{unknown}, missing: {missing}."
            )
        values = dict(p0)
    else:
        if len(p0) != len(names):
            raise ValueError(
                f"`p0` has {len(p0)} entries but the model has {len(names)} parameters "
                f"{list(names)}."
            )
        values = dict(zip(names, p0, strict=True))
    theta = []
    for name in shared:
        value = np.asarray(values[name], dtype=float)
        if value.size != 1:
            raise ValueError(
                f"`p0` gives {value.size} values for the shared parameter {name!r}; give one."
            )
        theta.append(value.reshape(1))
    local_values = []
    for name in local:
        value = np.asarray(values[name], dtype=float)
        if value.size not in (1, k):
            raise ValueError(
                f"`p0` gives {value.size} values for the local parameter {name!r}; give one "
                f"or one per dataset ({k})."
            )
        local_values.append(np.broadcast_to(value.ravel(), (k,)))
    if local_values:
        theta.append(np.stack(local_values, axis=1).ravel())
    return np.concatenate(theta)


def flat_bounds_of(bounds, names, shared, local, k) -> tuple[np.ndarray, np.ndarray]:
    """Flat bounds of θ from bounds per parameter: a pair (scalars or one per model
    parameter) or a dict ``{name: (lower, upper)}``; the same for every dataset."""
    bounds = as_bounds(bounds)
    if isinstance(bounds, dict):
        unknown = sorted(set(bounds) - set(names))
        if unknown:
            raise ValueError(
                f"`bounds` names unknown parameters {unknown}; the model's parameters are "
                f"{list(names)}."
            )
        lower = np.array([bounds.get(name, (-np.inf, np.inf))[0] for name in names], float)
        upper = np.array([bounds.get(name, (-np.inf, np.inf))[1] for name in names], float)
    else:
        sides = []
        for side in bounds:
            side = np.asarray(side, dtype=float).ravel()
            if side.size not in (1, len(names)):
                raise ValueError(
                    f"`bounds` has a side of {side.size} values; give a scalar or one per "
                    f"model parameter {list(names)} (the same for every dataset)."
                )
            sides.append(np.broadcast_to(side, (len(names),)))
        lower, upper = sides
    index = {name: i for i, name in enumerate(names)}

    def flat(side):
        local_side = np.tile(np.array([side[index[name]] for name in local], float), k)
        return np.concatenate([np.array([side[index[name]] for name in shared], float), local_side])

    return flat(lower), flat(upper)


def flat_names(shared, local, k) -> list[str]:
    return list(shared) + [f"{name}[{i}]" for i in range(k) for name in local]


def stacked_data(datasets, model, theta0, stacked_model):
    """The datasets padded to one length (edge values, masked), stacked: a `Data` with
    `x` ``(k, L, ...)`` and `y` ``(k, L)``. Raises unless the model is pointwise (the
    padded points must not change the real points' values)."""
    lengths = [y.size for _, y, _ in datasets]
    length = max(lengths)
    xs = [pad_points(x, y.size, length) for x, y, _ in datasets]
    shapes = {x.shape for x in xs}
    if len(shapes) != 1:
        raise ValueError(
            f"The datasets' x arrays differ in shape beyond their number of points: "
            f"{sorted(shapes)} after padding to {length} points."
        )
    ys = np.stack([np.pad(y, (0, length - y.size)) for _, y, _ in datasets])
    given = [sigma is not None for _, _, sigma in datasets]
    sigma = None
    if any(given):
        sigma = np.stack(
            [
                np.pad(
                    np.ones(y.size) if s is None else s, (0, length - y.size), constant_values=1.0
                )
                for _, y, s in datasets
            ]
        )
    mask = None
    if min(lengths) != length:
        mask = np.arange(length)[None, :] < np.array(lengths)[:, None]
        shortest = int(np.argmin(lengths))
        x, y, _ = datasets[shortest]
        shared, local = stacked_model.split(theta0)
        params = stacked_model.dataset_params(shared, local[shortest])
        alone = np.asarray(model(x, params))
        padded = np.asarray(model(xs[shortest], params))[: y.size]
        if alone.shape != y.shape or not np.allclose(
            alone, padded, rtol=1e-12, atol=0.0, equal_nan=True
        ):
            raise ValueError(
                f"The datasets have different lengths ({min(lengths)} to {length} points), "
                "which global_fit pads to one length; that needs a pointwise model (each "
                "output depending only on its own x), and this one's values change with "
                "the padding (x.mean(), x.size, a convolution...)."
            )
    return Data(np.stack(xs), ys, sigma=sigma, mask=mask)


def block_solver(method, loss, f_scale, lower, upper, **options) -> Solver:
    """The `Solver` of a fit by blocks (`global_fit`, `odr`): SciPy's `method` and loss,
    the flat bounds, never chunked (chunks would split the datasets from their local
    parameters)."""
    bounded = bool(np.any(np.isfinite(lower)) or np.any(np.isfinite(upper)))
    return Solver(
        strategy=strategy_for(method, bounded),
        loss=as_loss(loss, f_scale),
        bounds=(lower, upper) if bounded else None,
        chunk_size=None,
        **options,
    )
