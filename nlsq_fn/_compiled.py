"""nlsq_fn's compiled programs, and a bound on how many of them stay compiled.

JAX's jit cache keeps every program compiled for a new model function or new static
options (a fresh `lambda` per call, another loss, another Jacobian scheme), with room for
8,192 entries, for the rest of the process: it holds each static argument, so nothing
is released when the user's function is gone. XLA:CPU maps each program's kernels into
memory separately, about 200–250 memory maps for a fit; after some 300 programs a
process reaches Linux's default limit of 65,530 maps (`vm.max_map_count`) and XLA
crashes (a segfault) while compiling the next one. The front ends therefore count
nlsq_fn's compiled programs and, past `MAX_PROGRAMS`, drop them all (never the user's
own): a fit still in use then compiles once more.
"""

import equinox as eqx

MAX_PROGRAMS = 96

_programs = []


def compiled(function):
    """`equinox.filter_jit` of `function`, registered so that `limit_programs` can clear
    it."""
    program = eqx.filter_jit(function)
    _programs.append(program)
    return program


def programs_kept() -> int:
    """How many programs nlsq_fn holds compiled now."""
    return sum(program._cached._cache_size() for program in _programs)


def limit_programs() -> None:
    """Clear nlsq_fn's compiled programs once there are `MAX_PROGRAMS` of them; called by
    the front ends before each fit (a fit then compiles at most one more)."""
    if programs_kept() >= MAX_PROGRAMS:
        clear()


def clear() -> None:
    """Drop nlsq_fn's compiled programs."""
    for program in _programs:
        program._cached.clear_cache()
