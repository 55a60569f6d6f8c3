"""Chunk sources: data read piece by piece, once per pass of a streamed fit.

A source is re-iterable: every pass of `StreamingOptimizer.fit` calls `pieces()` again
and reads the data from the start. Pieces may have any length (an HDF5 slice, a Parquet
row group, a batch of SQL rows, a CSV chunk); `fixed_chunks` (`_stream.fixed_chunks`) cuts and
joins them into chunks of exactly `chunk_size` points (the last one shorter), so one
compiled program serves every chunk. Each piece is ``(x, y, sigma)`` of NumPy arrays:
`y` 1-D, `x` with the points along its last axis (shape ``(m,)`` or ``(k, m)``, as
SciPy's `xdata`), `sigma` None or 1-D.

Here: the sources of arrays, ``.npy`` files and callables; those read through optional
libraries (SQL, HDF5, Zarr, Parquet, pandas) are in `_stream.library_sources`.
"""

import abc
import copy
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .._problem.data import sigma_shape_error

Piece = tuple[np.ndarray, np.ndarray, np.ndarray | None]


class AbstractSource(abc.ABC):
    """Data read piece by piece; `pieces()` starts a fresh pass over all of it.

    `read_ahead`: whether `pieces()` may run in a background thread that reads the next
    chunk while the current one is computed (False for objects bound to one thread).
    """

    read_ahead: bool = True

    @abc.abstractmethod
    def pieces(self) -> Iterator[Piece]:
        """A new iterator over the data, from the start."""

    def __len__(self) -> int:
        raise TypeError(f"{type(self).__name__} does not know its length in advance.")

    def part(self, index: int, count: int) -> "AbstractSource | None":
        """The `index`-th of `count` contiguous blocks of rows, as a source that reads
        only those rows (each process's share in a multi-process fit); None where the
        source cannot start at an arbitrary row."""
        return None


