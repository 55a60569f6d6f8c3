"""A strategy's iterations driven from Python, and their checkpoints.

`solve` runs the strategy's `propose` and `judge` inside one compiled loop. When every
evaluation of the summary is a pass over a source (or a chunk of a stream), a Python
loop drives the same two steps, each compiled once, and between them computes the
trial's summary. The loop's state is a pytree, so it is saved to disk after each
iteration (`save_checkpoint`) and an interrupted fit resumes from it
(`load_checkpoint`).
"""

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._chunks import Sums
from ._linearize import Linearization
from ._solve import _Carry
from ._solver import SolverState
from ._steps import judge_step, propose_step, start_loop  # noqa: F401
from ._strategy import Problem


class FitCheckpoint(eqx.Module):
    """What a resumed fit needs: the loop's carry and the facts of the first pass."""

    carry: _Carry
    x0: Float[Array, " n"]
    n_points: Float[Array, ""]
    initial_cost: Float[Array, ""]
    sums: Sums  # at the current iterate
    passes: Float[Array, ""]


def save_checkpoint(path, checkpoint: FitCheckpoint) -> None:
    # Write then rename: a process killed while writing leaves the last checkpoint intact.
    # (A name of this process's own: processes of one fit may share a file system.)
    temporary = f"{path}.{os.getpid()}.tmp"
    eqx.tree_serialise_leaves(temporary, checkpoint)
    os.replace(temporary, path)


def checkpoint_like(state: SolverState, problem: Problem) -> FitCheckpoint:
    """A checkpoint of this fit's structure (zeros): what loading fills in."""
    n = state.params.size
    dtype = state.lower.dtype
    shape_only = jax.eval_shape(
        lambda: FitCheckpoint(
            start_loop(
                state.strategy, state.params,
                Linearization(jnp.zeros((), dtype), jnp.zeros(n, dtype),
                              jnp.zeros((n, n), dtype)),
                problem, state.max_nfev,
            ),
            state.params, jnp.zeros((), dtype), jnp.zeros((), dtype),
            Sums.zeros(dtype), jnp.zeros((), dtype),
        )
    )
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shape_only)


def load_checkpoint(path, state: SolverState, problem: Problem) -> FitCheckpoint | None:
    """The checkpoint saved at `path` by this fit (None if there is none yet); an error
    if it belongs to another fit."""
    if not os.path.exists(path):
        return None
    like = checkpoint_like(state, problem)
    try:
        saved = eqx.tree_deserialise_leaves(path, like)
    except Exception as error:
        raise ValueError(
            f"The checkpoint {os.fspath(path)!r} is not one of this fit (another "
            f"model, method or number of parameters?): {error}"
        ) from error
    if not np.array_equal(np.asarray(saved.x0), np.asarray(state.params)):
        raise ValueError(
            f"The checkpoint {os.fspath(path)!r} belongs to a fit from another `p0`; "
            "delete it to start afresh."
        )
    return saved
