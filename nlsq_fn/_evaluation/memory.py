"""Memory estimates for a fit, and a chunk size that fits the available memory."""

import os

import jax
import numpy as np

from .._problem.arguments import describe

# Chunks held at once by a streamed fit: the one being computed and those read ahead.
_CHUNKS_IN_FLIGHT = 3


def as_positive_int(value, name: str) -> int:
    """A positive integer given as an int, a NumPy integer or an integral float (as
    SciPy takes counts); bools and fractions are refused, not rounded."""
    array = None
    if not isinstance(value, (bool, np.bool_, str, bytes)):
        try:
            array = np.asarray(value)
        except Exception:  # noqa: BLE001 - anything that is no number
            array = None
    if array is None or array.ndim != 0 or array.dtype.kind not in "iuf":
        raise TypeError(f"`{name}` must be a positive integer, got {describe(value)}.")
    if not np.isfinite(array) or array != np.floor(array) or array < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(array)


def as_chunk_size(value, name: str = "chunk_size") -> int | str | None:
    """None or ``"auto"`` (both: the automatic size, `auto_chunk_size`), or a positive
    integer."""
    if value is None or (isinstance(value, str) and value == "auto"):
        return value
    if isinstance(value, str):
        raise ValueError(f"`{name}` must be 'auto', None or a positive integer, got {value!r}.")
    return as_positive_int(value, name)


def estimate_memory(
    n_points: int, n_params: int, dtype="float32", chunk_size: int | str | None = None
) -> dict:
    """Memory a fit of `n_points` points and `n_params` parameters needs, in GB (1e9
    bytes), as NLSQ's guide estimates it:

    - ``data_gb``: ``x`` and ``y`` (two values per point);
    - ``jacobian_gb``: the ``m × n`` Jacobian;
    - ``intermediate_gb``: three times the Jacobian (residuals, loss scaling, the
      factorisation's workspace);
    - ``total_gb``: their sum.

    With `chunk_size` the Jacobian and intermediates are those of one chunk (a chunked
    or streamed fit never holds more), the data those of the chunks in flight (the one
    computed and those read ahead), and ``summary_gb`` adds the ``n × n`` summary;
    ``"auto"`` is the chunk size `StreamingOptimizer` chooses from the available memory
    (its ``chunk_size=None``). The dict also gives ``chunk_size`` (None when not
    chunked).
    """
    n_points, n_params = (
        as_positive_int(n_points, "n_points"),
        as_positive_int(n_params, "n_params"),
    )
    chunk_size = as_chunk_size(chunk_size)
    if chunk_size == "auto":
        chunk_size = automatic_chunk_size(n_params, dtype)
    itemsize = np.dtype(dtype).itemsize
    rows = n_points if chunk_size is None else min(chunk_size, n_points)
    data_points = n_points if chunk_size is None else min(n_points, _CHUNKS_IN_FLIGHT * rows)
    parts = dict(
        data_gb=2 * data_points * itemsize / 1e9,
        jacobian_gb=rows * n_params * itemsize / 1e9,
        intermediate_gb=3 * rows * n_params * itemsize / 1e9,
        summary_gb=0.0 if chunk_size is None else 3 * n_params * (n_params + 1) * itemsize / 1e9,
    )
    return dict(total_gb=sum(parts.values()), chunk_size=chunk_size, **parts)


def available_memory_bytes() -> int:
    """Free memory of the default device where it reports it (GPUs), else of the host."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory statistics
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2 << 30


def automatic_chunk_size(
    n_params: int,
    dtype="float64",
    fraction: float = 0.1,
    smallest: int = 1 << 10,
    largest: int = 1 << 20,
) -> int:
    """Points per chunk so that one chunk's share of `estimate_memory` uses about
    `fraction` of the available memory (between `smallest` and `largest`, a multiple of
    1024): the memory budget of the chunk-size rule (`_evaluation.chunking.
    auto_chunk_size`), and `estimate_memory`'s ``"auto"`` (a stream of unknown length)."""
    one_point = estimate_memory(1, n_params, dtype)["total_gb"] * 1e9
    one_point += (_CHUNKS_IN_FLIGHT - 1) * 2 * np.dtype(dtype).itemsize
    size = int(fraction * available_memory_bytes() / one_point)
    return max(smallest, min(largest, size // 1024 * 1024))
