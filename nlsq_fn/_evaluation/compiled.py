"""nlsq_fn's compiled programs, and a bound on how many of them stay compiled.

JAX's jit cache keeps every program compiled for a new model function or new static
options (a fresh `lambda` per call, another loss, another Jacobian scheme), with room for
8,192 entries, for the rest of the process: it holds each static argument, so nothing
is released when the user's function is gone. XLA:CPU maps each program's kernels into
memory separately, about 200–250 memory maps for a fit; after some 300 programs a
process reaches Linux's default limit of 65,530 maps (`vm.max_map_count`) and XLA
crashes (a segfault) while compiling the next one. The front ends therefore count
nlsq_fn's compiled programs and, past `MAX_PROGRAMS`, drop them all (never the user's
own): a fit still in use then compiles once more. How many maps a program takes depends on
the program (about 100 for a small model's fit, 200 for a NumPy model's), and other
programs hold maps too, so after each compilation the front ends also count the process's
maps and drop nlsq_fn's programs once 3/4 of Linux's limit is in use.
"""

import threading
import weakref

import equinox as eqx

from .precision import full_precision

MAX_PROGRAMS = 96
MAP_SHARE = 0.75  # of `vm.max_map_count`: room left to compile the next program
# Fewer programs are kept whatever the maps: theirs are not what fills the process, and
# a fit's own few programs then stay compiled.
MIN_PROGRAMS = 8

_programs: list = []
_counted_at = [0]  # programs kept when the memory maps were last counted


def compiled(function):
    """`equinox.filter_jit` of `function`, registered so that `limit_programs` can clear
    it."""
    program = eqx.filter_jit(full_precision(function))
    _programs.append(program)
    return program


def register(program):
    """Registers a program that is not an `equinox.filter_jit` (it has `cache_size()`
    and `clear()`) so that `limit_programs` can clear it."""
    _programs.append(program)
    return program


# JAX and Equinox have no public count of a jitted function's compiled programs, and
# Equinox none of clearing a `filter_jit`: these three functions are the only places
# that read their internals, so that a change there is mended in one place.
def _jit_of(program):
    """The `jax.jit` behind an `equinox.filter_jit` (itself for a `jax.jit`)."""
    return getattr(program, "_cached", program)


def jit_cache_size(program) -> int:
    """How many programs a `jax.jit` or `equinox.filter_jit` function holds compiled."""
    return _jit_of(program)._cache_size()


def clear_jit(program) -> None:
    """Drop a `jax.jit` or `equinox.filter_jit` function's compiled programs (only
    its own: `jax.clear_caches` would drop the user's too)."""
    _jit_of(program).clear_cache()


def _cache_size(program) -> int:
    if hasattr(program, "cache_size"):
        return program.cache_size()
    return jit_cache_size(program)


def programs_kept() -> int:
    """How many programs nlsq_fn holds compiled now."""
    return sum(_cache_size(program) for program in _programs)


def memory_maps() -> int | None:
    """How many memory maps this process holds (Linux), else None."""
    try:
        with open("/proc/self/maps", "rb") as lines:
            return sum(1 for _ in lines)
    except OSError:
        return None


def map_budget() -> int | None:
    """How many memory maps the process may hold before nlsq_fn drops its programs."""
    try:
        with open("/proc/sys/vm/max_map_count") as limit:
            return int(MAP_SHARE * int(limit.read()))
    except (OSError, ValueError):
        return None


def limit_programs() -> None:
    """Clear nlsq_fn's compiled programs once there are `MAX_PROGRAMS` of them, or once
    the process holds more memory maps than `map_budget`; called by the front ends before
    each fit (a fit then compiles at most one more)."""
    kept = programs_kept()
    if kept >= MAX_PROGRAMS:
        clear()
    elif kept >= MIN_PROGRAMS and kept > _counted_at[0]:  # compiled since the last count
        _counted_at[0] = kept
        maps, budget = memory_maps(), map_budget()
        if maps is not None and budget is not None and maps > budget:
            clear()


def clear() -> None:
    """Drop nlsq_fn's compiled programs."""
    for program in _programs:
        if hasattr(program, "clear"):
            program.clear()
        else:
            clear_jit(program)
    _counted_at[0] = 0


class ProgramsByFunction:
    """Programs compiled for a user's function, by function and key, for `register`:
    `limit_programs` drops them with nlsq_fn's other programs. (Weakly keyed, but a
    program holds its model and so its function: only `clear` releases them.) Locked:
    a background thread may add a program while a fit counts them."""

    def __init__(self) -> None:
        self._by_function: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, function, key):
        try:
            with self._lock:
                return self._by_function.get(function, {}).get(key)
        except TypeError:  # not weakly referenceable, or an unhashable key
            return None

    def put(self, function, key, program) -> None:
        try:
            with self._lock:
                self._by_function.setdefault(function, {})[key] = program
        except TypeError:
            pass

    def cache_size(self) -> int:
        with self._lock:
            return sum(len(programs) for programs in self._by_function.values())

    def clear(self) -> None:
        with self._lock:
            self._by_function.clear()
