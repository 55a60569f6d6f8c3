"""`curve_fit_batch`: SciPy's `curve_fit` over a stack of datasets, one call.

The pixel-map workload (one small model fitted to every pixel, channel or well) in one
call: each member's parameters and covariance, as `curve_fit` would give for that
member alone, from one batched fit (`solve_batch`: finished members stop costing).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .._drivers.batch import init_batch, solve_batch, with_starts
from .._drivers.solver import Solver
from .._evaluation.compiled import compiled
from .._misc import optional_import
from .._problem.conventions import UnpackedModel
from .._problem.data import Data
from .._results.covariance import covariance_from_jacobian
from .._results.solution import Solution


def _progress_bar(progress: bool | None, size: int):
    """A tqdm bar over the batch's members, or None (see `curve_fit_batch`)."""
    if progress is False:
        return None
    try:
        tqdm = optional_import("tqdm.auto", "progress")
    except ImportError:
        if progress is None:  # the default: a bar only where tqdm is installed
            return None
        raise
    return tqdm.tqdm(
        total=size, unit="fit", delay=2.0 if progress is None else 0.0, leave=progress is not None
    )


@compiled
def _covariances(solution: Solution, n_points, absolute_sigma: bool):
    return jax.vmap(lambda jac, cost, m: covariance_from_jacobian(jac, cost, m, absolute_sigma))(
        solution.jac, solution.cost, n_points
    )


def curve_fit_batch(
    f: Callable,
    xdata,
    ydata,
    p0,
    sigma=None,
    absolute_sigma: bool = False,
    bounds=(-np.inf, np.inf),
    method: str | None = None,
    progress: bool | None = None,
    **solver_options,
) -> tuple[jax.Array, jax.Array, Solution]:
    """Fit ``f(xdata, *params)`` to every row of `ydata`, each member on its own.

    **Arguments:**

    - `f`: the model, SciPy's way, written with `jax.numpy`.
    - `xdata`: shared by every member (``(m,)``), or one row per member (``(batch, m)``).
    - `ydata`: ``(batch, m)``: one dataset per row.
    - `p0`: ``(n,)``, one start for all, or ``(batch, n)``, a start per member.
    - `sigma`: None, ``(m,)`` or ``(batch, m)`` standard deviations.
    - `absolute_sigma`, `bounds`, `method`: as `curve_fit` (`method` defaults to
        ``"lm"`` without bounds, ``"trf"`` with them).
    - `progress`: a tqdm bar counting finished members: None (default) shows it for
        batches that take more than two seconds, where tqdm is installed; True always;
        False never.
    - `**solver_options`: `Solver`'s (``ftol``, ``xtol``, ``gtol``, ``max_nfev``,
        ``loss``, ``x_scale``...).

    **Returns:** ``(popt, pcov, solution)``: ``(batch, n)`` parameters, ``(batch, n, n)``
    covariances (computed as `curve_fit` does, per member) and the batched `Solution`
    (``status``, ``success``, ``nfev``, ... per member). Members that fail do not raise:
    check ``solution.success``.
    """
    ydata = np.asarray(ydata)
    if ydata.ndim != 2:
        raise ValueError(f"`ydata` must be (batch, m), got shape {ydata.shape}.")
    size, m = ydata.shape
    xdata = np.asarray(xdata)
    if xdata.shape not in ((m,), (size, m)):
        raise ValueError(f"`xdata` must be ({m},) or ({size}, {m}), got {xdata.shape}.")
    if sigma is not None:
        sigma = np.broadcast_to(np.asarray(sigma), ydata.shape)
    p0 = np.asarray(p0, float)
    if p0.ndim not in (1, 2) or (p0.ndim == 2 and p0.shape[0] != size):
        raise ValueError(f"`p0` must be (n,) or ({size}, n), got shape {p0.shape}.")
    unbounded = all(np.all(np.isinf(np.asarray(b))) for b in bounds)
    if method is None:
        method = "lm" if unbounded else "trf"
    if not unbounded:
        solver_options["bounds"] = bounds

    # The same wrapper for the same `f` (equal and of equal hash): a second call with
    # the same function compiles nothing.
    model = UnpackedModel(f)
    data = Data(np.broadcast_to(xdata, ydata.shape), ydata, sigma=sigma)
    # (type: ignore: `Solver` converts a method name to its strategy, which mypy's
    # dataclass model does not know.)
    solver = Solver(strategy=method, **solver_options)  # type: ignore[arg-type]
    first = p0 if p0.ndim == 1 else p0[0]
    state = init_batch(model, data, jnp.asarray(first), solver)
    if p0.ndim == 2:
        state = with_starts(state, jnp.asarray(p0))
    bar = _progress_bar(progress, size)
    try:
        solution = solve_batch(
            model,
            data,
            state,
            progress=None if bar is None else lambda finished, _: bar.update(finished - bar.n),
        )
    finally:
        if bar is not None:
            bar.close()
    pcov = _covariances(solution, jnp.full(size, m), absolute_sigma)
    return solution.x, pcov, solution
