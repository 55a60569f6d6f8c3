"""Levenberg–Marquardt as MINPACK's ``lmder`` does it (Moré, 1978).

The step bound ``delta`` lives in variables scaled by ``diag`` (column norms of the
Jacobian, never decreasing, or ``1 / x_scale``); the LM parameter is found by the same
secular-equation iteration as MINPACK's ``lmpar``, here on the SVD of the factor.
"""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from .._misc import tree_where
from .batched_subproblem import trust_region_subproblem
from .strategy import AbstractStrategy, StepOutcome
from .trust_region import (
    FTOL,
    FTOL_AND_XTOL,
    GTOL,
    RUNNING,
    XTOL,
)


class _LMState(eqx.Module):
    delta: Float[Array, ""]
    par: Float[Array, ""]
    diag: Float[Array, " n"]
    first_iteration: Bool[Array, ""]


class _LMProposal(eqx.Module):
    x_new: Float[Array, " n"]
    p: Float[Array, " n"]
    p_norm: Float[Array, ""]  # the step's norm in the variables scaled by `diag`
    delta: Float[Array, ""]
    par: Float[Array, ""]


def _scaled_gradient_norm(linearization):
    """MINPACK's ``gnorm``: the largest cosine between ``f`` and a column of ``J``."""
    norms = linearization.column_norms
    f_norm = jnp.sqrt(2 * linearization.cost)
    denominator = jnp.where((norms > 0) & (f_norm > 0), norms * f_norm, 1.0)
    cosines = jnp.where(norms > 0, jnp.abs(linearization.grad) / denominator, 0.0)
    return jnp.where(f_norm > 0, jnp.max(cosines), 0.0)


class LevenbergMarquardt(AbstractStrategy):
    """MINPACK-style Levenberg–Marquardt (unbounded), SciPy's ``method="lm"``.

    `factor` is MINPACK's initial step bound relative to ``||diag * x0||`` (100, as
    SciPy uses); a smaller value (1–10) is more cautious on the first steps, which
    helps from far-off starting points.
    """

    factor: float = eqx.field(default=100.0, static=True)

    supports_bounds: ClassVar[bool] = False
    jacobian_after_last_step: ClassVar[bool] = False

    def init(self, x, linearization, problem):
        if problem.x_scale is None:
            norms = linearization.column_norms
            diag = jnp.where(norms == 0, 1.0, norms)
        else:
            diag = 1 / problem.x_scale
        delta = self.factor * jnp.linalg.norm(diag * x)
        delta = jnp.where(delta == 0, self.factor, delta)
        state = _LMState(delta, jnp.zeros((), x.dtype), diag, jnp.asarray(True))
        optimal = _scaled_gradient_norm(linearization) <= problem.gtol
        return state, jnp.where(optimal, GTOL, RUNNING)

    def optimality(self, x, linearization, problem):
        return jnp.max(jnp.abs(linearization.grad))

    def propose(self, x, linearization, state, problem):
        diag_inv = 1 / state.diag
        q, par = trust_region_subproblem(
            linearization.factor * diag_inv[None, :],
            diag_inv * linearization.grad,
            state.delta,
            state.par,
            problem.n_rows,
            rtol=0.1,
            gauss_newton_slack=1.1,
            to_boundary=False,
            last_evaluated=True,
        )
        p = diag_inv * q
        p_norm = jnp.linalg.norm(q)
        delta = jnp.where(state.first_iteration, jnp.minimum(state.delta, p_norm), state.delta)
        x_new = x + p
        return x_new, _LMProposal(x_new, p, p_norm, delta, par)

    def judge(self, x, linearization, state, proposal, trial, problem):
        eps = jnp.finfo(x.dtype).eps
        x_new, p, p_norm = proposal.x_new, proposal.p, proposal.p_norm
        delta, par = proposal.delta, proposal.par
        finite = trial.finite

        f_norm = jnp.sqrt(2 * linearization.cost)
        f_norm_new = jnp.where(finite, jnp.sqrt(2 * trial.cost), jnp.inf)
        actual = jnp.where(0.1 * f_norm_new < f_norm, 1 - (f_norm_new / f_norm) ** 2, -1.0)
        temp1 = jnp.linalg.norm(linearization.factor @ p) / f_norm
        temp2 = jnp.sqrt(par) * p_norm / f_norm
        predicted = temp1**2 + temp2**2 / 0.5
        directional = -(temp1**2 + temp2**2)
        ratio = jnp.where(predicted != 0, actual / jnp.where(predicted != 0, predicted, 1.0), 0.0)

        shrink_by = jnp.where(actual >= 0, 0.5, 0.5 * directional / (directional + 0.5 * actual))
        shrink_by = jnp.where((0.1 * f_norm_new >= f_norm) | (shrink_by < 0.1), 0.1, shrink_by)
        shrink = ratio <= 0.25
        grow = ~shrink & ((par == 0) | (ratio >= 0.75))
        delta = jnp.where(
            shrink,
            shrink_by * jnp.minimum(delta, p_norm / 0.1),
            jnp.where(grow, p_norm / 0.5, delta),
        )
        par = jnp.where(shrink, par / shrink_by, jnp.where(grow, 0.5 * par, par))

        accepted = ratio >= 1e-4
        x_out = jnp.where(accepted, x_new, x)
        lin_out = tree_where(accepted, trial, linearization)
        x_norm = jnp.linalg.norm(state.diag * x_out)
        ftol_ok = (
            (jnp.abs(actual) <= problem.ftol) & (predicted <= problem.ftol) & (0.5 * ratio <= 1)
        )
        xtol_ok = delta <= problem.xtol * x_norm
        # MINPACK's info 6 and 7 (tolerances too small to make progress) count as met.
        ftol_ok |= (jnp.abs(actual) <= eps) & (predicted <= eps) & (0.5 * ratio <= 1)
        xtol_ok |= delta <= eps * x_norm
        status = jnp.where(
            ftol_ok & xtol_ok,
            FTOL_AND_XTOL,
            jnp.where(ftol_ok, FTOL, jnp.where(xtol_ok, XTOL, RUNNING)),
        )
        gtol_met = accepted & (_scaled_gradient_norm(lin_out) <= jnp.maximum(problem.gtol, eps))
        status = jnp.where((status == RUNNING) & gtol_met, GTOL, status)
        diag = state.diag
        if problem.x_scale is None:
            diag = jnp.where(accepted, jnp.maximum(diag, lin_out.column_norms), diag)
        new_state = _LMState(delta, par, diag, state.first_iteration & ~accepted)
        return StepOutcome(x_out, lin_out, new_state, accepted, status)
