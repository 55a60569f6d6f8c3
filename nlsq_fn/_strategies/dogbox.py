"""Dogleg in rectangular trust regions (Voglis & Lagaris, 2004), as SciPy's ``dogbox``.

The trust region is a box, ``|step_i| <= radius * x_scale_i``; intersected with the
bounds it is again a box, so each step minimises the Gauss–Newton model over a box by
walking the dogleg path (to the Cauchy point along the negative gradient, then straight
towards the Gauss–Newton point) until the path leaves the box. A variable that a step
puts on a bound is set exactly there; while the gradient pushes it outwards it is held
(left out of the next step), which is the first-order optimality condition for it.

SciPy keeps the set of variables on a bound as separate state; here "on a bound" is
exact equality ``x_i == bound_i``, which is what that state records (the accepted point
is snapped onto the bounds the step hit). Only the ``n``-sized summary is used: the
Gauss–Newton step is the minimum-norm least-squares step of the free columns, from the
SVD of the factor ``r`` (``rᵀr = JᵀJ``), cut off at machine precision as SciPy's
``lstsq(J, -f, rcond=-1)``.
"""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .bounds import in_bounds, step_size_to_bound
from .small_linalg import singular_values_and_vt
from .strategy import AbstractStrategy, StepOutcome, jacobian_scale_inverse, judge_trial
from .trust_region import (
    GTOL,
    RUNNING,
    minimize_quadratic_1d,
    quadratic_along,
    quadratic_value,
)


class _DogboxState(eqx.Module):
    radius: Float[Array, ""]
    scale_inv: Float[Array, " n"]


class DogboxProposal(eqx.Module):
    x_new: Float[Array, " n"]
    step: Float[Array, " n"]
    predicted: Float[Array, ""]  # the model's predicted cost reduction
    region_hit: Bool[Array, ""]  # whether the step ends on the trust region's edge


def on_bound(x, lower, upper) -> Int[Array, " n"]:
    """-1 / 1 where `x` sits exactly on its lower / upper bound, 0 elsewhere."""
    return jnp.where(x == lower, -1, jnp.where(x == upper, 1, 0))


def free_variables(x, grad, problem) -> Bool[Array, " n"]:
    """The variables a step may move: all but those held on a bound by the gradient."""
    if not problem.bounded:
        return jnp.ones(x.shape, bool)
    return on_bound(x, problem.lower, problem.upper) * grad >= 0


def _gauss_newton_step(factor, grad, free) -> Float[Array, " n"]:
    """Minimum-norm minimiser of ``||J_free p + f||``, from ``rᵀr = JᵀJ`` and ``Jᵀf``.

    Solved with the columns scaled to unit norm (the same step when ``J`` has full
    rank): the cut at ``eps * s_max`` then drops only directions the columns do not
    determine, not a parameter whose units make its column small (in float32 a column
    norm ratio of 1e5, as in NIST's Misra1a, dropped it and the fit stalled)."""
    columns = factor * free[None, :]
    norms = jnp.linalg.norm(columns, axis=0)
    unit = jnp.where(norms > 0, 1 / jnp.where(norms > 0, norms, 1.0), 1.0)
    s, vt = singular_values_and_vt(columns * unit[None, :])
    usable = s > jnp.finfo(s.dtype).eps * s[0]
    safe_s2 = jnp.where(usable, s**2, 1.0)
    p = -unit * (vt.T @ jnp.where(usable, (vt @ (unit * grad)) / safe_s2, 0.0))
    return jnp.where(free, p, 0.0)


