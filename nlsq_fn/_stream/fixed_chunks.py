"""Pieces of any length cut and joined into chunks of a fixed size (`fixed_chunks`),
every row checked as it is read (`check_values`): one compiled program serves every
chunk, and a NaN is named by its row."""

from collections.abc import Iterator

import numpy as np

from .._problem.data import sigma_shape_error
from .sources import Piece


def _check_piece(x, y, sigma):
    if y.ndim != 1:
        raise ValueError(f"Each chunk's `y` must be 1-D, got shape {y.shape}.")
    if x.ndim == 0 or x.shape[-1] != y.shape[0]:
        raise ValueError(
            f"A chunk's `x` has shape {x.shape} but its `y` has {y.shape[0]} points; "
            "`x` must have the points along its last axis."
        )
    if sigma is not None and sigma.shape != y.shape:
        raise sigma_shape_error(sigma.shape, y.shape, where="A chunk's ")


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
