"""Trust Region Reflective with LSMR: SciPy's ``trf`` with ``tr_solver="lsmr"``.

For many parameters. The trust-region subproblem is never solved exactly (no ``n × n``
factor, no SVD): LSMR (Lineax's) solves the regularised Gauss–Newton system
``[J_h; D] p ≈ [f; 0]`` with the Jacobian as an operator, and the step is the exact
trust-region solution in the two-dimensional subspace spanned by that direction and the
scaled gradient; with bounds, the reflective / scaled-gradient choice of `select_step`
follows, as in SciPy. The subspace is computed once per new point and kept while steps
are rejected (SciPy's inner loop), so the sequence of steps is SciPy's.
"""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Bool, Float

from .._evaluation.operator_linearize import jacobian_operator
from .strategy import AbstractStrategy, StepOutcome
from .trf import judge_trf_step, trf_optimality, trf_scaling, trf_start, trf_step
from .trust_region import (
    GTOL,
    RUNNING,
    minimize_quadratic_1d,
    quadratic_along,
)

LSMR_OPTIONS = ("atol", "btol", "conlim", "maxiter", "damp", "regularize", "show")


class ScaledJacobian(eqx.Module):
    """``J diag(d)`` for the quadratic-model helpers (which only need ``@ v``)."""

    operator: lx.AbstractLinearOperator
    d: Float[Array, " n"]

    def __matmul__(self, v):
        return self.operator.mv(self.d * v)


def solve_trust_region_2d(b, g, radius, n_angles: int = 64, newton_steps: int = 8):
    """Minimiser of ``0.5 pᵀ B p + gᵀp`` over ``||p|| <= radius`` in two dimensions.

    The Newton step if ``B`` is positive definite and the step is inside; otherwise the
    minimum lies on the circle, found (as SciPy's quartic would) from the best of
    `n_angles` angles refined by safeguarded Newton steps on the angle: no polynomial
    roots, so it compiles for any device."""
    chol = jnp.linalg.cholesky(b)
    usable = jnp.all(jnp.isfinite(chol))
    safe = jnp.where(usable, chol, jnp.eye(2, dtype=b.dtype))
    p_newton = -jax.scipy.linalg.cho_solve((safe, True), g)
    newton = usable & (jnp.dot(p_newton, p_newton) <= radius**2)

    def value(phi):
        p = radius * jnp.stack([jnp.cos(phi), jnp.sin(phi)])
        return 0.5 * p @ b @ p + g @ p

    angles = jnp.linspace(0.0, 2 * jnp.pi, n_angles, endpoint=False, dtype=b.dtype)
    values = jax.vmap(value)(angles)
    phi = angles[jnp.argmin(values)]

    def refine(_, phi):
        p = radius * jnp.stack([jnp.cos(phi), jnp.sin(phi)])
        dp = radius * jnp.stack([-jnp.sin(phi), jnp.cos(phi)])
        slope = dp @ (b @ p + g)
        curvature = -p @ (b @ p + g) + dp @ b @ dp
        step = jnp.where(curvature > 0, slope / jnp.where(curvature > 0, curvature, 1), 0)
        step = jnp.clip(step, -0.5, 0.5)
        better = value(phi - step) <= value(phi)
        return jnp.where(better, phi - step, phi)

    phi = jax.lax.fori_loop(0, newton_steps, refine, phi)
    p_circle = radius * jnp.stack([jnp.cos(phi), jnp.sin(phi)])
    return jnp.where(newton, p_newton, p_circle)


def lsmr_solve(options, jac_h, f, diag, n):
    """LSMR's solution of ``[J_h; diag] p ≈ [f; 0]`` (`diag` None: ``J_h p ≈ f``), with
    `options`' ``atol``, ``btol``, ``maxiter`` and ``conlim`` (SciPy's meanings)."""
    if diag is None:
        product, rhs = (lambda p: jac_h @ p), f
    else:

        def product(p):
            return jnp.concatenate([jac_h @ p, diag * p])

        rhs = jnp.concatenate([f, jnp.zeros((n,), f.dtype)])
    operator = lx.FunctionLinearOperator(product, jax.ShapeDtypeStruct((n,), f.dtype))
    solver = lx.LSMR(
        rtol=min(options.atol, options.btol),
        atol=0.0,
        max_steps=n if options.maxiter is None else options.maxiter,
        conlim=options.conlim,
    )
    return lx.linear_solve(operator, rhs, solver, throw=False).value


class _LSMRState(eqx.Module):
    radius: Float[Array, ""]
    scale_inv: Float[Array, " n"]
    basis: Float[Array, "n 2"]  # the subspace (orthonormal columns) at the current point
    b_s: Float[Array, "2 2"]  # the model's Hessian in it
    g_s: Float[Array, " 2"]  # the scaled gradient in it
    fresh: Bool[Array, ""]  # a new point: the subspace must be computed


class _LSMRProposal(eqx.Module):
    x_new: Float[Array, " n"]
    step: Float[Array, " n"]
    step_h: Float[Array, " n"]
    predicted: Float[Array, ""]
    basis: Float[Array, "n 2"]
    b_s: Float[Array, "2 2"]
    g_s: Float[Array, " 2"]


