"""Fingerprints of a streamed fit's configuration, saved in its checkpoints.

A checkpoint may be resumed only by the fit that saved it: the same model, `p0`, loss,
bounds and options (the data are compared pass by pass, from their sums). Each item is
hashed from a description that is the same in every process and every run: a
function's code (bytecode, constants, names), defaults and closure, never its address;
a module's or object's type and fields; an array's dtype, shape and bytes.
"""

import dataclasses
import functools
import hashlib
import types

import jax
import numpy as np

from .._misc import is_concrete

_DEPTH = 8  # how deep closures and fields are followed


def _describe(value, depth: int = _DEPTH, seen: frozenset = frozenset()) -> str:
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return repr(value)
    if depth == 0 or id(value) in seen:
        return type(value).__qualname__
    seen = seen | {id(value)}

    def inner(item):
        return _describe(item, depth - 1, seen)

    if isinstance(value, types.ModuleType):
        return f"module {value.__name__}"
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        if not is_concrete(value):
            return f"traced {value.dtype}{value.shape}"
        array = np.ascontiguousarray(np.asarray(value))
        digest = hashlib.sha256(array.tobytes()).hexdigest()
        return f"{array.dtype}{array.shape}:{digest}"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__}({', '.join(map(inner, value))})"
    if isinstance(value, dict):
        items = sorted((repr(k), inner(v)) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    if isinstance(value, types.CodeType):
        return (
            f"code {value.co_qualname if hasattr(value, 'co_qualname') else value.co_name}"
            f"[{value.co_code.hex()}; {inner(value.co_consts)}; {value.co_names}]"
        )
    if isinstance(value, types.FunctionType):
        closure = [cell.cell_contents for cell in value.__closure__ or () if _filled(cell)]
        return (
            f"function {value.__module__}.{value.__qualname__}"
            f"({inner(value.__code__)}; {inner(value.__defaults__)}; "
            f"{inner(value.__kwdefaults__)}; {inner(closure)})"
        )
    if isinstance(value, types.MethodType):
        return f"method({inner(value.__func__)}; {inner(value.__self__)})"
    if isinstance(value, functools.partial):
        return f"partial({inner(value.func)}; {inner(value.args)}; {inner(value.keywords)})"
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    call = getattr(type(value), "__call__", None)  # noqa: B004 - the class's own code
    if isinstance(call, types.FunctionType):  # a callable object: its code too
        kind = f"{kind}[{inner(call)}]"
    if dataclasses.is_dataclass(value):  # Equinox modules among them
        fields = {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
        return f"{kind}{inner(fields)}"
    if isinstance(value, type) or callable(value) and not hasattr(value, "__dict__"):
        # A class, or a builtin or compiled function (jnp.exp): its name says what it is.
        name = getattr(value, "__qualname__", getattr(value, "__name__", ""))
        return f"{kind} {getattr(value, '__module__', '')}.{name}"
    if hasattr(value, "__dict__"):
        return f"{kind}{inner(vars(value))}"
    return kind


def _filled(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def fingerprint(items: dict) -> np.ndarray:
    """One row of four 32-bit words per item of `items` (name: value), hashing each
    value's description; `differing` names the items where two fingerprints differ."""
    rows = [
        np.frombuffer(hashlib.sha256(_describe(value).encode()).digest()[:16], np.uint32)
        for value in items.values()
    ]
    return np.stack(rows)


def differing(names, saved, current) -> list[str]:
    """The names of the items whose rows differ between two fingerprints."""
    saved, current = np.asarray(saved), np.asarray(current)
    return [
        name for name, a, b in zip(names, saved, current, strict=True) if not np.array_equal(a, b)
    ]
