import importlib
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike

_PACKAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "")  # with its "/"


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn at the user's line: the first caller outside nlsq_fn, however deep the
    call that warns (a fixed `stacklevel` breaks as front ends call one another)."""
    warnings.warn(message, category, skip_file_prefixes=(_PACKAGE,))


def tree_where(pred, on_true, on_false):
    """``jnp.where`` leaf by leaf over two pytrees of the same structure."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def as_jax_array(value, dtype=None) -> jax.Array:
    """``jnp.asarray(value, dtype)``, without compiling anything for host data.

    JAX compiles a small program for each `jnp.asarray` of a NumPy array (one per
    shape and dtype), which a fresh process pays at every call site of a fit's front
    end; `jax.device_put` copies the same (canonical) dtype without one. Traced and
    device values go through `jnp.asarray`.
    """
    if isinstance(value, (jax.Array, jax.core.Tracer)):
        return jnp.asarray(value, dtype)
    return jax.device_put(np.asarray(value, dtype), may_alias=False)


def is_concrete(*arrays) -> bool:
    """Whether every leaf holds a value (so it can be checked in Python)."""
    return not any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(arrays))


# What SciPy accepts wherever it takes an array: arrays, scalars and nested lists.
ArrayLikeOrSequence = ArrayLike | list | tuple


def optional_import(module: str, extra: str):
    """Import `module`, or raise an ImportError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"This needs the optional dependency `{module.split('.')[0]}`: "
            f"pip install 'nlsq_fn[{extra}]'"
        ) from error
