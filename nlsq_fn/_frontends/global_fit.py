"""``global_fit``: one model fitted to several datasets at once, some parameters shared
by all of them and the others local (one value per dataset).

The datasets are padded to one length and masked (`Data`), the parameters stacked as
``θ = [shared, local_1, ..., local_k]`` (`GlobalModel`), and the stacked problem is
fitted by the core's strategies: evaluated by per-dataset blocks (``engine="block"``,
`nlsq_fn._drivers.block_linearize`, never forming the ``m × n`` Jacobian) or as one dense
problem through `solve` (``engine="dense"``). Both give the fit of the stacked problem.
"""

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import numpy as np

from .._drivers.block_linearize import GlobalModel, GlobalSolution, solve_by_blocks
from .._drivers.block_stepwise import can_step_blocks, solve_blocks_stepwise
from .._drivers.options import strategy_for
from .._drivers.solve import solve
from .._drivers.solver import Solver, build_state
from .._drivers.start import raise_for_start, start_flags
from .._evaluation.padding import pad_points
from .._problem.arguments import as_bounds
from .._problem.conventions import vector_model
from .._problem.data import Data
from .._problem.loss import as_loss
from .._results.covariance import covariance_parts
from .._results.global_fit_result import GlobalFitResult
from .._strategies.block_arrow import blocks_of_dense
from .._strategies.trf import TRF

__all__ = ["GlobalFitResult", "global_fit", "global_model"]

ENGINES = ("block", "dense")
# What a dense `Solution` gives a `GlobalSolution` as it is.
COUNTS = ("cost", "initial_cost", "optimality", "active_mask", "nfev", "njev", "nit", "status")


@eqx.filter_jit
def _solve_stacked(model, data, state):
    solution = solve(model, data, state)
    parts = covariance_parts(solution.jac, solution.cost, data.n_points)
    return solution, parts


def _datasets(datasets) -> list[tuple]:
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


def _one_dataset_model(model, p0, param_style):
    """``(model of the parameter vector, the parameters' names)``."""
    vector, names = vector_model(model, p0, param_style)
    if names is None:
        raise ValueError(
            "global_fit needs the model's parameter names: write f(x, a, b, ...), use an "
            "nlsq_fn.models model, or give `p0` (then model(x, params) has params[0], ...)."
        )
    return vector, names


def global_model(
    model: Callable,
    shared: Sequence[str],
    n_datasets: int,
    *,
    p0=None,
    param_style: str | None = None,
) -> GlobalModel:
    """The `GlobalModel` of `model` (written for one dataset, as for `global_fit`) over
    `n_datasets` datasets, with the parameters named in `shared` shared: the stacked
    model ``f(x (k, L, ...), θ)`` of the flat ``θ = [shared, local_1, ..., local_k]``,
    for `global_solve` (the pure fit: `jax.jit`, `jax.vmap`, `jax.grad`). `p0` names
    ``params[0]``, ... of a ``model(x, params)`` by its length."""
    one_model, names = _one_dataset_model(model, p0, param_style)
    shared = (shared,) if isinstance(shared, str) else tuple(shared)
    unknown = [name for name in shared if name not in names]
    if unknown:
        raise ValueError(
            f"`shared` names unknown parameter {unknown[0]!r}; the model's parameters are "
            f"{list(names)}."
        )
    local = tuple(name for name in names if name not in shared)
    return GlobalModel(
        one_model,
        len(names),
        tuple(names.index(name) for name in shared),
        tuple(names.index(name) for name in local),
        n_datasets,
        names,
    )


def _start(model, names, shared, local, p0, datasets) -> np.ndarray:
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


def _check_traceable(model, x, stacked_model, theta0) -> None:
    """The stacked model maps the one-dataset model over the datasets with JAX: a
    model written with NumPy cannot be, which is said here rather than deep inside."""

    def first_dataset(theta):
        shared, local = stacked_model.split(theta)
        return model(x, stacked_model.dataset_params(shared, local[0]))

    try:  # (abstractly: no eager `jnp` call, each compiled)
        jax.eval_shape(first_dataset, theta0)
    except (
        jax.errors.TracerArrayConversionError,
        jax.errors.ConcretizationTypeError,
        jax.errors.TracerBoolConversionError,
        jax.errors.TracerIntegerConversionError,
    ) as error:
        raise ValueError(
            "global_fit needs a model written with jax.numpy (it is mapped over the "
            f"datasets and differentiated by JAX); this one is not traceable: "
            f"{type(error).__name__}."
        ) from error


def _flat_names(shared, local, k) -> list[str]:
    return list(shared) + [f"{name}[{i}]" for i in range(k) for name in local]


def _stack(datasets, model, theta0, stacked_model):
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


