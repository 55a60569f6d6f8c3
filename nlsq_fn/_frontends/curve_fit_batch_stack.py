"""The fit under every `curve_fit_batch`: one stack of equally long datasets (a leading
batch axis on `x`, `y` and `sigma`) fitted by `solve_batch`, with each member's
covariance computed as `curve_fit` does. Parameter maps reshape into it and out of it;
ragged datasets call it once per length (or once, padded)."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .._drivers.batch import init_batch, solve_batch, with_starts
from .._drivers.solver import Solver
from .._evaluation.program_store import stored
from .._misc import optional_import
from .._problem.data import Data, validate_data
from .._results.covariance import covariance_from_jacobian
from .._results.solution import Solution


class Progress:
    """A tqdm bar over a batch's members, counting across the stacks fitted one after
    another (see `curve_fit_batch`'s `progress`), or nothing."""

    def __init__(self, progress: bool | None, size: int):
        self.bar = None
        self.done = 0  # members of the stacks already fitted
        if progress is False:
            return
        try:
            tqdm = optional_import("tqdm.auto", "progress")
        except ImportError:
            if progress is None:  # the default: a bar only where tqdm is installed
                return
            raise
        self.bar = tqdm.tqdm(
            total=size,
            unit="fit",
            delay=2.0 if progress is None else 0.0,
            leave=progress is not None,
        )

    def reporter(self) -> Callable[[int, int], None] | None:
        """`solve_batch`'s `progress` for the next stack."""
        if self.bar is None:
            return None
        bar, done = self.bar, self.done
        return lambda finished, _: bar.update(done + finished - bar.n)

    def stack_done(self, size: int) -> None:
        """A stack of `size` members is fitted (a one-program batch reports nothing
        while it runs)."""
        self.done += size
        if self.bar is not None:
            self.bar.update(self.done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# Model-independent: kept by the program store, so a new process's first batch of a
# size seen before loads it instead of compiling it.
@stored
def _covariances(jac, cost, n_points, absolute_sigma: bool):
    return jax.vmap(lambda jac, cost, m: covariance_from_jacobian(jac, cost, m, absolute_sigma))(
        jac, cost, n_points
    )


def fit_stack(
    model: Callable,
    data: Data,
    p0: np.ndarray,
    solver: Solver,
    absolute_sigma: bool,
    progress: Progress,
    n_points=None,
    member_name: Callable[[int], str] = lambda index: f"Member {index}",
) -> tuple[jax.Array, jax.Array, Solution]:
    """``(popt, pcov, solution)`` of every member of `data` (a leading batch axis on
    every leaf), from `p0` (``(n,)`` for all or ``(batch, n)``). `n_points`: each
    member's number of counted points (default: all of `y`'s second axis).
    `member_name` names a member in errors, as the user indexes it."""
    size = data.y.shape[0]
    first = p0 if p0.ndim == 1 else p0[0]
    try:
        state = init_batch(model, data, jnp.asarray(first), solver)
    except ValueError as error:
        raise _named(error, data, member_name) from None
    if p0.ndim == 2:
        state = with_starts(state, jnp.asarray(p0))
    solution = solve_batch(model, data, state, progress=progress.reporter())
    progress.stack_done(size)
    if n_points is None:
        n_points = jnp.full(size, data.y.shape[1])
    # A chunked fit (`chunk_size`, or "auto" on long members) keeps no Jacobian but its
    # square R factor: the same singular values and column norms, so the same recipe.
    jac = solution.factor if solution.jac is None else solution.jac
    pcov = _covariances(jac, solution.cost, jnp.asarray(n_points), absolute_sigma)
    return solution.x, pcov, solution


def _named(error: ValueError, data: Data, member_name: Callable[[int], str]) -> ValueError:
    """`error` (the batch's data checked at once) with the first member at fault named,
    where one member's own data show it: found by halving the batch (a few checks, not
    one per member; an error that is not the data's, the model's, names none)."""

    def fails(rows) -> ValueError | None:
        try:
            validate_data(jax.tree.map(lambda leaf: leaf[rows], data))
        except ValueError as member_error:
            return member_error
        return None

    start, stop = 0, data.y.shape[0]
    while stop - start > 1:
        middle = (start + stop) // 2
        if fails(slice(start, middle)):
            stop = middle
        else:
            start = middle
    member_error = fails(start)  # on the member alone: its own shapes in the message
    return error if member_error is None else ValueError(f"{member_name(start)}: {member_error}")
