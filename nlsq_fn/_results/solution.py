"""The outcome of a fit, with SciPy's ``OptimizeResult`` fields and more."""

import equinox as eqx
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PyTree

from .._strategies.trust_region import STATUS_MESSAGES


class Solution(eqx.Module):
    """What `solve` returns. Batched fits (under `jax.vmap`) give one of these with a
    leading batch axis on every field.

    - `x`: fitted parameters, with the same pytree structure as `p0`.
    - `cost`: ``0.5 * sum(rho(f**2))`` at the solution (SciPy's `cost`).
    - `fun`: weighted residuals ``(model - y) / sigma`` (zero where masked), flattened.
    - `jac`: Jacobian of the residuals, scaled for the robust loss as SciPy returns it;
      None when the fit ran in chunks (`Solver(chunk_size=...)`, or the default
      ``"auto"`` on large data), which never forms it (`curve_fit`, `CurveFit` and
      `least_squares` then evaluate it once at the solution, as SciPy returns it).
    - `grad`: gradient of the cost. `optimality`: SciPy's first-order optimality (the
      gradient's inf-norm, scaled by the Coleman–Li vector for TRF).
    - `active_mask`: -1 / 1 for parameters at their lower / upper bound, 0 otherwise.
    - `nfev`, `njev`, `nit`: evaluations of the residuals and the Jacobian, iterations.
    - `status`: SciPy's codes (-1 bad input, 0 budget exhausted, 1 `gtol`, 2 `ftol`,
      3 `xtol`, 4 `ftol` and `xtol`); `success` is ``status > 0``; `message` reads it.
    - `initial_cost`: the cost at `p0`.
    - `factor`: a square ``r`` with ``rᵀr = JᵀJ`` for that loss-scaled Jacobian at the
      solution (its R factor with ``factorization="qr"`` or in one shot; the root of
      ``JᵀJ`` when chunked with ``"normal"`` or ``"auto"``), so covariances need no
      ``m x n`` array; None after a matrix-free fit (`TRFLSMR`, `DogboxLSMR`), whose
      `jac` is None too with JAX's derivatives (see `selected_variances`).
    """

    x: PyTree[Float[Array, "..."]]
    cost: Float[Array, ""]
    fun: Float[Array, " m"]
    jac: Float[Array, "m n"] | None
    grad: Float[Array, " n"]
    optimality: Float[Array, ""]
    active_mask: Int[Array, " n"]
    nfev: Int[Array, ""]
    njev: Int[Array, ""]
    nit: Int[Array, ""]
    status: Int[Array, ""]
    success: Bool[Array, ""]
    initial_cost: Float[Array, ""]
    factor: Float[Array, "n n"] | None

    @property
    def message(self) -> str | list[str]:
        """The termination reason in words (a list of them for a batch)."""
        status = np.asarray(self.status)
        if status.ndim == 0:
            return STATUS_MESSAGES[int(status)]
        return [STATUS_MESSAGES[int(s)] for s in status.ravel()]


def finished(x, final, fun, jac, optimality, active_mask, counts, initial_cost) -> Solution:
    """The `Solution` at the end of a fit: `final` is the summary at `x` (its `cost`,
    `grad` and `factor`), `counts` has `nfev`, `njev`, `nit` and `status`."""
    return Solution(
        x=x,
        cost=final.cost,
        fun=fun,
        jac=jac,
        grad=final.grad,
        optimality=optimality,
        active_mask=active_mask,
        nfev=counts.nfev,
        njev=counts.njev,
        nit=counts.nit,
        status=counts.status,
        success=counts.status > 0,
        initial_cost=initial_cost,
        factor=final.factor,
    )
