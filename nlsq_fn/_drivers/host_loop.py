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
from jaxtyping import Array, Bool, Float

from .._evaluation.linearize import Linearization
from .._strategies.strategy import Problem
from .._strategies.trust_region import MAX_NFEV, RUNNING
from .chunks import Sums
from .fingerprint import differing
from .solve import LoopCarry
from .solver import SolverState
from .steps import judge_step, propose_step, start_loop


class FitCheckpoint(eqx.Module):
    """What a resumed fit needs: the loop's carry and the facts of the first pass."""

    carry: LoopCarry
    x0: Float[Array, " n"]
    first: Sums  # of the first pass: its data sums must recur in every pass
    initial_cost: Float[Array, ""]
    sums: Sums  # at the current iterate
    passes: Float[Array, ""]
    # Whether the last trial was accepted: a fit stopped by `max_nfev` at a rejected
    # trial counted an iteration for it, which a resumed fit takes back.
    accepted: Bool[Array, ""]

    @property
    def n_points(self):
        return self.first.n_points


def host_iterations(strategy, carry, problem: Problem, max_nfev: int, evaluate):
    """The strategy's iterations from `carry` until it stops, driven from Python (the
    one host loop of the streamed fits, `fit`'s passes and `update`'s chunks): each
    trial point's summary, and the sums of its residuals, from ``evaluate(x)``. Yields
    ``(carry, accepted, sums)`` after every iteration, for the caller to keep the sums
    at the accepted point and save its checkpoint."""
    while int(carry.status) == RUNNING:
        x_trial, proposal = propose_step(strategy, carry, problem)
        trial, sums = evaluate(x_trial)
        carry, accepted = judge_step(strategy, carry, proposal, trial, problem, max_nfev)
        yield carry, accepted, sums


def save_checkpoint(path, checkpoint: FitCheckpoint, fingerprint) -> None:
    """Save `checkpoint` after the fit's `fingerprint` (`_drivers.fingerprint`): the fingerprint
    comes first, so that a fit can read it, and name what differs, even where the rest
    has another structure (another method's state)."""
    # Write then rename: a process killed while writing leaves the last checkpoint intact.
    # (A name of this process's own: processes of one fit may share a file system.)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "wb") as file:
        eqx.tree_serialise_leaves(file, jnp.asarray(fingerprint))
        eqx.tree_serialise_leaves(file, checkpoint)
    os.replace(temporary, path)


def checkpoint_like(state: SolverState, problem: Problem) -> FitCheckpoint:
    """A checkpoint of this fit's structure (zeros): what loading fills in."""
    n = state.params.size
    dtype = state.lower.dtype
    shape_only = jax.eval_shape(
        lambda: FitCheckpoint(
            start_loop(
                state.strategy,
                state.params,
                Linearization(jnp.zeros((), dtype), jnp.zeros(n, dtype), jnp.zeros((n, n), dtype)),
                problem,
                state.max_nfev,
            ),
            state.params,
            Sums.zeros(dtype),
            jnp.zeros((), dtype),
            Sums.zeros(dtype),
            jnp.zeros((), dtype),
            jnp.zeros((), bool),
        )
    )
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shape_only)


def load_checkpoint(
    path, state: SolverState, problem: Problem, fingerprint, names
) -> FitCheckpoint | None:
    """The checkpoint saved at `path` by this fit (None if there is none yet); an error
    naming what differs if it belongs to another fit (`fingerprint`: one row per item
    of `names`). A fit stopped by its evaluation budget resumes running when the budget
    is now larger."""
    if not os.path.exists(path):
        return None
    with open(path, "rb") as file:
        try:
            saved_print = eqx.tree_deserialise_leaves(file, jnp.asarray(fingerprint))
        except Exception as error:
            raise ValueError(
                f"The checkpoint {os.fspath(path)!r} was not saved by this version of "
                f"nlsq_fn; delete it to start afresh ({error})."
            ) from error
        others = differing(names, saved_print, fingerprint)
        if others:
            raise ValueError(
                f"The checkpoint {os.fspath(path)!r} belongs to a fit with another "
                f"{', '.join(others)}; delete it to start afresh."
            )
        try:
            saved = eqx.tree_deserialise_leaves(file, checkpoint_like(state, problem))
        except Exception as error:
            raise ValueError(
                f"The checkpoint {os.fspath(path)!r} is not one of this fit; delete it to "
                f"start afresh ({error})."
            ) from error
    carry = saved.carry
    if int(carry.status) == MAX_NFEV and int(carry.nfev) < state.max_nfev:
        nit = carry.nit - (~saved.accepted).astype(carry.nit.dtype)
        saved = eqx.tree_at(
            lambda s: (s.carry.status, s.carry.nit),
            saved,
            (jnp.asarray(RUNNING, carry.status.dtype), nit),
        )
    return saved