def global_fit(
    model: Callable,
    datasets,
    p0=None,
    shared: Sequence[str] = (),
    *,
    bounds=(-np.inf, np.inf),
    loss="linear",
    f_scale: float = 1.0,
    absolute_sigma: bool = False,
    method: str = "trf",
    x_scale=None,
    ftol: float = 1e-8,
    xtol: float = 1e-8,
    gtol: float = 1e-8,
    max_nfev: int | None = None,
    engine: str = "block",
    param_style: str | None = None,
) -> GlobalFitResult:
    """Fit `model`, written for one dataset, to all `datasets` at once: the parameters
    named in `shared` take one value for all datasets, every other parameter one value
    per dataset.

    - `model`: ``f(x, a, b, ...)`` (parameter names from the signature), an
      `nlsq_fn.models` model, or ``model(x, params)`` (names ``params[0]``, ...).
    - `datasets`: a list of ``(x, y)`` or ``(x, y, sigma)``, of any lengths (padded to
      one and masked: the model must be pointwise, which is checked).
    - `p0`: a dict by name or a sequence in the model's order; a local parameter's
      entry is one value for all datasets or one per dataset. None: a named model's
      guess on each dataset (a shared parameter's: their mean), else ones.
    - `bounds`: a pair (scalars or one per model parameter) or a dict ``{name: (lower,
      upper)}``, the same for every dataset.
    - `loss`, `f_scale`, `method` (``"trf"``, ``"dogbox"``, ``"lm"``), `x_scale`,
      tolerances, `max_nfev`, `absolute_sigma`: as `curve_fit`'s, for the stacked
      problem (its residuals are the datasets' residuals, concatenated).
    - `engine`: ``"block"`` (default) evaluates the stacked problem by per-dataset
      blocks and eliminates the local parameters (`nlsq_fn._drivers.block_linearize`): memory
      ``O(m (n_shared + n_local))`` instead of the dense ``O(m n)``, and with TRF
      (`BlockTRF`) steps and a covariance by blocks, nothing ``n × n``: thousands of
      datasets; ``"dense"`` fits the stacked problem through `solve` with its full
      Jacobian. Both fit the same problem with the same steps.

    Returns a `GlobalFitResult`: `params` and `perr` by name (shared: floats, local:
    arrays over the datasets), `cost`, `success`, the shared parameters' covariance
    `shared_pcov`, the per-dataset blocks `local_pcov` and `cross_pcov`, and `pcov` of
    the flat parameters (built on demand). Under `jax.jit` / `jax.vmap` / `jax.grad`:
    `global_solve`.
    """
    if engine not in ENGINES:
        raise ValueError(f"`engine` must be one of {ENGINES}, got {engine!r}.")
    checked = _datasets(datasets)
    k = len(checked)
    stacked_model = global_model(model, shared, k, p0=p0, param_style=param_style)
    one_model, names = stacked_model.model, tuple(stacked_model.names or ())
    shared, local = stacked_model.shared_names, stacked_model.local_names
    theta0 = _start(model, names, shared, local, p0, checked)
    lower, upper = flat_bounds_of(bounds, names, shared, local, k)
    _check_traceable(one_model, checked[0][0], stacked_model, theta0)
    data = _stack(checked, one_model, theta0, stacked_model)
    solver = block_solver(
        method,
        loss,
        f_scale,
        lower,
        upper,
        x_scale=x_scale,
        ftol=ftol,
        xtol=xtol,
        gtol=gtol,
        max_nfev=max_nfev,
    )
    flat_names = _flat_names(shared, local, k)
    # With TRF the block engine is driven step by step (only the model's part is
    # compiled); its first evaluation checks the start, instead of `init`'s program.
    stepwise = engine == "block" and type(solver.strategy) is TRF
    try:
        state = build_state(stacked_model, data, theta0, solver, check_start=not stepwise)
    except ValueError as error:
        message = re.sub(r"\bp\[(\d+)\]", lambda m: repr(flat_names[int(m[1])]), str(error))
        raise ValueError(message) from error
    n_points = sum(y.size for _, y, _ in checked)
    if engine == "dense":
        solution, parts = _solve_stacked(stacked_model, data, state)
        parts = jax.tree.map(np.asarray, parts)
        fields: dict[str, Any] = {name: np.asarray(getattr(solution, name)) for name in COUNTS}
        fields["x"] = np.asarray(solution.x)
        fields["fun"] = np.asarray(solution.fun).reshape(data.y.shape)
        # `covariance(True)`: with the undetermined parameters' infinities.
        fields["covariance"] = blocks_of_dense(
            parts.covariance(True), len(shared), k, parts.residual_variance
        )
        found = GlobalSolution(**fields)
    elif stepwise and can_step_blocks(data, state):
        found = jax.tree.map(
            np.asarray, solve_blocks_stepwise(stacked_model, data, state, check_start=True)
        )
    else:
        if stepwise:  # (not checked by `build_state`)
            raise_for_start(*start_flags(stacked_model, data, state))
        found = jax.tree.map(np.asarray, solve_by_blocks(stacked_model, data, state))
    residuals = np.concatenate([found.fun[i, : y.size] for i, (_, y, _) in enumerate(checked)])
    return GlobalFitResult(
        names=names,
        shared=shared,
        local=local,
        flat_names=flat_names,
        n_datasets=k,
        solution=found,
        covariance=found.covariance.scaled(absolute_sigma),
        fun=residuals,
        n_points=n_points,
        engine=engine,
        absolute_sigma=absolute_sigma,
    )