def dogleg_step(newton, grad, factor, lower, upper, tr_bounds):
    """The dogleg step inside the box ``lower <= p <= upper`` (bounds relative to `x`,
    already intersected with the trust region).

    Returns the step, which bounds of the box it ends on (-1, 1, or 0) and whether it
    ends on the trust region's edge. The constrained Cauchy step is improved towards the
    Gauss–Newton step even when it already touches the box: in a rectangle that still
    helps (as SciPy does).
    """
    box_lower = jnp.maximum(lower, -tr_bounds)
    box_upper = jnp.minimum(upper, tr_bounds)
    original_lower, original_upper = box_lower == lower, box_upper == upper
    region_lower, region_upper = box_lower == -tr_bounds, box_upper == tr_bounds

    to_box, _ = step_size_to_bound(jnp.zeros_like(grad), -grad, box_lower, box_upper)
    a, b, _ = quadratic_along(factor, grad, -grad, jnp.zeros_like(grad), jnp.zeros_like(grad))
    t, _ = minimize_quadratic_1d(a, b, jnp.zeros_like(to_box), to_box)
    cauchy = -t * grad
    towards_newton = newton - cauchy
    stride, hits = step_size_to_bound(cauchy, towards_newton, box_lower, box_upper)
    # The path leaves the box before the Gauss–Newton point (stride <= 1) unless that
    # point is inside, which is tested first; the guard only keeps NaN out of `where`.
    stride = jnp.where(jnp.isfinite(stride), stride, 0.0)
    dogleg = cauchy + stride * towards_newton
    bound_hits = jnp.where(
        (hits < 0) & original_lower, -1, jnp.where((hits > 0) & original_upper, 1, 0)
    )
    region_hit = jnp.any(((hits < 0) & region_lower) | ((hits > 0) & region_upper))

    newton_inside = in_bounds(newton, box_lower, box_upper)
    step = jnp.where(newton_inside, newton, dogleg)
    bound_hits = jnp.where(newton_inside, 0, bound_hits)
    return step, bound_hits, region_hit & ~newton_inside


class Dogbox(AbstractStrategy):
    """Dogleg with rectangular trust regions: SciPy's ``method="dogbox"``.

    Box bounds are handled exactly (variables reach them, rather than approaching them
    from inside as with TRF), which suits problems with few bounds, or many variables
    ending on them; the trust region is a box scaled by `x_scale`.
    """

    supports_bounds: ClassVar[bool] = True
    jacobian_after_last_step: ClassVar[bool] = True
    starts_strictly_inside: ClassVar[bool] = False

    def init(self, x, linearization, problem):
        scale_inv = jacobian_scale_inverse(linearization, problem)
        radius = jnp.max(jnp.abs(x * scale_inv))
        radius = jnp.where(radius == 0, 1.0, radius)
        state = _DogboxState(radius, scale_inv)
        optimal = self.optimality(x, linearization, problem) < problem.gtol
        return state, jnp.where(optimal, GTOL, RUNNING)

    def optimality(self, x, linearization, problem):
        g = linearization.grad
        return jnp.max(jnp.abs(jnp.where(free_variables(x, g, problem), g, 0.0)))

    def active_constraints(self, x, problem):
        return on_bound(x, problem.lower, problem.upper).astype(jnp.int32)

    def propose(self, x, linearization, state, problem):
        free = free_variables(x, linearization.grad, problem)
        g = jnp.where(free, linearization.grad, 0.0)
        factor = linearization.factor
        newton = _gauss_newton_step(factor, g, free)
        return self.dogleg_proposal(x, newton, g, factor, free, state, problem)

    def dogleg_proposal(self, x, newton, g, jac, free, state, problem):
        """The dogleg walk from the Gauss–Newton step `newton` (of the free variables)
        in the rectangular trust region, its predicted reduction with the quadratic
        model of `jac` (a factor or an operator: ``jac @ v``), and the trial point."""
        lower, upper = problem.lower, problem.upper
        tr_bounds = state.radius / state.scale_inv
        # Held variables get the empty box [0, 0]: they do not move and hit nothing.
        step, bound_hits, region_hit = dogleg_step(
            newton,
            g,
            jac,
            jnp.where(free, lower - x, 0.0),
            jnp.where(free, upper - x, 0.0),
            tr_bounds,
        )
        predicted = -quadratic_value(jac, g, step)
        x_new = x + step
        if problem.bounded:
            # Clipped against rounding, and set exactly on the bounds the step reached.
            x_new = jnp.clip(x_new, lower, upper)
            x_new = jnp.where(bound_hits < 0, lower, jnp.where(bound_hits > 0, upper, x_new))
        return x_new, DogboxProposal(x_new, step, predicted, region_hit)

    def judge(self, x, linearization, state, proposal, trial, problem):
        judged = judge_trial(
            self,
            x,
            linearization,
            proposal.x_new,
            trial,
            problem,
            predicted=proposal.predicted,
            step=proposal.step,
            step_norm=jnp.max(jnp.abs(proposal.step * state.scale_inv)),
            at_edge=proposal.region_hit,
            radius=state.radius,
            scale_inv=state.scale_inv,
        )
        return StepOutcome(
            judged.x,
            judged.linearization,
            _DogboxState(judged.radius, judged.scale_inv),
            judged.accepted,
            judged.status,
        )
