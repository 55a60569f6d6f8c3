"""A global fit driven step by step from Python, so that a new model compiles only its
own evaluation.

`global_solve` compiles the whole fit into one program: the model's per-dataset
Jacobian blocks, their QR factors, `BlockTRF`'s subproblem (block-arrow Cholesky
factorizations inside a safeguarded Newton loop), the loop and the covariance: several
seconds of XLA compilation on a CPU for each new model and size. Only the first part
depends on the model. Here it is the only program compiled per model (`_jacobian`); the
rest (`block_summary`'s loss scaling and QRs, `propose`, `judge`, the loop's start, the
optimality and covariance at the end) are stored programs (`nlsq_fn._evaluation.
program_store`): compiled once per machine for a strategy, options and shapes, and
loaded from disk by later processes, as the single fit's step-by-step driver
(`nlsq_fn._drivers.stepwise`) does.

The same strategy code takes the same steps in the same order, so the result is
`global_solve`'s up to rounding (fused and unfused kernels may round differently). For
concrete inputs already checked by `init`, with TRF; no derivatives through it (use
`global_solve`).
"""

import equinox as eqx
import numpy as np

from .._evaluation.precision import full_precision
from .._evaluation.program_store import stored
from .._misc import is_concrete
from .._results.solution import finished
from .._strategies.block_arrow import block_covariance
from .._strategies.block_trf import BlockLinearization, BlockTRF
from .._strategies.trf import TRF
from .._strategies.trust_region import RUNNING
from .block_linearize import GlobalModel, GlobalSolution, block_jacobian, block_summary
from .linearize_at import problem_for
from .solver import SolverState
from .start import raise_for_start, start_point
from .steps import judge_step, propose_step, start_loop

__all__ = ["can_step_blocks", "solve_blocks_stepwise"]


def can_step_blocks(data, state: SolverState) -> bool:
    """Whether `solve_blocks_stepwise` can drive this fit: TRF (run as `BlockTRF`) with
    no progress hooks, on concrete inputs."""
    return (
        type(state.strategy) is TRF
        and state.verbose == 0
        and state.callback is None
        and is_concrete(data, state.params, state.lower, state.upper, state.x_scale)
    )


# The model's part: compiled once per model and shapes (kept by `filter_jit`).
_jacobian = eqx.filter_jit(full_precision(block_jacobian))


@stored
def _summary(f, blocks, loss, n_shared: int) -> BlockLinearization:
    cost, grad, r_blocks = block_summary(f, blocks, loss, n_shared)
    return BlockLinearization(cost, grad, r_blocks, n_shared)


@stored
def _finish(strategy, x, linearization: BlockLinearization, problem, n_points):
    """The optimality, the active bounds and the covariance by blocks at the solution."""
    covariance = block_covariance(
        linearization.r_blocks, linearization.n_shared, linearization.cost, n_points
    )
    return (
        strategy.optimality(x, linearization, problem),
        strategy.active_constraints(x, problem),
        covariance,
    )


@stored
def _start_point(state: SolverState):
    # (One program rather than an eager `jnp` call, each compiled, per operation.)
    return start_point(state)[0]


def solve_blocks_stepwise(
    model: GlobalModel, data, state: SolverState, check_start: bool = False
) -> GlobalSolution:
    """`global_solve`, driven from Python (see the module's docstring). `check_start`:
    raise `init`'s errors for a model that is not finite at the start (for a `state`
    built without that check: the first evaluation checks it, with no program of its
    own)."""
    if not can_step_blocks(data, state):
        raise ValueError("This global fit cannot be driven step by step; use `global_solve`.")
    strategy = BlockTRF(n_shared=model.n_shared)
    x0 = _start_point(state)
    problem = problem_for(data, state)
    max_nfev = state.max_nfev

    def evaluate(x):
        f, blocks = _jacobian(model, data, x)
        return f, _summary(f, blocks, state.loss, model.n_shared)

    fun, current = evaluate(x0)
    if check_start:  # (`fun` is zero at masked points)
        residuals = np.asarray(fun)
        with np.errstate(over="ignore"):
            raise_for_start(np.all(np.isfinite(residuals)), np.isfinite(0.5 * np.sum(residuals**2)))
    initial_cost = current.cost
    carry = start_loop(strategy, x0, current, problem, max_nfev)
    while int(carry.status) == RUNNING:
        x_trial, proposal = propose_step(strategy, carry, problem)
        trial_fun, trial = evaluate(x_trial)
        carry, accepted = judge_step(strategy, carry, proposal, trial, problem, max_nfev)
        if bool(accepted):
            fun, current = trial_fun, trial
    optimality, active_mask, covariance = _finish(
        strategy, carry.x, current, problem, data.n_points
    )
    solution = finished(carry.x, current, fun, None, optimality, active_mask, carry, initial_cost)
    return GlobalSolution(solution, covariance)
