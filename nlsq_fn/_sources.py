"""Chunk sources: data read piece by piece, once per pass of a streamed fit.

A source is re-iterable: every pass of `StreamingOptimizer.fit` calls `pieces()` again
and reads the data from the start. Pieces may have any length (an HDF5 slice, a Parquet
row group, a batch of SQL rows, a CSV chunk); `fixed_chunks` cuts and joins them into
chunks of exactly `chunk_size` points (the last one shorter), so one compiled program
serves every chunk. Each piece is ``(x, y, sigma)`` of NumPy arrays: `y` 1-D, `x` with
the points along its last axis (shape ``(m,)`` or ``(k, m)``, as SciPy's `xdata`),
`sigma` None or 1-D.

Optional libraries (h5py, zarr, pyarrow, pandas) are imported only when their source is
used, with an error naming the extra that installs them.
"""

import abc
import copy
import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

Piece = tuple[np.ndarray, np.ndarray, np.ndarray | None]


def optional_import(module: str, extra: str):
    """Import `module`, or raise an ImportError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"This needs the optional dependency `{module.split('.')[0]}`: "
            f"pip install 'nlsq_fn[{extra}]'"
        ) from error


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
            raise ValueError(f"`sigma` has shape {np.shape(sigma)}; it must be ({m},).")
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
            raise ValueError(f"`sigma` has shape {headers[2][0]}; it must be {y_shape}.")
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


def _columns(table_get, x, y, sigma) -> Piece:
    """``(x, y, sigma)`` from named columns; several x columns stack to ``(k, m)``."""
    if isinstance(x, str):
        x_values = np.asarray(table_get(x))
    else:
        x_values = np.stack([np.asarray(table_get(name)) for name in x])
    sigma_values = None if sigma is None else np.asarray(table_get(sigma))
    return x_values, np.asarray(table_get(y)), sigma_values


class SQLSource(AbstractSource):
    """Rows of a query over a DB-API connection (``sqlite3``, psycopg, ...), fetched
    `batch_size` at a time. `query` selects the x column(s), then y, then optionally
    sigma, in that order (``SELECT t, y FROM measurements ORDER BY t``); with several x
    columns pass ``n_x`` (they stack to shape ``(n_x, m)``).

    `connection` is an open connection, or a function that opens one (called once per
    pass). DB-API connections may not be shared between threads (SQLite's refuses), so
    with an open connection the rows are read in the fitting thread; with a function,
    in a background thread that reads ahead.
    """

    def __init__(
        self,
        connection,
        query: str,
        params: Sequence = (),
        *,
        n_x: int = 1,
        sigma: bool = False,
        batch_size: int = 100_000,
    ):
        self.connection, self.query, self.params = connection, query, tuple(params)
        self.n_x, self.sigma, self.batch_size = int(n_x), bool(sigma), int(batch_size)
        self.read_ahead = callable(connection) and not hasattr(connection, "cursor")

    def pieces(self):
        connection = self.connection() if self.read_ahead else self.connection
        cursor = connection.cursor()
        try:
            cursor.execute(self.query, self.params)
            while rows := cursor.fetchmany(self.batch_size):
                table = np.asarray(rows, dtype=float)
                expected = self.n_x + 1 + self.sigma
                if table.shape[1] != expected:
                    raise ValueError(
                        f"The query returns {table.shape[1]} columns; expected {expected} "
                        f"({self.n_x} x, y{', sigma' if self.sigma else ''})."
                    )
                x = table[:, 0] if self.n_x == 1 else table[:, : self.n_x].T
                sigma = table[:, self.n_x + 1] if self.sigma else None
                yield np.ascontiguousarray(x), table[:, self.n_x], sigma
        finally:
            cursor.close()
            if self.read_ahead:
                connection.close()


class HDF5Source(AbstractSource):
    """Datasets of an HDF5 file (h5py), read in slices of `piece_size` points."""

    def __init__(
        self, path, x: str = "x", y: str = "y", sigma: str | None = None, piece_size: int = 1 << 20
    ):
        self.path, self.names = path, (x, y, sigma)
        self.piece_size = int(piece_size)

    def pieces(self):
        h5py = optional_import("h5py", "hdf5")
        x, y, sigma = self.names
        with h5py.File(self.path, "r") as file:
            source = ArraySource(
                file[x], file[y], None if sigma is None else file[sigma], self.piece_size
            )
            yield from source.pieces()


class ZarrSource(AbstractSource):
    """Arrays of a Zarr group (a path or an open group), read chunk by chunk."""

    def __init__(
        self, store, x: str = "x", y: str = "y", sigma: str | None = None, piece_size: int = 1 << 20
    ):
        self.store, self.names = store, (x, y, sigma)
        self.piece_size = int(piece_size)

    def pieces(self):
        zarr = optional_import("zarr", "zarr")
        group = (
            zarr.open_group(self.store, mode="r")
            if isinstance(self.store, (str, bytes)) or hasattr(self.store, "__fspath__")
            else self.store
        )
        x, y, sigma = self.names
        source = ArraySource(
            group[x], group[y], None if sigma is None else group[sigma], self.piece_size
        )
        yield from source.pieces()


class ParquetSource(AbstractSource):
    """Columns of a Parquet file (pyarrow), read one row group at a time."""

    def __init__(self, path, x: str | Sequence[str] = "x", y: str = "y", sigma: str | None = None):
        self.path, self.x, self.y, self.sigma = path, x, y, sigma

    def pieces(self):
        parquet = optional_import("pyarrow.parquet", "parquet")
        file = parquet.ParquetFile(self.path)
        x_names = [self.x] if isinstance(self.x, str) else list(self.x)
        columns = x_names + [self.y] + ([self.sigma] if self.sigma else [])
        for group in range(file.num_row_groups):
            table = file.read_row_group(group, columns=columns)
            yield _columns(
                lambda name, table=table: table.column(name).to_numpy(), self.x, self.y, self.sigma
            )


class PandasSource(AbstractSource):
    """``make_reader()`` returns a fresh chunked pandas reader (or any iterator of
    DataFrames), e.g. ``lambda: pd.read_csv(path, chunksize=100_000)``."""

    def __init__(
        self,
        make_reader: Callable[[], Iterator],
        x: str | Sequence[str] = "x",
        y: str = "y",
        sigma: str | None = None,
    ):
        self.make_reader, self.x, self.y, self.sigma = make_reader, x, y, sigma

    def pieces(self):
        for frame in self.make_reader():
            yield _columns(
                lambda name, frame=frame: frame[name].to_numpy(), self.x, self.y, self.sigma
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


def _check_piece(x, y, sigma):
    if y.ndim != 1:
        raise ValueError(f"Each chunk's `y` must be 1-D, got shape {y.shape}.")
    if x.ndim == 0 or x.shape[-1] != y.shape[0]:
        raise ValueError(
            f"A chunk's `x` has shape {x.shape} but its `y` has {y.shape[0]} points; "
            "`x` must have the points along its last axis."
        )
    if sigma is not None and sigma.shape != y.shape:
        raise ValueError(f"A chunk's `sigma` has shape {sigma.shape}, `y` {y.shape}.")


def _first_bad_row(values, test) -> int | None:
    """The first point (along the last axis) where `test` fails for any of its values."""
    if values.dtype.kind not in "fc":
        return None
    bad = ~test(values)
    if values.ndim > 1:
        bad = bad.reshape(-1, values.shape[-1]).any(axis=0)
    return int(np.argmax(bad)) if bad.any() else None


def check_values(x, y, sigma, first_row: int = 0, of: str = "the data") -> None:
    """Raise a ValueError naming the first row (0-based, counted from `first_row`) and
    column where `x` or `y` is NaN or inf, or `sigma` is not finite and positive.

    Every chunk of a source and of `update` is checked as it is read, the first rows
    included: a fit cannot give an answer with such a point, and a SQL NULL or a
    Parquet null reads as NaN."""
    for column, values, test, what in (
        ("x", x, np.isfinite, "NaN or inf"),
        ("y", y, np.isfinite, "NaN or inf"),
        ("sigma", sigma, lambda s: np.isfinite(s) & (s > 0), "not finite and positive"),
    ):
        if values is None:
            continue
        row = _first_bad_row(values, test)
        if row is not None:
            value = values[..., row]
            raise ValueError(
                f"`{column}` is {what} ({value}) at row {first_row + row} (0-based) of "
                f"{of}: a fit needs finite `x` and `y` and `sigma` > 0 at every point "
                "(an SQL NULL or a missing value reads as NaN). Remove or fill such rows."
            )


def fixed_chunks(pieces: Iterator[Piece], chunk_size: int) -> Iterator[Piece]:
    """Cut and join `pieces` into chunks of exactly `chunk_size` points, except the last
    (shorter, never empty), each checked by `check_values` as it is read."""
    buffered: list[Piece] = []
    count = 0
    rows = 0  # read so far, for the row numbers of `check_values`
    has_sigma = None

    def take(n):
        nonlocal buffered, count
        out, rest, need = [], [], n
        for x, y, sigma in buffered:
            if need == 0:
                rest.append((x, y, sigma))
                continue
            k = min(need, y.shape[0])
            out.append((x[..., :k], y[:k], None if sigma is None else sigma[:k]))
            if k < y.shape[0]:
                rest.append((x[..., k:], y[k:], None if sigma is None else sigma[k:]))
            need -= k
        buffered, count = rest, count - n
        if len(out) == 1:
            return out[0]
        x = np.concatenate([p[0] for p in out], axis=-1)
        y = np.concatenate([p[1] for p in out])
        sigma = None if out[0][2] is None else np.concatenate([p[2] for p in out])
        return x, y, sigma

    for x, y, sigma in pieces:
        _check_piece(x, y, sigma)
        if has_sigma is None:
            has_sigma = sigma is not None
        elif has_sigma != (sigma is not None):
            raise ValueError("Either every chunk gives `sigma` or none does.")
        if y.shape[0] == 0:
            continue
        check_values(x, y, sigma, rows, "the source")
        rows += y.shape[0]
        buffered.append((x, y, sigma))
        count += y.shape[0]
        while count >= chunk_size:
            yield take(chunk_size)
    if count:
        yield take(count)
