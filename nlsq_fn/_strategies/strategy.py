"""The interface between the solve loop and a trust-region strategy."""

import abc
from collections.abc import Callable
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PyTree

from .._evaluation.linearize import Linearization
from .._misc import tree_where
from .bounds import find_active_constraints
from .trust_region import GTOL, RUNNING, termination_status, update_radius


class Problem(eqx.Module):
    """Per-fit constants a strategy needs: bounds, scaling, tolerances, sizes.

    ``x_scale`` is None for Jacobian-based scaling (SciPy's ``x_scale="jac"``).
    ``bounded`` is False only when every bound is known to be infinite, so a strategy
    can leave the bound handling out of the compiled step.
    """

    lower: Float[Array, " n"]
    upper: Float[Array, " n"]
    x_scale: Float[Array, " n"] | None
    ftol: float = eqx.field(static=True)
    xtol: float = eqx.field(static=True)
    gtol: float = eqx.field(static=True)
    n_rows: Int[Array, ""]
    bounded: bool = eqx.field(default=True, static=True)
    # Flat parameters -> weighted residuals, for a matrix-free strategy (`TRFLSMR`)
    # that applies the Jacobian as JVPs / VJPs; None for the others.
    residual: Callable | None = eqx.field(default=None, static=True)


class StepOutcome(eqx.Module):
    """One trial step: where the iterate is now and whether the fit has finished."""

    x: Float[Array, " n"]
    linearization: Linearization
    strategy_state: PyTree
    accepted: Bool[Array, ""]
    status: Int[Array, ""]


class AbstractStrategy(eqx.Module):
    """A trust-region strategy: proposes a step, judges it, updates its own state.

    Each call of `step` evaluates the problem exactly once (at the trial point), so the
    loop counts one function evaluation per call.

    A strategy may define `step` as `propose` (the trial point, from the summary alone),
    one evaluation at the trial point, then `judge` (accept or not, update the state).
    The split lets a host loop drive the fit when an evaluation cannot run inside a
    compiled loop (one pass over a file: `nlsq_fn.StreamingOptimizer`); `solve`'s
    compiled loop calls `step`, their composition. A strategy that defines only `step`
    works everywhere except in such host loops.
    """

    @abc.abstractmethod
    def init(
        self, x: Float[Array, " n"], linearization: Linearization, problem: Problem
    ) -> tuple[PyTree, Int[Array, ""]]:
        """The strategy's state at the start, and `GTOL` if the start is optimal."""

    def step(
        self,
        x: Float[Array, " n"],
        linearization: Linearization,
        state: PyTree,
        evaluate: Callable[[Float[Array, " n"]], Linearization],
        problem: Problem,
    ) -> StepOutcome:
        """Try one step from `x`: `propose`, evaluate the trial point, `judge`."""
        x_trial, proposal = self.propose(x, linearization, state, problem)
        trial = evaluate(x_trial)
        return self.judge(x, linearization, state, proposal, trial, problem)

    def propose(
        self,
        x: Float[Array, " n"],
        linearization: Linearization,
        state: PyTree,
        problem: Problem,
    ) -> tuple[Float[Array, " n"], PyTree]:
        """The trial point, and what `judge` needs to know about the step to it."""
        raise NotImplementedError(
            f"{type(self).__name__} defines only `step`: it cannot be driven step by "
            "step from a host loop (streamed fits)."
        )

    def judge(
        self,
        x: Float[Array, " n"],
        linearization: Linearization,
        state: PyTree,
        proposal: PyTree,
        trial: Linearization,
        problem: Problem,
    ) -> StepOutcome:
        """Accept or reject the trial point, given the summary `trial` there."""
        raise NotImplementedError(
            f"{type(self).__name__} defines only `step`: it cannot be driven step by "
            "step from a host loop (streamed fits)."
        )

    @property
    def steps_from_host(self) -> bool:
        """Whether the strategy defines `propose` and `judge` (a host loop can drive it)."""
        return type(self).propose is not AbstractStrategy.propose

    @abc.abstractmethod
    def optimality(
        self, x: Float[Array, " n"], linearization: Linearization, problem: Problem
    ) -> Float[Array, ""]:
        """The first-order optimality measure reported in the result."""

    def active_constraints(self, x: Float[Array, " n"], problem: Problem) -> Int[Array, " n"]:
        """SciPy's ``active_mask``: -1 / 1 for variables at their lower / upper bound
        (within ``xtol``, as SciPy's TRF reports it, but at least the type's ``eps``:
        in float32 TRF stops one unit in the last place inside, far beyond SciPy's
        default ``xtol``), 0 elsewhere (exact contact only when ``xtol = 0``)."""
        if not self.supports_bounds:
            return jnp.zeros(x.shape, jnp.int32)
        rtol = max(problem.xtol, float(jnp.finfo(x.dtype).eps)) if problem.xtol else 0.0
        active = find_active_constraints(x, problem.lower, problem.upper, rtol)
        return active.astype(jnp.int32)

    supports_bounds: eqx.AbstractClassVar[bool]
    # Whether the Jacobian is evaluated after the final, accepted step (SciPy's TRF does,
    # MINPACK does not); only the reported `njev` depends on it.
    jacobian_after_last_step: eqx.AbstractClassVar[bool]
    # Whether a bounded fit starts strictly inside the box (TRF needs it; SciPy's dogbox
    # starts where it is told, possibly on a bound).
    starts_strictly_inside: ClassVar[bool] = True


