"""Trust Region Reflective (Branch, Coleman & Li, 1999), as in SciPy's ``trf``.

The unbounded algorithm is the bounded one with infinite bounds (the Coleman–Li
vector is then all ones and no step is ever reflected), so one code path serves both.
"""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .batched_subproblem import trust_region_subproblem
from .bounds import (
    coleman_li_scaling,
    in_bounds,
    intersect_trust_region,
    make_strictly_feasible,
    step_size_to_bound,
)
from .strategy import AbstractStrategy, StepOutcome, jacobian_scale_inverse, judge_trial
from .trust_region import (
    GTOL,
    RUNNING,
    minimize_quadratic_1d,
    quadratic_along,
    quadratic_value,
)


class _TRFState(eqx.Module):
    radius: Float[Array, ""]
    alpha: Float[Array, ""]
    scale_inv: Float[Array, " n"]


class _TRFProposal(eqx.Module):
    x_new: Float[Array, " n"]
    step: Float[Array, " n"]
    step_h: Float[Array, " n"]  # the step in the scaled variables
    predicted: Float[Array, ""]  # the model's predicted cost reduction
    alpha: Float[Array, ""]  # the Levenberg–Marquardt parameter the subproblem found


def select_step(x, jac_h, diag_h, g_h, p, p_h, d, radius, lower, upper, theta):
    """Best of: the trust-region step, its reflection off the first bound it crosses,
    and the scaled steepest-descent step, each kept strictly inside the box."""
    p_value = quadratic_value(jac_h, g_h, p_h, diag_h)
    inside = in_bounds(x + p, lower, upper)

    p_stride, hits = step_size_to_bound(x, p, lower, upper)
    r_h = jnp.where(hits != 0, -p_h, p_h)
    r = d * r_h
    p_cut = p * p_stride
    p_h_cut = p_h * p_stride
    _, to_tr = intersect_trust_region(p_h_cut, r_h, radius)
    to_bound, _ = step_size_to_bound(x + p_cut, r, lower, upper)
    r_stride = jnp.minimum(to_bound, to_tr)
    positive = r_stride > 0
    safe_r_stride = jnp.where(positive, r_stride, 1.0)
    r_lower = jnp.where(positive, (1 - theta) * p_stride / safe_r_stride, 0.0)
    r_upper = jnp.where(positive, jnp.where(r_stride == to_bound, theta * to_bound, to_tr), -1.0)
    a, b, c = quadratic_along(jac_h, g_h, r_h, diag_h, p_h_cut)
    t, r_value = minimize_quadratic_1d(a, b, r_lower, r_upper, c)
    r_h = p_h_cut + t * r_h
    r = d * r_h
    r_value = jnp.where(r_lower <= r_upper, r_value, jnp.inf)

    p_theta = theta * p_cut
    p_h_theta = theta * p_h_cut
    p_theta_value = quadratic_value(jac_h, g_h, p_h_theta, diag_h)

    ag_h = -g_h
    ag = d * ag_h
    to_tr = radius / jnp.linalg.norm(ag_h)
    to_bound, _ = step_size_to_bound(x, ag, lower, upper)
    ag_stride = jnp.where(to_bound < to_tr, theta * to_bound, to_tr)
    a, b, _ = quadratic_along(jac_h, g_h, ag_h, diag_h, jnp.zeros_like(ag_h))
    t, ag_value = minimize_quadratic_1d(a, b, jnp.zeros_like(ag_stride), ag_stride)
    ag_h = t * ag_h
    ag = t * ag

    use_p = (p_theta_value < r_value) & (p_theta_value < ag_value)
    use_r = ~use_p & (r_value < p_theta_value) & (r_value < ag_value)

    def pick(from_p, from_r, from_ag):
        return jnp.where(use_p, from_p, jnp.where(use_r, from_r, from_ag))

    step = pick(p_theta, r, ag)
    step_h = pick(p_h_theta, r_h, ag_h)
    predicted = -pick(p_theta_value, r_value, ag_value)
    step = jnp.where(inside, p, step)
    step_h = jnp.where(inside, p_h, step_h)
    predicted = jnp.where(inside, -p_value, predicted)
    return step, step_h, predicted


