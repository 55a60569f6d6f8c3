"""Dogbox with LSMR: SciPy's ``dogbox`` with ``tr_solver="lsmr"``.

The Gauss–Newton step of the free variables is LSMR's solution with the Jacobian as an
operator (its columns scaled by `x_scale`, the held variables' columns left out), then
the dogleg walk of `Dogbox` in the rectangular trust region; the quadratic model along
the way uses the operator too. Matrix-free with JAX's derivatives, as `TRFLSMR`.
"""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp

from .._evaluation.operator_linearize import jacobian_operator
from .dogbox import Dogbox, free_variables
from .lsmr_trf import ScaledJacobian, lsmr_solve


class DogboxLSMR(Dogbox):
    """Dogleg in rectangular trust regions with LSMR's Gauss–Newton step (SciPy's
    ``dogbox`` with ``tr_solver="lsmr"``): matrix-free, for many parameters.

    `atol`, `btol`, `conlim`, `maxiter`, `damp`: SciPy's `tr_options` for ``lsmr``
    (``min(atol, btol)`` is Lineax's one relative tolerance, as in `TRFLSMR`).
    """

    atol: float = eqx.field(default=1e-6, static=True)
    btol: float = eqx.field(default=1e-6, static=True)
    conlim: float = eqx.field(default=1e8, static=True)
    maxiter: int | None = eqx.field(default=None, static=True)
    damp: float = eqx.field(default=0.0, static=True)

    matrix_free: ClassVar[bool] = True

    def propose(self, x, linearization, state, problem):
        free = free_variables(x, linearization.grad, problem)
        g = jnp.where(free, linearization.grad, 0.0)
        operator = jacobian_operator(problem.residual, x, linearization)
        jac = ScaledJacobian(operator, jnp.ones_like(x))
        d = jnp.where(free, 1 / state.scale_inv, 0.0)  # free columns, in x_scale units
        diag = None if self.damp == 0 else jnp.full_like(x, self.damp)
        n = x.size
        newton = -d * lsmr_solve(self, ScaledJacobian(operator, d), linearization.f, diag, n)
        return self.dogleg_proposal(x, newton, g, jac, free, state, problem)
