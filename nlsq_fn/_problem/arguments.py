"""The front ends' scalar and bound arguments taken as SciPy takes them: ints or NumPy
scalars for floats, ``np.True_`` or 1 for flags, ``np.inf`` for an unlimited budget,
bounds as a pair of anything array-like or a `scipy.optimize.Bounds`. Each bad value
gets a one-line error naming the argument (never a dump of the value)."""

import jax
import numpy as np

# `max_nfev=np.inf` (SciPy: no limit) as the largest count the loop's int32 counter holds.
UNLIMITED_NFEV = int(np.iinfo(np.int32).max)


def describe(value) -> str:
    """A short description of `value` for an error message: its type and shape."""
    shape = np.shape(value) if hasattr(value, "shape") else None
    return f"{type(value).__name__}" + (f" of shape {shape}" if shape else "")


def _real_scalar(value):
    if isinstance(value, (str, bytes)):
        return None
    try:
        array = np.asarray(value)
    except Exception:
        return None
    if array.ndim != 0 or array.dtype.kind not in "biuf":
        return None
    return array


def as_real(value, name: str):
    """A real number as a Python float (a traced value passes through unchanged)."""
    if isinstance(value, jax.core.Tracer):
        return value
    array = _real_scalar(value)
    if array is None:
        raise TypeError(f"`{name}` must be a real number, got {describe(value)}.")
    return float(array)


def as_flag(value, name: str) -> bool:
    """A flag: a bool, ``np.bool_`` or an integer (SciPy takes ``full_output=1``)."""
    array = _real_scalar(value)
    if array is None or array.dtype.kind == "f":
        raise TypeError(f"`{name}` must be True or False, got {describe(value)}.")
    return bool(array)


def as_count(value, name: str) -> int | None:
    """None, or a positive count given as any real number; ``inf`` means no limit."""
    if value is None:
        return None
    array = _real_scalar(value)
    if array is None:
        raise TypeError(f"`{name}` must be None or a positive integer, got {describe(value)}.")
    if np.isposinf(array):
        return UNLIMITED_NFEV
    if not np.isfinite(array) or array != np.floor(array):
        raise ValueError(f"`{name}` must be None or a positive integer, got {value!r}.")
    return int(array)


def as_verbose(value) -> int:
    array = _real_scalar(value)
    if array is None or array.dtype.kind == "f" or int(array) not in (0, 1, 2):
        shown = value if array is not None else describe(value)
        raise ValueError(f"`verbose` must be 0, 1 or 2, got {shown!r}.")
    return int(array)


def as_bounds(bounds):
    """``(lower, upper)`` from a pair, a list of two lists, a 2-row array or a
    `scipy.optimize.Bounds`; a dict ``{name: (lower, upper)}`` is kept as it is."""
    if isinstance(bounds, dict):
        _reject_nan(bounds)
        return bounds
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):  # scipy.optimize.Bounds
        # (keep_feasible needs nothing: TRF's iterates stay strictly inside the bounds.)
        bounds = (bounds.lb, bounds.ub)
    try:
        lower, upper = bounds
    except (TypeError, ValueError):
        raise ValueError(
            "`bounds` must be a pair (lower, upper), a scipy.optimize.Bounds or (for "
            f"curve_fit) a dict of pairs; got {describe(bounds)}."
        ) from None
    _reject_nan((lower, upper))
    return lower, upper


def _reject_nan(bounds) -> None:
    # A NaN bound would otherwise read as "no bound" (it is not finite).
    for leaf in jax.tree.leaves(bounds):
        if isinstance(leaf, jax.core.Tracer):
            continue
        try:
            values = np.asarray(leaf, dtype=float)
        except (TypeError, ValueError):
            continue  # the core names malformed bounds
        if np.any(np.isnan(values)):
            raise ValueError("`bounds` contain NaN; use -np.inf / np.inf for no bound.")