class TRFLSMR(AbstractStrategy):
    """Trust Region Reflective with the subproblem solved by LSMR (SciPy's ``trf`` with
    ``tr_solver="lsmr"``): matrix-free, for many parameters.

    **Arguments** (SciPy's `tr_options`):

    - `regularize`: add SciPy's Tikhonov term (from the scaled-gradient step's model
      value) to the LSMR system; True by default.
    - `atol`, `btol`, `conlim`, `maxiter`: LSMR's stopping criteria. Lineax's LSMR has
      one relative tolerance for SciPy's two: ``min(atol, btol)`` (the same test when
      they are equal, as by default); `maxiter` None is ``n``, as SciPy's.
    - `damp`: LSMR's damping, added to the regularisation.

    With JAX's derivatives the Jacobian is never formed (products are JVPs / VJPs);
    ``x_scale="jac"`` then is refused (it needs the column norms). The solution's `jac`
    and `factor` are None.
    """

    regularize: bool = eqx.field(default=True, static=True)
    atol: float = eqx.field(default=1e-6, static=True)
    btol: float = eqx.field(default=1e-6, static=True)
    conlim: float = eqx.field(default=1e8, static=True)
    maxiter: int | None = eqx.field(default=None, static=True)
    damp: float = eqx.field(default=0.0, static=True)

    supports_bounds: ClassVar[bool] = True
    jacobian_after_last_step: ClassVar[bool] = True
    matrix_free: ClassVar[bool] = True

    def init(self, x, linearization, problem):
        radius, scale_inv = trf_start(x, linearization, problem)
        n = x.size
        state = _LSMRState(
            radius,
            scale_inv,
            jnp.zeros((n, 2), x.dtype),
            jnp.zeros((2, 2), x.dtype),
            jnp.zeros((2,), x.dtype),
            jnp.asarray(True),
        )
        optimal = self.optimality(x, linearization, problem) < problem.gtol
        return state, jnp.where(optimal, GTOL, RUNNING)

    def optimality(self, x, linearization, problem):
        return trf_optimality(x, linearization, problem)

    def _lsmr(self, jac_h, f, diag, n):
        return lsmr_solve(self, jac_h, f, diag, n)

    def _subspace(self, jac_h, lin, g_h, diag_h, radius):
        """SciPy's 2-D subspace: the scaled gradient and the (regularised) LSMR
        Gauss–Newton direction, orthonormalised; the model's Hessian and gradient in it."""
        n = g_h.size
        if self.regularize:
            a, b, _ = quadratic_along(jac_h, g_h, -g_h, diag_h, jnp.zeros_like(g_h))
            g_h_norm = jnp.linalg.norm(g_h)
            to_tr = radius / jnp.where(g_h_norm > 0, g_h_norm, 1.0)
            _, ag_value = minimize_quadratic_1d(a, b, jnp.zeros_like(to_tr), to_tr)
            reg_term = -ag_value / radius**2
        else:
            reg_term = 0.0
        diag = jnp.sqrt(jnp.maximum(diag_h + reg_term + self.damp**2, 0.0))
        gn_h = self._lsmr(jac_h, lin.f, diag, n)
        if n == 1:
            basis = jnp.array([[1.0, 0.0]], g_h.dtype)
        else:
            basis, _ = jnp.linalg.qr(jnp.stack([g_h, gn_h], axis=1))
        js = jnp.stack([jac_h @ basis[:, 0], jac_h @ basis[:, 1]], axis=1)
        b_s = js.T @ js + (basis.T * diag_h) @ basis
        return basis, b_s, basis.T @ g_h

    def propose(self, x, linearization, state, problem):
        g = linearization.grad
        d, diag_h, theta = trf_scaling(x, g, state.scale_inv, problem)
        g_h = d * g
        operator = jacobian_operator(problem.residual, x, linearization)
        jac_h = ScaledJacobian(operator, d)

        basis, b_s, g_s = jax.lax.cond(
            state.fresh,
            lambda: self._subspace(jac_h, linearization, g_h, diag_h, state.radius),
            lambda: (state.basis, state.b_s, state.g_s),
        )
        p_h = basis @ solve_trust_region_2d(b_s, g_s, state.radius)
        x_new, step, step_h, predicted = trf_step(
            x, jac_h, diag_h, g_h, p_h, d, state.radius, theta, problem
        )
        return x_new, _LSMRProposal(x_new, step, step_h, predicted, basis, b_s, g_s)

    def judge(self, x, linearization, state, proposal, trial, problem):
        judged = judge_trf_step(self, x, linearization, state, proposal, trial, problem)
        new_state = _LSMRState(
            judged.radius,
            judged.scale_inv,
            proposal.basis,
            proposal.b_s,
            proposal.g_s,
            judged.accepted,
        )
        return StepOutcome(
            judged.x, judged.linearization, new_state, judged.accepted, judged.status
        )


def lsmr_options(tr_options: dict | None) -> dict:
    """SciPy's `tr_options` for ``lsmr``, checked; an unknown option is a TypeError (SciPy
    passes them on to ``lsmr``, which raises one)."""
    options = dict(tr_options or {})
    unknown = sorted(set(options) - set(LSMR_OPTIONS))
    if unknown:
        raise TypeError(f"lsmr() got an unexpected keyword argument {unknown[0]!r}")
    if options.pop("show", False):
        raise ValueError("`tr_options={'show': True}` (LSMR's printout) is not supported.")
    for name in ("atol", "btol"):
        if name in options and options[name] is None:
            options[name] = 1e-6  # SciPy's lsmr: None means the default
    return options


def lsmr_strategy(tr_options: dict | None) -> TRFLSMR:
    """`TRFLSMR` from SciPy's `tr_options`."""
    return TRFLSMR(**lsmr_options(tr_options))
