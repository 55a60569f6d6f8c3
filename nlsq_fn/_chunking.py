"""``chunk_size="auto"``: evaluate large fits in chunks, but only where that changes nothing.

Chunked evaluation calls the model on slices of the data. That gives the same
residuals only when the model is *pointwise* along those slices: prediction ``i``
depends on the inputs of point ``i`` alone. A model that normalises by ``x.mean()`` or
``x.max()``, takes a cumulative sum or an FFT along the points, or closes over an array
with one entry per point is not, and must see all the data at once. A sample of rows
cannot show that (centring by the mean of 80,000 samples looks pointwise on the first
16), so the automatic choice is proved on the user's own data: the model's values and
its derivative along a direction in parameter space, at the start, evaluated on all the
points at once and on exactly the chunks the fit would use, must agree everywhere
(`same_on_pieces`). Only forward evaluations (``O(m)`` memory), never the Jacobian.
Data that are traced (``init`` inside `jax.jit`) cannot be checked, and are evaluated
in one shot; so are fits with a `jac` callable or finite differences.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._linearize import check_chunkable, chunk_of
from ._memory import automatic_chunk_size, available_memory_bytes, estimate_memory
from ._misc import is_concrete


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
    """`auto_chunk_size`, where chunking is proved not to change the model's values on
    these data (`chunks_agree_with_whole`); None (one shot) otherwise."""
    if data.y.ndim == 0 or callable(jac) or jac not in ("fwd", "rev"):
        return None
    chunk = auto_chunk_size(data.y.shape[0], n_params, data.y.dtype)
    if chunk is None or not is_concrete(data, params):
        return None
    try:
        check_chunkable(data, chunk)
    except ValueError:
        return None
    return chunk if chunks_agree_with_whole(model, data, params, chunk) else None


def _values_and_slopes(model: Callable, x, params, direction):
    """The model's values at `params` and their derivative along `direction`."""
    return jax.jvp(lambda p: model(x, p), (params,), (direction,))


def _direction(params):
    """A fixed pseudo-random direction in parameter space (every parameter moves)."""
    flat, unravel = ravel_pytree(params)
    rng = np.random.default_rng(20261203)
    values = rng.standard_normal(flat.shape) * np.maximum(np.abs(np.asarray(flat)), 1.0)
    return unravel(jnp.asarray(values, flat.dtype))


def _agree(reference, candidate, counted=True) -> bool:
    """`candidate` equals the finite `reference` up to rounding where `counted`,
    relative to the largest magnitude in `reference` (a fused or vectorised evaluation
    of another shape may move each entry by a few ulps of the largest)."""
    reference, candidate = np.asarray(reference), np.asarray(candidate)
    if reference.shape != candidate.shape:
        return False
    reference = np.where(counted, reference, 0)
    candidate = np.where(counted, candidate, 0)
    if not np.all(np.isfinite(reference)):
        return False
    if not np.issubdtype(reference.dtype, np.inexact):
        return bool(np.array_equal(reference, candidate))
    tolerance = 1e3 * np.finfo(reference.dtype).eps * np.max(np.abs(reference), initial=0.0)
    return bool(np.all(np.abs(candidate - reference) <= tolerance))


def same_on_pieces(model: Callable, x, params, pieces) -> bool:
    """Whether the model, evaluated on each piece of the data, gives what it gives on
    all of `x`: its values at `params` and their derivative along a direction in
    parameter space. `pieces` is a sequence of ``(x_piece, rows_of_whole,
    rows_of_piece)``: the output rows `rows_of_piece` of the piece must equal the rows
    `rows_of_whole` of the whole. A model that fails to evaluate on a piece needs the
    data as given: no."""
    direction = _direction(params)
    try:
        whole = _values_and_slopes(model, x, params, direction)
        for x_piece, rows_of_whole, rows_of_piece in pieces:
            piece = _values_and_slopes(model, x_piece, params, direction)
            for reference, candidate in zip(whole, piece, strict=True):
                if np.ndim(candidate) == 0 or not _agree(
                    np.asarray(reference)[rows_of_whole], np.asarray(candidate)[rows_of_piece]
                ):
                    return False
    except Exception:  # noqa: BLE001 - any failure on a piece: not the same
        return False
    return True


def chunks_agree_with_whole(model: Callable, data, params, chunk_size: int) -> bool:
    """`same_on_pieces` for exactly the chunks `chunked_linearize` evaluates (`chunk_of`,
    the last one shifted back and its repeated rows masked), at the counted points. The
    chunks are evaluated together (`jax.vmap` over them, which evaluates each one on its
    own), so the check costs a few forward passes over the data."""
    n_points = data.y.shape[0]
    if n_points <= chunk_size:
        return True
    n_chunks = -(-n_points // chunk_size)
    direction = _direction(params)

    def piece(i):
        first_new = i * chunk_size
        start = jnp.minimum(first_new, n_points - chunk_size)
        chunk = chunk_of(data, start, chunk_size, first_new)
        values = _values_and_slopes(model, chunk.model_x, params, direction)
        return start, chunk.mask, values

    try:
        whole = _values_and_slopes(model, data.model_x, params, direction)
        starts, counted, chunks = jax.vmap(piece)(jnp.arange(n_chunks))
        rows = np.asarray(starts)[:, None] + np.arange(chunk_size)
        counted = np.asarray(counted)
        return all(
            _agree(
                np.asarray(reference)[rows],
                candidate,
                counted.reshape(counted.shape + (1,) * (np.ndim(candidate) - counted.ndim)),
            )
            for reference, candidate in zip(whole, chunks, strict=True)
        )
    except Exception:  # noqa: BLE001 - a model that fails on chunks needs all points
        return False
