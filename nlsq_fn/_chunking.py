"""``chunk_size="auto"``: evaluate large fits in chunks, but only models that allow it.

Chunked evaluation calls the model on slices of the data. That gives the same
residuals only when the model is *pointwise*: prediction ``i`` depends on the inputs of
point ``i`` alone. A model that normalises by ``x.mean()``, takes a cumulative sum or
an FFT along the points, or closes over an array with one entry per point is not, and
must see all the data at once. So the automatic choice chunks only when a probe shows
the model is pointwise: called on ``2k`` points it must return what it returns on the
two halves, concatenated. The probe uses the first ``2k`` rows of the data when they
are concrete, and made-up rows (``x`` in ``[1, 2]``) under `jax.jit`, evaluated
eagerly at trace time; any doubt (an error, NaN, traced closures, a callable `jac`)
means one shot.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ._linearize import check_chunkable
from ._memory import automatic_chunk_size, available_memory_bytes, estimate_memory
from ._misc import is_concrete

# Points per probe half: enough to show a non-pointwise operation, cheap to evaluate.
_PROBE_HALF = 8


def auto_chunk_size(n_points: int, n_params: int, dtype="float64") -> int | None:
    """The chunk size for `n_points` points and `n_params` parameters, None for one shot.

    On CPUs a chunk's Jacobian and its forward-mode tangents (about ``3 * chunk * n``
    numbers) should stay in a core's L2 cache (≥ 256 KiB) for the fused evaluation to
    run from it: ``chunk * n ≈ 32k`` numbers, a power of two between 1,024 and 16,384
    points. Below four chunks the one-shot evaluation is as fast and keeps the Jacobian.

    On accelerators the one-shot evaluation is as fast, and XLA compiles the chunked
    loop far more slowly (on an H200, 31–58 s against 0.6 s for 1e6 points): chunks
    there only keep a Jacobian that would not fit in half the device's free memory out
    of it (`automatic_chunk_size`).
    """
    if jax.default_backend() != "cpu":
        one_shot = estimate_memory(n_points, n_params, dtype)["total_gb"] * 1e9
        if one_shot <= 0.5 * available_memory_bytes():
            return None
        return automatic_chunk_size(n_params, dtype)
    target = max(1024, min(16384, 32768 // max(n_params, 1)))
    chunk = 1 << (target.bit_length() - 1)
    return chunk if n_points >= 4 * chunk else None


def choose_chunk_size(model: Callable, data, params, n_params: int, jac) -> int | None:
    """`auto_chunk_size` when the model is pointwise along the data's leading axis."""
    if data.y.ndim == 0 or callable(jac) or jac not in ("fwd", "rev"):
        return None
    chunk = auto_chunk_size(data.y.shape[0], n_params, data.y.dtype)
    if chunk is None:
        return None
    try:
        check_chunkable(data, chunk)
    except ValueError:
        return None
    return chunk if is_pointwise(model, data.x, params) else None


def _probe_rows(leaf):
    """The first ``2k`` rows of `leaf`, or made-up ones of its shape when it is traced."""
    rows = 2 * _PROBE_HALF
    if is_concrete(leaf):
        return np.asarray(leaf[:rows])  # slice first: no host copy of all the data
    shape = (rows,) + tuple(leaf.shape[1:])
    if jnp.issubdtype(leaf.dtype, jnp.inexact):
        values = np.linspace(1.0, 2.0, int(np.prod(shape))).reshape(shape)
    else:
        values = np.arange(int(np.prod(shape))).reshape(shape) % rows
    return values.astype(leaf.dtype)


def is_pointwise(model: Callable, x, params) -> bool:
    """Whether ``model(x, params)`` evaluated on ``2k`` points equals its evaluation on
    the two halves, concatenated (up to rounding), with finite values."""
    try:
        probe = jax.tree.map(_probe_rows, x)
        if not is_concrete(params):
            params = jax.tree.map(
                lambda p: np.ones(jnp.shape(p), jnp.result_type(p)), params
            )
        halves = [
            jax.tree.map(lambda a, s=s: a[s], probe)
            for s in (slice(0, _PROBE_HALF), slice(_PROBE_HALF, None))
        ]
        with jax.ensure_compile_time_eval():
            whole = model(probe, params)
            parts = [model(half, params) for half in halves]
        if not is_concrete(whole, parts):
            return False
        whole = np.asarray(whole)
        joined = np.concatenate([np.asarray(part) for part in parts])
    except Exception:  # any failure on slices: the model needs all points at once
        return False
    if whole.shape != joined.shape or whole.shape[:1] != (2 * _PROBE_HALF,):
        return False
    if not np.all(np.isfinite(whole)):
        return False
    rtol = 1e3 * np.finfo(whole.dtype).eps if np.issubdtype(whole.dtype, np.inexact) else 0
    scale = np.max(np.abs(whole))
    return bool(np.all(np.abs(whole - joined) <= rtol * np.maximum(np.abs(whole), scale)))
