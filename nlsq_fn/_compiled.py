"""nlsq_fn's compiled programs, and a bound on how many models keep theirs.

JAX's jit cache holds every static argument (here: the user's model) strongly, with room
for 8,192 entries, so each fit program compiled for a different model function (a fresh
`lambda` per call, in a loop) stays compiled and mapped into memory for the rest of the
process. XLA:CPU maps each program's kernels separately, about 200 memory maps for a
fit; after a few hundred models a process reaches Linux's default limit of 65,530 maps
(`vm.max_map_count`) and XLA crashes (a segfault) while compiling the next one. The
front ends therefore count the distinct models they compile for and, past
`MAX_MODELS`, drop nlsq_fn's compiled programs (never the user's own): a model still in
use then compiles once more.
"""

import equinox as eqx
import jax

MAX_MODELS = 64

_programs = []
_models: set = set()


def compiled(function):
    """`equinox.filter_jit` of `function`, registered so that `note_model` can clear it."""
    program = eqx.filter_jit(function)
    _programs.append(program)
    return program


def _key(model):
    # What the jit caches tell models apart by: the structure and the non-array leaves.
    leaves, treedef = jax.tree.flatten(model)
    return treedef, tuple(id(leaf) for leaf in leaves if not eqx.is_array(leaf))


def note_model(model) -> None:
    """Count `model`; past `MAX_MODELS` distinct ones, clear every compiled program."""
    try:
        key = _key(model)
        hash(key)
    except Exception:  # noqa: BLE001 - an unhashable structure: count it as new
        key = object()
    if key in _models:
        return
    if len(_models) >= MAX_MODELS:
        clear()
    _models.add(key)


def clear() -> None:
    """Drop nlsq_fn's compiled programs (and the count of models)."""
    for program in _programs:
        program._cached.clear_cache()
    _models.clear()
