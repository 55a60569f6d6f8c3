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
from ._chunking import choose_chunk_size
from ._data import Data, validate_data
from ._linearize import FACTORIZATIONS, Factorization, check_chunkable
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
    - `factorization`: how the Jacobian is reduced to the ``n × n`` factor the steps
        are computed from. ``"auto"`` (default): the QR factor of ``J`` when all points
        are evaluated at once; in chunks, ``JᵀJ`` summed over the chunks (one matrix
        product per chunk, fast), whose square root is kept only where the
        column-scaled ``JᵀJ`` has a condition number below ``1/sqrt(eps)`` (about 7e7
        in float64), so that no accuracy is lost, and otherwise a second, TSQR pass
        over the chunks. ``"qr"`` always takes the QR factor (TSQR in chunks: several
        times slower on CPU); ``"normal"`` always uses ``JᵀJ`` (squares the condition
        number).
    - `verbose`: 0 (silent), 1 (termination report, printed by the front ends) or 2
        (SciPy's iteration table, printed from inside the compiled loop).
    - `callback`: ``callback(iteration, params, cost, grad)`` called after each
        iteration from inside the compiled loop; returning True stops the fit (status
        -3). It is static configuration: reuse one callback object to reuse the
        compiled fit. Under `jax.vmap` it is called once per member of the batch.
    - `chunk_size`: ``"auto"`` (default), None or an integer. An integer evaluates the
        residuals and Jacobian `chunk_size` points at a time (along the leading axis of
        `y` and of every array in `x`) and folds them into the ``n``-sized summary on
        the fly: memory stays ``O(chunk_size * n)`` instead of ``O(m * n)``, and the
        solution's `jac` is None (its `factor` gives ``JᵀJ`` for covariances). None
        evaluates all points at once and stores the full Jacobian in the solution.
        ``"auto"`` chunks when there are at least four chunks' worth of points (a chunk
        holds about ``32768 / n`` points, a power of two between 1,024 and 16,384:
        ``32768`` numbers fit a core's L2 cache), the data have their points along the
        leading axis, the Jacobian is autodiff's, and a probe shows the model is
        pointwise (on 16 points it returns what it returns on the two halves of 8), so
        that chunks see exactly what the whole would; otherwise one shot. Chunked
        results equal the unchunked ones up to rounding.
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
    factorization: Factorization = eqx.field(default="auto", static=True)
    verbose: int = eqx.field(default=0, static=True)
    callback: Callable | None = eqx.field(default=None, static=True)
    chunk_size: int | Literal["auto"] | None = eqx.field(default="auto", static=True)


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
    verbose: int = eqx.field(default=0, static=True)
    callback: Callable | None = eqx.field(default=None, static=True)
    chunk_size: int | None = eqx.field(default=None, static=True)
    # False when every bound is known (concretely) to be infinite.
    bounded: bool = eqx.field(default=True, static=True)


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
    try:
        array = jnp.asarray(value, dtype)
    except TypeError as error:
        raise ValueError(
            f"`{name}` must be a scalar, a length-{n} array or a pytree with the same "
            f"structure as the parameters ({jax.tree.structure(params)}); got "
            f"{jax.tree.structure(value)}."
        ) from error
    if array.ndim == 0:
        return jnp.full((n,), array, dtype)
    if array.shape != (n,):
        raise ValueError(
            f"`{name}` has shape {array.shape}, but the parameters have {n} entries; "
            "give a scalar, a length-n array or a pytree shaped like the parameters."
        )
    return array


def flat_parameter_names(params) -> list[str]:
    """A readable name for each entry of the flattened parameters (``['a', 'b[1]']``)."""
    names = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        base = jax.tree_util.keystr(path, simple=True, separator=".") or "p"
        size = int(np.size(leaf))
        if np.ndim(leaf) == 0:
            names.append(base)
        else:
            names.extend(f"{base}[{i}]" for i in range(size))
    return names


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
            raise ValueError(
                "Each lower bound must be strictly less than its upper bound "
                f"(violated for {_names_at(params, lower_np >= upper_np)})."
            )
        if not np.all(np.isfinite(x0_np)):
            raise ValueError("`p0` contains NaN or inf.")
        if np.any((x0_np < lower_np) | (x0_np > upper_np)):
            bad = _names_at(params, (x0_np < lower_np) | (x0_np > upper_np))
            raise ValueError(f"`p0` is outside the bounds for {bad}.")
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
    if solver.factorization not in FACTORIZATIONS:
        raise ValueError(
            f"`factorization` must be 'auto', 'qr' or 'normal', got "
            f"{solver.factorization!r}."
        )
    chunk_size = solver.chunk_size
    if isinstance(chunk_size, str):
        if chunk_size != "auto":
            raise ValueError(
                f"`chunk_size` must be 'auto', None or a positive integer, got {chunk_size!r}."
            )
        chunk_size = choose_chunk_size(model, data, params, n, solver.jac)
    elif chunk_size is not None:
        chunk_size = int(chunk_size)
        check_chunkable(data, chunk_size)
    max_nfev = 100 * n if solver.max_nfev is None else int(solver.max_nfev)
    if solver.verbose not in (0, 1, 2):
        raise ValueError(f"`verbose` must be 0, 1 or 2, got {solver.verbose!r}.")
    if solver.callback is not None and not callable(solver.callback):
        raise TypeError("`callback` must be callable or None.")
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
        verbose=solver.verbose,
        callback=solver.callback,
        chunk_size=chunk_size,
        bounded=solver.bounds is not None and not (
            is_concrete(lower, upper)
            and not np.any(np.isfinite(np.asarray(lower)))
            and not np.any(np.isfinite(np.asarray(upper)))
        ),
    )


def _names_at(params, where) -> str:
    names = flat_parameter_names(params)
    return ", ".join(names[i] for i in np.flatnonzero(where))


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