def jacobian_scale_inverse(linearization: Linearization, problem: Problem, previous=None):
    """The inverse of the variables' scale: ``1 / x_scale``, or with ``x_scale="jac"``
    the Jacobian's column norms (SciPy's rule: never decreasing during the fit, 1 for a
    zero column at the start)."""
    if problem.x_scale is not None:
        return 1 / problem.x_scale
    norms = linearization.column_norms
    if previous is None:
        return jnp.where(norms == 0, 1.0, norms)
    return jnp.maximum(norms, previous)


class Judged(NamedTuple):
    """What `judge_trial` decides about a trial point."""

    x: Float[Array, " n"]  # the iterate now: the trial point if accepted
    linearization: Linearization  # the summary there
    accepted: Bool[Array, ""]
    status: Int[Array, ""]
    radius: Float[Array, ""]  # the next trust radius
    updated_radius: Float[Array, ""]  # the radius rule's value, before a non-finite trial
    scale_inv: Float[Array, " n"]  # the next `jacobian_scale_inverse`


def judge_trial(
    strategy: AbstractStrategy,
    x,
    linearization: Linearization,
    x_new,
    trial: Linearization,
    problem: Problem,
    *,
    predicted,
    step,
    step_norm,
    at_edge,
    radius,
    scale_inv,
) -> Judged:
    """The acceptance test SciPy's trf and dogbox share: the actual reduction of the
    cost against the `predicted` one updates the trust radius (`step_norm` is the step's
    size in the strategy's scaled norm, `at_edge` whether it reached the region's
    edge); the tolerances decide whether the fit has converged; the trial point is
    accepted if the cost went down. A non-finite trial is rejected and the radius cut
    to a quarter of the step, and the fit goes on."""
    finite = trial.finite
    reduction = jnp.where(finite, linearization.cost - trial.cost, -jnp.inf)
    updated_radius, ratio = update_radius(radius, reduction, predicted, step_norm, at_edge)
    status = termination_status(
        reduction,
        linearization.cost,
        jnp.linalg.norm(step),
        jnp.linalg.norm(x),
        ratio,
        problem.ftol,
        problem.xtol,
    )
    status = jnp.where(finite, status, RUNNING)
    accepted = finite & (reduction > 0)
    x_out = jnp.where(accepted, x_new, x)
    lin_out = tree_where(accepted, trial, linearization)
    scale_inv = jnp.where(accepted, jacobian_scale_inverse(trial, problem, scale_inv), scale_inv)
    gtol_met = accepted & (strategy.optimality(x_out, lin_out, problem) < problem.gtol)
    return Judged(
        x=x_out,
        linearization=lin_out,
        accepted=accepted,
        status=jnp.where(gtol_met, GTOL, status),
        radius=jnp.where(finite, updated_radius, 0.25 * step_norm),
        updated_radius=updated_radius,
        scale_inv=scale_inv,
    )
