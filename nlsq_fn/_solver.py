"""Solver configuration and the validated starting state of a fit."""

from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Float, PyTree

from ._bounds import make_strictly_feasible
from ._data import Data, validate_data
from ._loss import AbstractLoss, Linear
from ._misc import is_concrete
from ._strategy import AbstractStrategy
from ._trf import TRF

JacobianMode = Literal["fwd", "rev"] | Callable


class Solver(eqx.Module):
    """How to fit: strategy, loss, bounds, scaling, tolerances (all immutable).

    **Arguments:**

    - `strategy`: `TRF()` (default; bounds allowed) or `LevenbergMarquardt()`.
    - `loss`: `Linear()` (default), `SoftL1`, `Huber`, `Cauchy`, `Arctan` or a subclass
        of `AbstractLoss`, each with its `f_scale`.
    - `bounds`: ``(lower, upper)``, each a scalar, a flat array or a pytree shaped like
        the parameters; ``±inf`` means unbounded. None means no bounds.
    - `x_scale`: characteristic scale of each parameter (scalar, array or pytree), or
        ``"jac"`` to scale by the Jacobian's column norms, as in SciPy. Default: 1 for
        TRF, ``"jac"`` for Levenberg–Marquardt (SciPy's defaults).
    - `ftol`, `xtol`, `gtol`: SciPy's relative tolerances on the cost reduction, the
        step and the (scaled) gradient.
    - `max_nfev`: evaluation budget; default ``100 * n_params``.
    - `jac`: ``"fwd"`` (forward-mode autodiff, default), ``"rev"`` (reverse mode, for
        models with many parameters and few outputs) or a function
        ``jac(x, params) -> (m, n)`` array of the model's derivatives with respect to the
        flattened parameters.
    - `factorization`: ``"qr"`` (default, keeps the Jacobian's conditioning) or
        ``"normal"`` (forms ``JᵀJ``: faster for very many points, squares the condition
        number).
    """

    strategy: AbstractStrategy = TRF()
    loss: AbstractLoss = Linear()
    bounds: tuple[PyTree[ArrayLike], PyTree[ArrayLike]] | None = None
    x_scale: PyTree[ArrayLike] | str | None = eqx.field(default=None, static=False)
    ftol: float = eqx.field(default=1e-8, static=True)
    xtol: float = eqx.field(default=1e-8, static=True)
    gtol: float = eqx.field(default=1e-8, static=True)
    max_nfev: int | None = eqx.field(default=None, static=True)
    jac: JacobianMode = eqx.field(default="fwd", static=True)
    factorization: Literal["qr", "normal"] = eqx.field(default="qr", static=True)


class SolverState(eqx.Module):
    """Where a fit starts and how it proceeds: the output of `init`, input of `solve`.

    Holds only arrays and static configuration, so it can be batched with `jax.vmap`
    (one state per dataset or per starting point) and passed through `jax.jit`.
    """

    params: PyTree[Float[Array, "..."]]
    lower: Float[Array, " n"]
    upper: Float[Array, " n"]
    x_scale: Float[Array, " n"] | None
    strategy: AbstractStrategy
    loss: AbstractLoss
    ftol: float = eqx.field(static=True)
    xtol: float = eqx.field(static=True)
    gtol: float = eqx.field(static=True)
    max_nfev: int = eqx.field(static=True)
    jac: JacobianMode = eqx.field(static=True)
    factorization: str = eqx.field(static=True)


def _flat_like(value, params, name, dtype):
    """A bound or scale given as a scalar, a flat array or a params-shaped pytree."""
    flat_params, _ = ravel_pytree(params)
    n = flat_params.size
    if jax.tree.structure(value) == jax.tree.structure(params) and not isinstance(
        value, (int, float)
    ) and jax.tree.structure(params).num_leaves > 1:
        parts = [
            jnp.broadcast_to(jnp.asarray(v, dtype), jnp.shape(p))
            for v, p in zip(jax.tree.leaves(value), jax.tree.leaves(params), strict=True)
        ]
        return jnp.concatenate([jnp.ravel(part) for part in parts]).astype(dtype)
    array = jnp.asarray(value, dtype)
    if array.ndim == 0:
        return jnp.full((n,), array, dtype)
    if array.shape != (n,):
        raise ValueError(
            f"`{name}` has shape {array.shape}, but the parameters have {n} entries; "
            "give a scalar, a length-n array or a pytree shaped like the parameters."
        )
    return array


def _float_params(p0):
    leaves = jax.tree.leaves(p0)
    if not leaves:
        raise ValueError("`p0` has no parameters.")
    dtype = jnp.result_type(*[jnp.asarray(leaf) for leaf in leaves])
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = jnp.result_type(float)
    return jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype), p0), dtype


