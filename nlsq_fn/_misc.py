import jax
import jax.numpy as jnp
from jaxtyping import ArrayLike


def tree_where(pred, on_true, on_false):
    """``jnp.where`` leaf by leaf over two pytrees of the same structure."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def is_concrete(*arrays) -> bool:
    """Whether every leaf holds a value (so it can be checked in Python)."""
    return not any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(arrays))


# What SciPy accepts wherever it takes an array: arrays, scalars and nested lists.
ArrayLikeOrSequence = ArrayLike | list | tuple
