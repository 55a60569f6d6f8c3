"""``global_fit``: one model fitted to several datasets at once, some parameters shared
by all of them and the others local (one value per dataset).

The datasets are padded to one length and masked (`Data`), the parameters stacked as
``θ = [shared, local_1, ..., local_k]`` (`GlobalModel`), and the stacked problem is
fitted by the core's strategies: evaluated by per-dataset blocks (``engine="block"``,
`nlsq_fn._drivers.block_linearize`, never forming the ``m × n`` Jacobian) or as one dense
problem through `solve` (``engine="dense"``). Both give the fit of the stacked problem.
"""

import dataclasses
import re
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import numpy as np

from .._drivers.block_linearize import GlobalModel, GlobalSolution, solve_by_blocks
from .._drivers.block_stepwise import can_step_blocks, solve_blocks_stepwise
from .._drivers.solve import solve
from .._drivers.solver import build_state
from .._drivers.start import raise_for_start, start_flags
from .._evaluation.precision import full_precision
from .._problem.conventions import vector_model
from .._results.covariance import covariance_parts
from .._results.global_fit_result import GlobalFitResult
from .._strategies.block_arrow import blocks_of_dense
from .._strategies.trf import TRF
from .global_fit_inputs import (
    block_solver,
    checked_datasets,
    flat_bounds_of,
    flat_names,
    flat_start,
    stacked_data,
)

__all__ = ["GlobalFitResult", "global_fit", "global_model"]

ENGINES = ("block", "dense")


@eqx.filter_jit
@full_precision
def _solve_stacked(model, data, state):
    solution = solve(model, data, state)
    parts = covariance_parts(solution.jac, solution.cost, data.n_points)
    return solution, parts


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
    checked = checked_datasets(datasets)
    k = len(checked)
    stacked_model = global_model(model, shared, k, p0=p0, param_style=param_style)
    one_model, names = stacked_model.model, tuple(stacked_model.names or ())
    shared, local = stacked_model.shared_names, stacked_model.local_names
    theta0 = flat_start(model, names, shared, local, p0, checked)
    lower, upper = flat_bounds_of(bounds, names, shared, local, k)
    _check_traceable(one_model, checked[0][0], stacked_model, theta0)
    data = stacked_data(checked, one_model, theta0, stacked_model)
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
    names_of_theta = flat_names(shared, local, k)
    # With TRF the block engine is driven step by step (only the model's part is
    # compiled); its first evaluation checks the start, instead of `init`'s program.
    stepwise = engine == "block" and type(solver.strategy) is TRF
    try:
        state = build_state(stacked_model, data, theta0, solver, check_start=not stepwise)
    except ValueError as error:
        message = re.sub(r"\bp\[(\d+)\]", lambda m: repr(names_of_theta[int(m[1])]), str(error))
        raise ValueError(message) from error
    n_points = sum(y.size for _, y, _ in checked)
    if engine == "dense":
        solution, parts = _solve_stacked(stacked_model, data, state)
        parts = jax.tree.map(np.asarray, parts)
        solution = jax.tree.map(np.asarray, solution)
        # As a fit by blocks reports it: residuals by dataset, no Jacobian or factor.
        solution = dataclasses.replace(
            solution, fun=solution.fun.reshape(data.y.shape), jac=None, factor=None
        )
        # `covariance(True)`: with the undetermined parameters' infinities.
        covariance = blocks_of_dense(
            parts.covariance(True), len(shared), k, parts.residual_variance
        )
        found = GlobalSolution(solution, covariance)
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
        flat_names=names_of_theta,
        n_datasets=k,
        solution=found,
        covariance=found.covariance.scaled(absolute_sigma),
        fun=residuals,
        n_points=n_points,
        engine=engine,
        absolute_sigma=absolute_sigma,
    )
