"""`curve_fit_batch`: SciPy's `curve_fit` over a stack of datasets, one call.

The pixel-map workload (one small model fitted to every pixel, channel or well) in one
call: each member's parameters and covariance, as `curve_fit` would give for that
member alone, from one batched fit (`solve_batch`: finished members stop costing).
A map with several batch axes is that fit reshaped in and out; ragged datasets are
fitted by length (`curve_fit_batch_ragged`).
"""

import math
from collections.abc import Callable

import jax
import numpy as np

from .._drivers.solver import Solver
from .._problem.conventions import UnpackedModel
from .._problem.data import Data
from .._results.solution import Solution
from .curve_fit_batch_ragged import fit_ragged, is_ragged, ragged_members
from .curve_fit_batch_stack import Progress, fit_stack


def _as_array(name: str, value) -> np.ndarray:
    """`value` as an array; a list of arrays of different lengths is named, not left to
    NumPy's message."""
    try:
        return np.asarray(value)
    except ValueError:
        lengths = sorted({np.size(item) for item in value})
        raise ValueError(
            f"`{name}` is a list of arrays of different lengths ({lengths[:5]}): for "
            "ragged datasets give both `xdata` and `ydata` as lists, one 1-D array per "
            "dataset."
        ) from None


def _map_inputs(xdata, ydata, sigma, p0):
    """``(x, y, sigma, p0)`` flattened to one batch axis, checked against `ydata`'s
    batch shape, and that batch shape."""
    ydata = _as_array("ydata", ydata)
    if ydata.ndim < 2 or ydata.size == 0:
        raise ValueError(
            f"`ydata` must have batch axes, (batch, m) or (..., m) with m > 0, or be a list "
            f"of datasets; got shape {ydata.shape} (one dataset: use `curve_fit`)."
        )
    batch, m = ydata.shape[:-1], ydata.shape[-1]
    xdata = _as_array("xdata", xdata)
    # Shared by every member unless shaped like `ydata`: (m,), or SciPy's (k, m) for k
    # independent variables.
    shared = xdata.shape != ydata.shape
    if xdata.ndim == 0 or xdata.shape[-1] != m or (shared and xdata.ndim > 2):
        raise ValueError(
            f"`xdata` must be ({m},) or (k, {m}), shared by every member, or "
            f"{ydata.shape} like `ydata`; got shape {xdata.shape}."
        )
    if sigma is not None:
        sigma = np.asarray(sigma)
        if sigma.shape not in ((m,), ydata.shape):
            raise ValueError(
                f"`sigma` must be None, ({m},) or {ydata.shape} like `ydata`; got shape "
                f"{sigma.shape}."
            )
        sigma = np.broadcast_to(sigma, ydata.shape).reshape(-1, m)
    p0 = np.asarray(p0, float)
    if p0.ndim != 1 and p0.shape[:-1] != batch:
        axes = ", ".join(map(str, batch))
        raise ValueError(
            f"`p0` must be (n,), one start for all, or ({axes}, n), one per member of "
            f"`ydata` {ydata.shape}; got shape {p0.shape}."
        )
    size = math.prod(batch)
    if shared:
        x = np.broadcast_to(xdata, (size, *xdata.shape))
    else:
        x = xdata.reshape(size, m)
    flat_p0 = p0 if p0.ndim == 1 else p0.reshape(size, p0.shape[-1])
    return Data(x, ydata.reshape(size, m), sigma=sigma), flat_p0, batch


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
    pad: bool = False,
    **solver_options,
) -> tuple[jax.Array, jax.Array, Solution]:
    """Fit ``f(xdata, *params)`` to every dataset of a stack, each member on its own.

    **Arguments:**

    - `f`: the model, SciPy's way, written with `jax.numpy`.
    - `xdata`, `ydata`: either arrays, `ydata` ``(batch, m)`` or a map ``(H, W, m)``
        (any number of batch axes) and `xdata` shared (``(m,)``, or SciPy's ``(k, m)``
        for ``k`` independent variables) or per member (shaped like `ydata`); or ragged
        datasets, lists (or tuples) of 1-D arrays, one ``x`` and one ``y`` of the same
        length per member.
    - `p0`: ``(n,)``, one start for all, or one per member (``(batch, n)``,
        ``(H, W, n)``; ``(len(ydata), n)`` for lists).
    - `sigma`: None or standard deviations: ``(m,)`` or shaped like `ydata` for arrays,
        a list of 1-D arrays (one per member) for lists.
    - `absolute_sigma`, `bounds`, `method`: as `curve_fit` (`method` defaults to
        ``"lm"`` without bounds, ``"trf"`` with them).
    - `progress`: a tqdm bar counting finished members: None (default) shows it for
        batches that take more than two seconds, where tqdm is installed; True always;
        False never.
    - `pad`: for ragged lists only. False (default): members are grouped by their exact
        length, one batched fit (one compiled program) per length, and the model sees
        each member's own `x`. True: every member is padded to the longest (masked
        points, `pad_datasets`) and fitted in one batch, one program for all lengths;
        first the model is checked on the user's data to give the same values on the
        real points once padded (a model using `x` as a whole, e.g. ``x.mean()``,
        raises). The results are the same fits either way.
    - `**solver_options`: `Solver`'s (``ftol``, ``xtol``, ``gtol``, ``max_nfev``,
        ``loss``, ``x_scale``...).

    **Returns:** ``(popt, pcov, solution)``: parameters ``(*batch, n)``, covariances
    ``(*batch, n, n)`` (computed as `curve_fit` does, per member) and the batched
    `Solution` (``status``, ``success``, ``nfev``, ... per member), every field with the
    leading batch axes of `popt` (``solution.message`` is a flat list). For ragged lists
    the batch axis is the lists' order, and the per-point fields ``solution.fun`` and
    ``solution.jac`` are padded to the longest member with NaN beyond each member's own
    length (``solution.fun[i, :len(ydata[i])]`` is member ``i``'s); ``solution.jac`` is
    None where members were fitted in chunks (``chunk_size``, or long members under
    ``"auto"``; their covariances come from ``solution.factor``). Members that fail do
    not raise: check ``solution.success``.
    """
    ragged = is_ragged(xdata, ydata)
    if ragged:
        members = ragged_members(xdata, ydata, sigma, p0)
        size = len(members[1])
    else:
        data, flat_p0, batch = _map_inputs(xdata, ydata, sigma, p0)
        size = data.y.shape[0]
    unbounded = all(np.all(np.isinf(np.asarray(b))) for b in bounds)
    if method is None:
        method = "lm" if unbounded else "trf"
    if not unbounded:
        solver_options["bounds"] = bounds

    # The same wrapper for the same `f` (equal and of equal hash): a second call with
    # the same function compiles nothing.
    model = UnpackedModel(f)
    # (type: ignore: `Solver` converts a method name to its strategy, which mypy's
    # dataclass model does not know.)
    solver = Solver(strategy=method, **solver_options)  # type: ignore[arg-type]
    bar = Progress(progress, size)
    try:
        if ragged:
            return fit_ragged(model, members, solver, absolute_sigma, bar, pad)
        popt, pcov, solution = fit_stack(
            model,
            data,
            flat_p0,
            solver,
            absolute_sigma,
            bar,
            member_name=lambda i: f"`ydata[{', '.join(map(str, np.unravel_index(i, batch)))}]`",
        )
    finally:
        bar.close()

    def unflatten(leaf):  # the leading batch axis back to the map's axes
        return leaf.reshape(*batch, *leaf.shape[1:])

    return unflatten(popt), unflatten(pcov), jax.tree.map(unflatten, solution)