def _block(length: int, index: int, count: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of the `index`-th of `count` nearly equal blocks."""
    if not 0 <= index < count:
        raise ValueError(f"Block {index} of {count} does not exist.")
    return length * index // count, length * (index + 1) // count


class ArraySource(AbstractSource):
    """In-memory arrays or `.npy` memory maps (`np.load(path, mmap_mode="r")`): pieces
    are slices, so a memory map is read from disk one chunk at a time."""

    def __init__(self, x, y, sigma=None, piece_size: int = 1 << 20):
        self.x, self.y, self.sigma = x, y, sigma
        if np.ndim(y) != 1:
            raise ValueError(f"A streamed `y` must be 1-D, got shape {np.shape(y)}.")
        m = np.shape(y)[0]
        if np.ndim(x) == 0 or np.shape(x)[-1] != m:
            raise ValueError(
                f"`x` has shape {np.shape(x)} but `y` has {m} points; `x` must have the "
                "points along its last axis."
            )
        if sigma is not None and np.shape(sigma) != (m,):
            raise sigma_shape_error(np.shape(sigma), (m,))
        self.piece_size = int(piece_size)

    def __len__(self):
        return int(np.shape(self.y)[0])

    def part(self, index, count):
        start, stop = _block(len(self), index, count)
        rows = slice(start, stop)  # a view: a memory map stays on disk
        sigma = None if self.sigma is None else self.sigma[rows]
        return ArraySource(self.x[..., rows], self.y[rows], sigma, self.piece_size)

    def pieces(self):
        for start in range(0, len(self), self.piece_size):
            part = slice(start, start + self.piece_size)
            sigma = None if self.sigma is None else np.asarray(self.sigma[part])
            yield np.asarray(self.x[..., part]), np.asarray(self.y[part]), sigma


class NpySource(AbstractSource):
    """`.npy` files read piece by piece with plain file reads. Unlike a memory map, whose
    pages stay resident (and counted in the process's memory) once touched, this keeps
    at most a few chunks in memory however large the files. `x` may be 1-D or
    ``(k, m)``; every file is C-ordered, as `np.save` writes it."""

    def __init__(self, x, y, sigma=None, piece_size: int = 1 << 20):
        self.paths = (x, y, sigma)
        self.piece_size = int(piece_size)
        headers: list[Any] = [None if path is None else _npy_header(path) for path in self.paths]
        (x_shape, _, _), (y_shape, _, _) = headers[0], headers[1]
        if len(y_shape) != 1:
            raise ValueError(f"`y` in {y!r} must be 1-D, got shape {y_shape}.")
        if not x_shape or x_shape[-1] != y_shape[0] or len(x_shape) > 2:
            raise ValueError(
                f"`x` in {x!r} has shape {x_shape}; it must be ({y_shape[0]},) or "
                f"(k, {y_shape[0]})."
            )
        if headers[2] is not None and headers[2][0] != y_shape:
            raise sigma_shape_error(headers[2][0], y_shape)
        self.headers = headers
        self.row_range = (0, y_shape[0])  # the rows read: all, or one process's block

    def __len__(self):
        return self.row_range[1] - self.row_range[0]

    def part(self, index, count):
        start, stop = _block(len(self), index, count)
        part = copy.copy(self)
        part.row_range = (self.row_range[0] + start, self.row_range[0] + stop)
        return part

    def pieces(self):
        m = self.headers[1][0][0]  # the rows of each file
        first, last = self.row_range
        files = [None if path is None else open(path, "rb") for path in self.paths]
        try:
            for start in range(first, last, self.piece_size):
                count = min(self.piece_size, last - start)
                parts = []
                for file, header in zip(files, self.headers, strict=True):
                    if file is None:
                        parts.append(None)
                        continue
                    shape, dtype, offset = header
                    rows = shape[0] if len(shape) == 2 else 1
                    block = np.empty((rows, count), dtype)
                    for row in range(rows):
                        file.seek(offset + (row * m + start) * dtype.itemsize)
                        file.readinto(block[row])
                    parts.append(block if len(shape) == 2 else block[0])
                yield tuple(parts)
        finally:
            for file in files:
                if file is not None:
                    file.close()


def _npy_header(path):
    """Shape, dtype and data offset of a `.npy` file (NumPy's own header reader)."""
    with open(path, "rb") as file:
        version = np.lib.format.read_magic(file)
        read = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran_order, dtype = read(file)
        if fortran_order:
            raise ValueError(f"{path!r} is Fortran-ordered; save it C-ordered.")
        return shape, dtype, file.tell()


class CallableSource(AbstractSource):
    """``make_iterator()`` returns a fresh iterator of ``(x, y)`` or ``(x, y, sigma)``."""

    def __init__(self, make_iterator: Callable[[], Iterator]):
        self.make_iterator = make_iterator

    def pieces(self):
        iterator = self.make_iterator()
        if iterator is None or not hasattr(iterator, "__iter__"):
            raise TypeError(
                "A callable source must return an iterator of (x, y) or (x, y, sigma) "
                f"chunks; it returned {type(iterator).__name__}."
            )
        for item in iterator:
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise ValueError("Each chunk of a callable source must be (x, y) or (x, y, sigma).")
            x, y, *rest = item
            sigma = rest[0] if rest else None
            yield (
                np.asarray(x),
                np.asarray(y),
                None if sigma is None else np.asarray(sigma),
            )


def as_source(data) -> AbstractSource:
    """A source from `data`: an `AbstractSource`, a tuple ``(x, y[, sigma])`` of arrays
    or memory maps, or a callable returning a fresh iterator of chunks."""
    if isinstance(data, AbstractSource):
        return data
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        return ArraySource(*data)
    if callable(data):
        return CallableSource(data)
    raise TypeError(
        "`source` must be (x, y[, sigma]) arrays, a callable returning a fresh iterator "
        "of chunks, or a source of nlsq_fn (ArraySource, HDF5Source, ZarrSource, "
        f"ParquetSource, SQLSource, PandasSource); got {type(data).__name__}. A plain "
        "generator can be read only once: wrap the function that makes it instead."
    )
