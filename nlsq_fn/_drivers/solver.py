"""Solver configuration and the validated starting state of a fit."""

from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Float, PyTree

from .._evaluation.chunking import choose_chunk_size
from .._evaluation.finite_difference import FINITE_DIFFERENCE_METHODS
from .._evaluation.linearize import FACTORIZATIONS, Factorization, check_chunkable
from .._evaluation.sparse_jacobian import GroupedDifferences
from .._misc import as_jax_array, is_concrete
from .._problem.arguments import as_count
from .._problem.data import Data, validate_data
from .._problem.host_errors import reraise_host_errors
from .._problem.loss import AbstractLoss, Linear
from .._strategies.strategy import AbstractStrategy
from .._strategies.trf import TRF
from .model_checks import check_model, jacobian_function
from .options import as_loss_module, as_strategy
from .start import (
    check_real_start,
    check_start_and_bounds,
    host_start_flags,
    raise_for_start,
    start_flags_compiled,
    strictly_inside,
)

JacobianMode = Literal["fwd", "rev", "2-point", "3-point", "cs"] | Callable | GroupedDifferences


class Solver(eqx.Module):
    """How to fit: strategy, loss, bounds, scaling, tolerances (all immutable).

    **Arguments:**

    - `strategy`: `TRF()` (default; bounds allowed), `Dogbox()` (bounds allowed,
        rectangular trust regions) or `LevenbergMarquardt()`.
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
        flattened parameters; or, on request, SciPy's finite differences ``"2-point"``,
        ``"3-point"`` or ``"cs"`` (complex step), with SciPy's steps (see `diff_step`)
        kept inside the bounds.
    - `diff_step`: relative step of the finite differences (scalar or one per flattened
        parameter), as SciPy's; None takes SciPy's default.
    - `factorization`: how the Jacobian is reduced to the ``n × n`` factor the steps
        are computed from. ``"auto"`` (default): the QR factor of ``J`` when all points
        are evaluated at once; in chunks, ``JᵀJ`` summed over the chunks (one matrix
        product per chunk, fast), whose square root is kept only where the
        column-scaled ``JᵀJ`` has a condition number below ``1/sqrt(eps)`` (about 7e7
        in float64), so that no accuracy is lost, and otherwise a second, TSQR pass
        over the chunks. ``"qr"`` always takes the QR factor (TSQR in chunks: several
        times slower on CPU); ``"normal"`` always uses ``JᵀJ`` (squares the condition
        number). Across a `vmap`-ed batch of float64 fits of at most 8 parameters,
        ``"auto"`` takes each member's ``JᵀJ`` under the same condition, iteration by
        iteration, and its QR factor otherwise.
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

    strategy: AbstractStrategy = eqx.field(default=TRF(), converter=as_strategy)
    loss: AbstractLoss = eqx.field(default=Linear(), converter=as_loss_module)
    bounds: tuple[PyTree[ArrayLike], PyTree[ArrayLike]] | None = None
    x_scale: PyTree[ArrayLike] | str | None = eqx.field(default=None, static=False)
    ftol: float = eqx.field(default=1e-8, static=True)
    xtol: float = eqx.field(default=1e-8, static=True)
    gtol: float = eqx.field(default=1e-8, static=True)
    max_nfev: int | None = eqx.field(default=None, static=True)
    jac: JacobianMode = eqx.field(default="fwd", static=True)
    diff_step: float | tuple[float, ...] | None = eqx.field(default=None, static=True)
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
    factorization: Factorization = eqx.field(static=True)
    verbose: int = eqx.field(default=0, static=True)
    callback: Callable | None = eqx.field(default=None, static=True)
    chunk_size: int | None = eqx.field(default=None, static=True)
    # True when `chunk_size` was chosen automatically for traced data: `solve` checks
    # that the chunks give the one-shot values before trusting them (`chunks_agree`).
    verify_chunks: bool = eqx.field(default=False, static=True)
    # False when every bound is known (concretely) to be infinite.
    bounded: bool = eqx.field(default=True, static=True)
    diff_step: float | tuple[float, ...] | None = eqx.field(default=None, static=True)
    # True for a model JAX cannot trace (NumPy): `solve` runs it on the host.
    host_model: bool = eqx.field(default=False, static=True)


def flat_like(value, params, name, dtype):
    """A bound or scale given as a scalar, a flat array or a params-shaped pytree."""
    return as_jax_array(flat_values(value, params, name, dtype))


def flat_values(value, params, name, dtype):
    """`flat_like` without the copy to the device (NumPy for host values)."""
    n = sum(int(np.size(leaf)) for leaf in jax.tree.leaves(params))
    structure = jax.tree.structure(params)
    # Host values are shaped with NumPy: a `jnp` call on them would compile a small
    # program each (see `as_jax_array`).
    xp = np if is_concrete(value) else jnp
    if jax.tree.structure(value) == structure and not jax.tree_util.treedef_is_leaf(structure):
        try:
            parts = [
                xp.broadcast_to(xp.asarray(v, dtype), np.shape(p))
                for v, p in zip(jax.tree.leaves(value), jax.tree.leaves(params), strict=True)
            ]
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"Each entry of `{name}` must be a scalar or shaped like the parameter "
                f"it bounds: {error}"
            ) from None
        return xp.asarray(xp.concatenate([xp.ravel(part) for part in parts]), dtype)
    try:
        if value is None:  # NumPy would make it NaN
            raise TypeError(f"`{name}` is None")
        array = xp.asarray(value, dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"`{name}` must be a scalar, a length-{n} array or a pytree with the same "
            f"structure as the parameters ({jax.tree.structure(params)}); got "
            f"{jax.tree.structure(value)}."
        ) from error
    if array.ndim == 0:
        return xp.full((n,), array, dtype)
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
    dtype = jnp.result_type(*leaves)
    check_real_start(dtype)
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = jnp.result_type(float)
    return jax.tree.map(lambda leaf: as_jax_array(leaf, dtype), p0), dtype


@reraise_host_errors
def init(
    model: Callable, data: Data, p0: PyTree[ArrayLike], solver: Solver = Solver()
) -> SolverState:
    """Validate a fit's inputs and build the starting state for `solve`.

    Checks shapes, NaN/inf in the data, ``sigma > 0``, bounds (``lower < upper``, `p0`
    inside), the model's output shape, and that the model is finite at `p0`, raising a
    `ValueError` that names the problem. Value checks are skipped for traced inputs
    (under `jax.jit` or `jax.vmap`), where `solve` reports bad input through its status.
    """
    return build_state(model, data, p0, solver)


def build_state(
    model: Callable, data: Data, p0, solver: Solver, check_start: bool = True
) -> SolverState:
    """`init`; with ``check_start=False`` the model's values at the start are not
    checked here (a JAX model's checks need a compiled evaluation): the caller checks
    them with `start_flags` inside its own compiled fit and `raise_for_start`."""
    if not isinstance(data, Data):
        raise TypeError(f"`data` must be an nlsq_fn.Data, got {type(data).__name__}.")
    validate_data(data)
    params, dtype = _float_params(p0)
    x0, _ = ravel_pytree(params)
    n = x0.size
    if n == 0:
        raise ValueError("`p0` has no parameters.")
    strategy = solver.strategy
    if solver.bounds is None:
        lower = as_jax_array(np.full((n,), -np.inf, dtype))
        upper = as_jax_array(np.full((n,), np.inf, dtype))
    else:
        if len(solver.bounds) != 2:
            raise ValueError("`bounds` must be a pair (lower, upper).")
        lower = flat_like(solver.bounds[0], params, "lower bound", dtype)
        upper = flat_like(solver.bounds[1], params, "upper bound", dtype)
    x_scale = solver.x_scale
    if x_scale is None:
        x_scale = "jac" if not strategy.supports_bounds else 1.0
    if isinstance(x_scale, str):
        if x_scale != "jac":
            raise ValueError(f"`x_scale` must be 'jac' or positive numbers, got {x_scale!r}.")
        x_scale_flat = None
    else:
        x_scale_flat = flat_like(x_scale, params, "x_scale", dtype)
    if is_concrete(lower, upper, x0):
        x0_np, lower_np, upper_np = (np.asarray(a) for a in (x0, lower, upper))
        check_start_and_bounds(params, x0_np, lower_np, upper_np, strategy)
        # x_scale may be traced even when the bounds are not (jnp.full under jit).
        if (
            x_scale_flat is not None
            and is_concrete(x_scale_flat)
            and not (
                np.all(np.isfinite(np.asarray(x_scale_flat)))
                and np.all(np.asarray(x_scale_flat) > 0)
            )
        ):
            raise ValueError("`x_scale` must be 'jac' or finite positive numbers.")

    # The state keeps `p0` as given (summaries show it); `solve` starts strictly inside
    # the bounds, as SciPy's TRF, and the model is checked there (dogbox starts at p0).
    # Shapes are checked abstractly (the start has the shape of `p0`); only a model or
    # `jac` run on the host needs the start's values.
    def start():
        return ravel_pytree(params)[1](strictly_inside(strategy, x0, lower, upper))

    on_host, host_prediction = check_model(model, data, params, start)
    _check_loss_scale(solver.loss)
    for name in ("ftol", "xtol", "gtol"):
        value = getattr(solver, name)
        if not value >= 0:
            raise ValueError(f"`{name}` must be non-negative, got {value}.")
    if solver.ftol == solver.xtol == solver.gtol == 0:
        raise ValueError("At least one of `ftol`, `xtol`, `gtol` must be positive.")
    if solver.factorization not in FACTORIZATIONS:
        raise ValueError(
            f"`factorization` must be 'auto', 'qr' or 'normal', got {solver.factorization!r}."
        )
    chunk_size, verify_chunks = solver.chunk_size, False
    matrix_free = getattr(strategy, "matrix_free", False)
    if matrix_free:
        if chunk_size not in ("auto", None):
            raise ValueError(
                f"{type(strategy).__name__} never forms the Jacobian: `chunk_size` does "
                "not apply (use chunk_size=None)."
            )
        chunk_size = None
    if isinstance(chunk_size, str):
        if chunk_size != "auto":
            raise ValueError(
                f"`chunk_size` must be 'auto', None or a positive integer, got {chunk_size!r}."
            )
        # A NumPy model runs on the host in one piece (SciPy speed anyway).
        chunk_size, verify_chunks = (
            (None, False) if on_host else choose_chunk_size(model, data, params, n, solver.jac)
        )
    elif chunk_size is not None:
        chunk_size = int(chunk_size)
        check_chunkable(data, chunk_size)
    jac = solver.jac
    grouped = isinstance(jac, GroupedDifferences)
    if not grouped and not callable(jac) and jac not in ("fwd", "rev", *FINITE_DIFFERENCE_METHODS):
        raise ValueError(
            f"`jac` must be a callable, 'fwd', 'rev', '2-point', '3-point' or 'cs'; got {jac!r}."
        )
    if callable(jac):
        jac = jacobian_function(jac, data, params, start)
    if on_host:
        if jac in ("fwd", "rev"):  # JAX cannot differentiate it: SciPy's default
            jac = "2-point"
        if chunk_size is not None:
            raise ValueError("`chunk_size` needs a model written with jax.numpy.")
    diff_step = _diff_step(solver.diff_step, n)
    max_nfev = 100 * n if solver.max_nfev is None else as_count(solver.max_nfev, "max_nfev")
    assert max_nfev is not None  # as_count returns None only for None
    if solver.verbose not in (0, 1, 2):
        raise ValueError(f"`verbose` must be 0, 1 or 2, got {solver.verbose!r}.")
    if solver.callback is not None and not callable(solver.callback):
        raise TypeError("`callback` must be callable or None.")
    if max_nfev <= 0:
        raise ValueError(f"`max_nfev` must be positive, got {max_nfev}.")
    state = SolverState(
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
        jac=jac,
        diff_step=diff_step,
        host_model=on_host,
        factorization=solver.factorization,
        verbose=solver.verbose,
        callback=solver.callback,
        chunk_size=chunk_size,
        verify_chunks=verify_chunks,
        bounded=solver.bounds is not None
        and not (
            is_concrete(lower, upper)
            and not np.any(np.isfinite(np.asarray(lower)))
            and not np.any(np.isfinite(np.asarray(upper)))
        ),
    )
    if on_host:
        if host_prediction is not None:
            raise_for_start(*host_start_flags(host_prediction, data))
    elif check_start and is_concrete(data, params):
        flags = start_flags_compiled(model, data, state)
        if is_concrete(flags):  # else the model closes over traced values
            raise_for_start(*flags)
    return state


def _diff_step(diff_step, n):
    """`diff_step` as a hashable static value: None, a float or one float per entry."""
    if diff_step is None:
        return None
    steps = np.asarray(diff_step, dtype=float)
    if steps.ndim == 0:
        return float(steps)
    if steps.shape != (n,):
        raise ValueError(
            f"`diff_step` has shape {steps.shape}; give a scalar or one step for each of "
            f"the {n} parameters."
        )
    return tuple(float(s) for s in steps)


def _check_loss_scale(loss) -> None:
    if not is_concrete(loss.f_scale):
        return  # under jit: `solve` reports it with status -1
    f_scale = np.asarray(loss.f_scale, float)
    with np.errstate(over="ignore", divide="ignore"):
        usable = np.isfinite(f_scale) and f_scale > 0 and np.isfinite(1 / f_scale**2)
    if not usable:
        raise ValueError(
            f"The loss's `f_scale` must be positive and finite (and not so small that "
            f"its square underflows), got {float(f_scale)!r}."
        )