def init(
    model: Callable, data: Data, p0: PyTree[ArrayLike], solver: Solver = Solver()
) -> SolverState:
    """Validate a fit's inputs and build the starting state for `solve`.

    Checks shapes, NaN/inf in the data, ``sigma > 0``, bounds (``lower < upper``, `p0`
    inside), the model's output shape, and that the model is finite at `p0`, raising a
    `ValueError` that names the problem. Value checks are skipped for traced inputs
    (under `jax.jit` or `jax.vmap`), where `solve` reports bad input through its status.
    """
    if not isinstance(data, Data):
        raise TypeError(f"`data` must be an nlsq_fn.Data, got {type(data).__name__}.")
    validate_data(data)
    params, dtype = _float_params(p0)
    x0, _ = ravel_pytree(params)
    n = x0.size
    strategy = solver.strategy
    if solver.bounds is None:
        lower = jnp.full((n,), -jnp.inf, dtype)
        upper = jnp.full((n,), jnp.inf, dtype)
    else:
        if len(solver.bounds) != 2:
            raise ValueError("`bounds` must be a pair (lower, upper).")
        lower = _flat_like(solver.bounds[0], params, "lower bound", dtype)
        upper = _flat_like(solver.bounds[1], params, "upper bound", dtype)
    x_scale = solver.x_scale
    if x_scale is None:
        x_scale = "jac" if not strategy.supports_bounds else 1.0
    if isinstance(x_scale, str):
        if x_scale != "jac":
            raise ValueError(f"`x_scale` must be 'jac' or positive numbers, got {x_scale!r}.")
        x_scale_flat = None
    else:
        x_scale_flat = _flat_like(x_scale, params, "x_scale", dtype)
    if is_concrete(lower, upper, x0):
        lower_np, upper_np, x0_np = map(np.asarray, (lower, upper, x0))
        if np.any(lower_np >= upper_np):
            bad = np.flatnonzero(lower_np >= upper_np).tolist()
            raise ValueError(
                f"Each lower bound must be strictly less than its upper bound "
                f"(violated at flat parameter indices {bad})."
            )
        if not np.all(np.isfinite(x0_np)):
            raise ValueError("`p0` contains NaN or inf.")
        if np.any((x0_np < lower_np) | (x0_np > upper_np)):
            bad = np.flatnonzero((x0_np < lower_np) | (x0_np > upper_np)).tolist()
            raise ValueError(f"`p0` is outside the bounds at flat parameter indices {bad}.")
        if not strategy.supports_bounds and (
            np.any(np.isfinite(lower_np)) or np.any(np.isfinite(upper_np))
        ):
            raise ValueError(
                f"{type(strategy).__name__} does not support bounds; use TRF()."
            )
        # x_scale may be traced even when the bounds are not (jnp.full under jit).
        if x_scale_flat is not None and is_concrete(x_scale_flat) and not (
            np.all(np.isfinite(np.asarray(x_scale_flat)))
            and np.all(np.asarray(x_scale_flat) > 0)
        ):
            raise ValueError("`x_scale` must be 'jac' or finite positive numbers.")
    if strategy.supports_bounds:
        x0 = make_strictly_feasible(x0, lower, upper)
        params = ravel_pytree(params)[1](x0)
    _check_model(model, data, params)
    for name in ("ftol", "xtol", "gtol"):
        value = getattr(solver, name)
        if not value >= 0:
            raise ValueError(f"`{name}` must be non-negative, got {value}.")
    if solver.ftol == solver.xtol == solver.gtol == 0:
        raise ValueError("At least one of `ftol`, `xtol`, `gtol` must be positive.")
    max_nfev = 100 * n if solver.max_nfev is None else int(solver.max_nfev)
    if max_nfev <= 0:
        raise ValueError(f"`max_nfev` must be positive, got {max_nfev}.")
    return SolverState(
        params=params,
        lower=lower,
        upper=upper,
        x_scale=x_scale_flat,
        strategy=strategy,
        loss=solver.loss,
        ftol=solver.ftol,
        xtol=solver.xtol,
        gtol=solver.gtol,
        max_nfev=max_nfev,
        jac=solver.jac,
        factorization=solver.factorization,
    )


def _check_model(model, data, params):
    try:
        out = jax.eval_shape(model, data.x, params)
    except Exception as error:
        raise ValueError(
            f"Calling the model as model(x, params) at p0 failed: {error}"
        ) from error
    shape = getattr(out, "shape", None)
    if shape is None:
        raise ValueError(
            f"The model must return one array; it returned {type(out).__name__}."
        )
    if shape != data.y.shape:
        raise ValueError(
            f"The model returns shape {shape} but `y` has shape {data.y.shape}; "
            "they must match."
        )
    if is_concrete(data, params):
        prediction = model(data.x, params)
        if not is_concrete(prediction):  # the model closes over traced values
            return
        prediction = np.asarray(prediction)
        counted = np.ones(prediction.shape, bool) if data.mask is None else np.asarray(data.mask)
        if not np.all(np.isfinite(prediction[counted])):
            raise ValueError(
                "The model returns NaN or inf at p0; choose another starting point or "
                "check the model."
            )
