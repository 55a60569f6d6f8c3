"""Sources read through optional libraries: SQL (DB-API), HDF5 (h5py), Zarr, Parquet
(pyarrow) and pandas chunk readers, each imported only when its source is used, with an
error naming the extra that installs it (`optional_import`)."""

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from .._misc import optional_import
from .sources import AbstractSource, ArraySource, Piece


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
