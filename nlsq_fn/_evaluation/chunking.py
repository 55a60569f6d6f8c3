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
(`chunks_agree`). Only forward evaluations (``O(m)`` memory), never the Jacobian, in one
compiled program. Traced data (``init`` inside `jax.jit`) are checked inside the fit
instead: a fit whose chunks disagree ends with status `CHUNKS_DIFFER` and says to pass
``chunk_size=None``, never with a wrong answer. Fits with a `jac` callable or finite
differences are evaluated in one shot.

The one rule for an automatic chunk size, in memory and streamed, is `auto_chunk_size`;
a streamed chunk's own pointwise check (`pointwise_mismatch`) sits beside these probes.
"""

from collections.abc import Callable
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool

from .._misc import is_concrete
from .._problem.data import points_axis
from .compiled import compiled
from .linearize import check_chunkable, chunk_of
from .memory import automatic_chunk_size, available_memory_bytes, estimate_memory


def bucket_size(m: int) -> int:
    """Padded length for `m` points: the next power of two, at least 16."""
    return max(16, 1 << (int(m) - 1).bit_length())


def auto_chunk_size(
    n_points: int | None, n_params: int, dtype="float64", *, streamed: bool = False
) -> int | None:
    """The chunk size for `n_points` points and `n_params` parameters, None for one
    shot: the one rule for every automatic chunk size.

    A stream (`streamed`: `StreamingOptimizer`'s ``chunk_size=None`` or ``"auto"``) is
    always chunked: a chunk whose share of `estimate_memory` takes a tenth of the
    available memory (`automatic_chunk_size`; `estimate_memory`'s ``"auto"``), but none
    longer than the size bucket of all the data (`bucket_size`) where their number is
    known.

    In memory, on CPUs a chunk's Jacobian and its forward-mode tangents (about ``3 *
    chunk * n`` numbers) should stay in a core's L2 cache (≥ 256 KiB) for the fused
    evaluation to run from it: ``chunk * n ≈ 32k`` numbers, a power of two between 1,024
    and 16,384 points. Below four chunks the one-shot evaluation is as fast and keeps
    the Jacobian.

    On accelerators the one-shot evaluation is as fast, and XLA compiles the chunked
    loop far more slowly (on an H200, 31–58 s against 0.6 s for 1e6 points): chunks
    there only keep a Jacobian that would not fit in half the device's free memory out
    of it (`automatic_chunk_size`).
    """
    if streamed:
        size = automatic_chunk_size(n_params, dtype)
        return size if n_points is None else min(size, bucket_size(n_points))
    if n_points is None:
        raise ValueError("An in-memory chunk size needs the number of points.")
    if jax.default_backend() != "cpu":
        one_shot = estimate_memory(n_points, n_params, dtype)["total_gb"] * 1e9
        if one_shot <= 0.5 * available_memory_bytes():
            return None
        return automatic_chunk_size(n_params, dtype)
    target = max(1024, min(16384, 32768 // max(n_params, 1)))
    chunk = 1 << (target.bit_length() - 1)
    return chunk if n_points >= 4 * chunk else None


def choose_chunk_size(model: Callable, data, params, n_params: int, jac):
    """``(chunk_size, verify)``: `auto_chunk_size` where chunking is proved not to change
    the model's values on these data (`chunks_agree` on the host), None (one shot)
    otherwise. Traced data are proved inside the fit (`verify`): chunked when a probe on
    made-up rows finds the model pointwise, and the fit ends with status
    `CHUNKS_DIFFER` if the chunks then disagree on the real data."""
    if data.y.ndim == 0 or callable(jac) or jac not in ("fwd", "rev"):
        return None, False
    chunk = auto_chunk_size(data.y.shape[0], n_params, data.y.dtype)
    if chunk is None:
        return None, False
    try:
        check_chunkable(data, chunk)
        if is_concrete(data, params):
            agree = bool(_chunks_agree_compiled(model, data, params, chunk))
            return (chunk, False) if agree else (None, False)
        jax.eval_shape(lambda: chunks_agree(model, data, params, chunk))
    except Exception:  # noqa: BLE001 - a model that fails on chunks needs all points
        return None, False
    if not _pointwise_on_made_up_rows(model, data.x, params):
        return None, False
    return chunk, True


def probe_direction(params):
    """A fixed pseudo-random direction in parameter space, every parameter moving by
    about its own size."""
    flat, unravel = ravel_pytree(params)
    steps = np.random.default_rng(20261203).standard_normal(flat.shape)
    return unravel(jnp.asarray(steps, flat.dtype) * jnp.maximum(jnp.abs(flat), 1.0))


def values_and_slopes(model: Callable, x, params, direction):
    """The model's values at `params` and their derivative along `direction`."""
    return jax.jvp(lambda p: model(x, p), (params,), (direction,))


def values_agree(reference, candidate, counted=None, xp=jnp, nan_matches_nan=False):
    """`candidate` equals the finite `reference` (where `counted`), up to rounding
    relative to the largest magnitude in `reference` (an evaluation of another shape,
    fused or vectorised otherwise, may move each entry by a few ulps of the largest).
    Traced with ``xp=jnp``; in NumPy on the host (no compilation per shape). With
    `nan_matches_nan` the reference may hold NaN or inf (a model undefined at a start
    that is not checked): those entries must recur in `candidate`, and the scale is the
    largest finite magnitude."""
    if counted is not None:
        reference = xp.where(counted, reference, 0)
        candidate = xp.where(counted, candidate, 0)
    if not xp.issubdtype(reference.dtype, xp.inexact):
        return xp.all(reference == candidate)
    if nan_matches_nan:
        scale = xp.max(xp.where(xp.isfinite(reference), xp.abs(reference), 0))
        tolerance = 1e3 * xp.finfo(reference.dtype).eps * scale
        close = (xp.abs(candidate - reference) <= tolerance) | (reference == candidate)
        return xp.all(close | (xp.isnan(reference) & xp.isnan(candidate)))
    scale = xp.max(xp.abs(reference))  # NaN or inf anywhere: not finite
    tolerance = 1e3 * xp.finfo(reference.dtype).eps * scale
    # (`all` of a comparison, not `max` of the differences: XLA:CPU reduces the
    # latter 4x slower.) A NaN in `candidate` fails the comparison.
    return xp.isfinite(scale) & xp.all(xp.abs(candidate - reference) <= tolerance)


def same_on_pieces(model: Callable, x, params, pieces) -> bool:
    """Whether the model, evaluated on each piece of the data, gives what it gives on
    all of `x`: its values at `params` and their derivative along a direction in
    parameter space. `pieces` is a sequence of ``(x_piece, rows_of_whole,
    rows_of_piece)``: the output rows `rows_of_piece` of the piece must equal the rows
    `rows_of_whole` of the whole. Evaluated eagerly, compared in NumPy. A model that
    fails to evaluate on a piece needs the data as given: no."""
    direction = probe_direction(params)
    try:
        whole = values_and_slopes(model, x, params, direction)
        whole = [np.asarray(values) for values in whole]
        for x_piece, rows_of_whole, rows_of_piece in pieces:
            piece = values_and_slopes(model, x_piece, params, direction)
            for reference, candidate in zip(whole, piece, strict=True):
                reference = reference[rows_of_whole]
                candidate = np.asarray(candidate)[rows_of_piece]
                if candidate.shape != reference.shape or not values_agree(
                    reference, candidate, xp=np
                ):
                    return False
    except Exception:  # noqa: BLE001 - any failure on a piece: not the same
        return False
    return True


def chunks_agree(model: Callable, data, params, chunk_size: int) -> Bool[Array, ""]:
    """Traced: `same_on_pieces` for exactly the chunks `chunked_linearize` evaluates
    (`chunk_of`: the last one shifted back, its repeated rows masked), at the counted
    points: a few forward passes over the data, never a Jacobian. Without a mask the
    full chunks are the data reshaped, evaluated together by `jax.vmap` (which
    evaluates each one on its own)."""
    n_points = data.y.shape[0]
    n_chunks = -(-n_points // chunk_size)
    direction = probe_direction(params)
    whole = values_and_slopes(model, data.model_x, params, direction)
    agree = jnp.asarray(True)

    def compare(references, candidates, counted):
        nonlocal agree
        for reference, candidate in zip(references, candidates, strict=True):
            if reference.shape != candidate.shape:
                raise ValueError("The model's output on a chunk is not the chunk's rows.")
            if counted is not None:
                extra = (1,) * (candidate.ndim - counted.ndim)
                counted = jnp.reshape(counted, counted.shape + extra)
            agree &= values_agree(reference, candidate, counted)

    first_shifted = 0
    if data.mask is None:  # the full chunks see their own rows: a reshape, no copies
        first_shifted = n_points // chunk_size
        rows = first_shifted * chunk_size

        def stacked(a):
            a = jnp.asarray(a)
            return jnp.reshape(a[:rows], (first_shifted, chunk_size) + a.shape[1:])

        chunks = jax.vmap(lambda x: values_and_slopes(model, x, params, direction))(
            jax.tree.map(stacked, data.x)
        )
        compare([stacked(reference) for reference in whole], chunks, None)
    if first_shifted < n_chunks:

        def piece(i):
            first_new = i * chunk_size
            start = jnp.minimum(first_new, n_points - chunk_size)
            chunk = chunk_of(data, start, chunk_size, first_new)
            values = values_and_slopes(model, chunk.model_x, params, direction)
            return start, chunk.mask, values

        starts, counted, chunks = jax.vmap(piece)(jnp.arange(first_shifted, n_chunks))
        rows = starts[:, None] + jnp.arange(chunk_size)
        compare([jnp.asarray(reference)[rows] for reference in whole], chunks, counted)
    return agree


_chunks_agree_compiled = compiled(chunks_agree)


@compiled
def pointwise_mismatch(model, x, chunk):
    """Whether the model at `x` gives other values on the whole streamed chunk (a
    masked `Data`) than on its two halves, concatenated (beyond rounding: ``1e3 eps``
    of the chunk's largest finite value).

    A streamed fit evaluates the model chunk by chunk, which gives the in-memory fit
    only for a pointwise model (each output depending on its own point alone); one
    that uses `x` as a whole (``x.mean()``, ``x.max()``, a cumulative sum) differs
    between a chunk and its halves on any data where that whole matters.

    Unlike `chunks_agree` (which proves a chunking that the user did not ask for, and
    so refuses any non-finite value), a NaN or inf that the whole and the halves both
    give is no difference here: the fit itself then meets it, as the in-memory fit
    would. (Merging the two probes would change one path's answers.)"""
    inputs = chunk.model_x
    m = chunk.y.shape[0]
    half = m // 2

    def part(leaf, rows):  # along the points axis (a chunk's arrays all have one)
        axis = cast(int, points_axis(leaf, m))
        return leaf[(slice(None),) * axis + (rows,)]

    whole = jnp.ravel(model(inputs, x))
    halves = [
        jax.tree.map(lambda leaf, rows=rows: part(leaf, rows), inputs)
        for rows in (slice(None, half), slice(half, None))
    ]
    joined = jnp.concatenate([jnp.ravel(model(part, x)) for part in halves])
    counted = cast(jax.Array, chunk.mask)  # a chunk always has its mask
    finite = jnp.isfinite(whole) & jnp.isfinite(joined)
    scale = jnp.max(jnp.where(counted & finite, jnp.abs(whole), 0.0))
    rtol = 1e3 * jnp.finfo(whole.dtype).eps
    differs = jnp.where(
        finite, jnp.abs(whole - joined) > rtol * scale, jnp.isfinite(whole) != jnp.isfinite(joined)
    )
    return jnp.any(counted & differs)


# Points per half of the made-up probe (traced data): enough to show x.mean(), cumsum.
_PROBE_HALF = 8


def _made_up_rows(leaf):
    shape = (2 * _PROBE_HALF,) + tuple(leaf.shape[1:])
    if jnp.issubdtype(leaf.dtype, jnp.inexact):
        values = np.linspace(1.0, 2.0, int(np.prod(shape))).reshape(shape)
    else:
        values = np.arange(int(np.prod(shape))).reshape(shape) % (2 * _PROBE_HALF)
    return values.astype(leaf.dtype)


def _pointwise_on_made_up_rows(model: Callable, x, params) -> bool:
    """For traced data: whether the model's values on 16 made-up rows equal its values on
    their two halves. Only a filter (values, evaluated eagerly at trace time): the fit
    itself then checks the real data (`chunks_agree`)."""
    probe = jax.tree.map(_made_up_rows, x)
    params = jax.tree.map(lambda p: np.ones(jnp.shape(p), jnp.result_type(p)), params)
    halves = [
        jax.tree.map(lambda a, s=s: a[s], probe)
        for s in (slice(0, _PROBE_HALF), slice(_PROBE_HALF, None))
    ]
    try:
        with jax.ensure_compile_time_eval():
            whole = model(probe, params)
            parts = [model(half, params) for half in halves]
        if not is_concrete(whole, parts):
            return False
        whole = np.asarray(whole)
        joined = np.concatenate([np.asarray(part) for part in parts])
    except Exception:  # noqa: BLE001 - a model that fails on halves needs all points
        return False
    inexact = np.issubdtype(whole.dtype, np.inexact)
    return (
        whole.shape == joined.shape
        and bool(np.all(np.isfinite(whole)))
        and np.allclose(joined, whole, rtol=1e3 * np.finfo(whole.dtype).eps if inexact else 0)
    )