class TRF(AbstractStrategy):
    """Trust Region Reflective: SciPy's default, with or without box bounds.

    Works in variables scaled by the Coleman–Li vector (distance to the bound the
    gradient points at) times `x_scale`; steps that would leave the box are reflected
    off the first bound they cross or cut back to stay strictly feasible.
    """

    supports_bounds: ClassVar[bool] = True
    jacobian_after_last_step: ClassVar[bool] = True

    def init(self, x, linearization, problem):
        radius, scale_inv = trf_start(x, linearization, problem)
        state = _TRFState(radius, jnp.zeros((), x.dtype), scale_inv)
        optimal = self.optimality(x, linearization, problem) < problem.gtol
        return state, jnp.where(optimal, GTOL, RUNNING)

    def optimality(self, x, linearization, problem):
        return trf_optimality(x, linearization, problem)

    def subproblem(self, linearization, d, diag_h, g_h, state, problem):
        """The scaled Jacobian ``J_h = J diag(d)`` (what the step selection multiplies
        by) and the trust-region step ``p_h`` minimising ``0.5 ||J_h p||² + 0.5 pᵀ
        diag(diag_h) p + g_hᵀp`` within the radius, with its Levenberg–Marquardt
        parameter: here from the SVD of ``[J_h; diag(sqrt(diag_h))]`` (SciPy's; across
        a batch of small fits from the normal equations where safe,
        `trust_region_subproblem`); a structured problem overrides this
        (`nlsq_fn._strategies.block_trf`)."""
        jac_h = linearization.factor * d[None, :]
        p_h, alpha = trust_region_subproblem(
            jac_h,
            g_h,
            state.radius,
            state.alpha,
            problem.n_rows,
            diag=diag_h if problem.bounded else None,
            rtol=0.01,
            gauss_newton_slack=1.0,
            to_boundary=True,
        )
        return jac_h, p_h, alpha

    def propose(self, x, linearization, state, problem):
        g = linearization.grad
        d, diag_h, theta = trf_scaling(x, g, state.scale_inv, problem)
        g_h = d * g
        jac_h, p_h, alpha = self.subproblem(linearization, d, diag_h, g_h, state, problem)
        x_new, step, step_h, predicted = trf_step(
            x, jac_h, diag_h, g_h, p_h, d, state.radius, theta, problem
        )
        return x_new, _TRFProposal(x_new, step, step_h, predicted, alpha)

    def judge(self, x, linearization, state, proposal, trial, problem):
        judged = judge_trf_step(self, x, linearization, state, proposal, trial, problem)
        # The Levenberg–Marquardt parameter follows the radius (SciPy's `alpha *=
        # Delta / Delta_new`) while the fit goes on.
        going_on = trial.finite & (judged.status == RUNNING)
        updated = judged.updated_radius
        safe_updated = jnp.where(updated > 0, updated, 1.0)
        alpha = jnp.where(going_on, proposal.alpha * state.radius / safe_updated, proposal.alpha)
        return StepOutcome(
            judged.x,
            judged.linearization,
            _TRFState(judged.radius, alpha, judged.scale_inv),
            judged.accepted,
            judged.status,
        )


def trf_step(x, jac_h, diag_h, g_h, p_h, d, radius, theta, problem):
    """``(x_new, step, step_h, predicted)`` from the scaled subproblem's solution `p_h`:
    with bounds SciPy's `select_step` (reflected or cut at the boundary) and the new
    point kept strictly inside; without them the step itself. Shared by TRF and its LSMR
    form."""
    lower, upper = problem.lower, problem.upper
    if problem.bounded:
        step, step_h, predicted = select_step(
            x, jac_h, diag_h, g_h, d * p_h, p_h, d, radius, lower, upper, theta
        )
        return make_strictly_feasible(x + step, lower, upper, rstep=0), step, step_h, predicted
    step, step_h = d * p_h, p_h
    return x + step, step, step_h, -quadratic_value(jac_h, g_h, p_h)


def judge_trf_step(strategy, x, linearization, state, proposal, trial, problem):
    """`judge_trial` for a TRF step (`TRF`, `TRFLSMR`): the step's norm in the scaled
    variables, at the edge beyond 95% of the radius, as SciPy's ``trf``."""
    step_h_norm = jnp.linalg.norm(proposal.step_h)
    return judge_trial(
        strategy,
        x,
        linearization,
        proposal.x_new,
        trial,
        problem,
        predicted=proposal.predicted,
        step=proposal.step,
        step_norm=step_h_norm,
        at_edge=step_h_norm > 0.95 * state.radius,
        radius=state.radius,
        scale_inv=state.scale_inv,
    )


def trf_start(x, linearization, problem):
    """SciPy's initial trust radius (in the Coleman–Li and `x_scale` variables) and the
    inverse scale, for `TRF` and `TRFLSMR`."""
    scale_inv = jacobian_scale_inverse(linearization, problem)
    v, dv = coleman_li_scaling(x, linearization.grad, problem.lower, problem.upper)
    v = jnp.where(dv != 0, v * scale_inv, v)
    radius = jnp.linalg.norm(x * scale_inv / jnp.sqrt(v))
    return jnp.where(radius == 0, 1.0, radius), scale_inv


def trf_optimality(x, linearization, problem):
    """SciPy's first-order optimality of ``trf``: the Coleman–Li scaled gradient."""
    v, _ = coleman_li_scaling(x, linearization.grad, problem.lower, problem.upper)
    return jnp.max(jnp.abs(linearization.grad * v))


def trf_scaling(x, g, scale_inv, problem):
    """The variables' scale `d`, the diagonal term ``diag_h`` of the scaled problem and
    the step-back factor `theta` at `x` with gradient `g` (SciPy's ``trf_bounds``;
    without bounds the Coleman–Li vector is all ones, as ``trf_no_bounds``)."""
    scale = 1 / scale_inv
    if problem.bounded:
        v, dv = coleman_li_scaling(x, g, problem.lower, problem.upper)
        g_norm = jnp.max(jnp.abs(g * v))
        # Coleman–Li scaling is applied in the variables already scaled by `x_scale`.
        v = jnp.where(dv != 0, v * scale_inv, v)
        d, diag_h = jnp.sqrt(v) * scale, g * dv * scale
    else:
        g_norm = jnp.max(jnp.abs(g))
        d, diag_h = scale, jnp.zeros_like(g)
    return d, diag_h, jnp.maximum(0.995, 1 - g_norm)
