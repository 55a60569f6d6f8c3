"""Selected variances for many parameters, without the ``n × n`` covariance.

The covariance of a least-squares fit is ``s² (JᵀJ)⁻¹``; its ``i``-th diagonal entry is
``s² zᵢ`` where ``JᵀJ z = eᵢ``. With the Jacobian applied as JVPs / VJPs (as in the
matrix-free fit) each wanted variance is one conjugate-gradient solve of that system:
memory ``O(m + n)`` per solve instead of ``8 n²`` bytes for the whole matrix (80 GB at
``n = 10⁵``). `covariance_memory` says what the dense ``pcov`` would take.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jaxtyping import Array, ArrayLike, Float


def covariance_memory(n: int, dtype=np.float64) -> int:
    """Bytes of a dense ``n × n`` covariance (the SVD that makes it needs about three
    times as much)."""
    return int(n) ** 2 * np.dtype(dtype).itemsize


def selected_variances(
    fun: Callable[..., Float[Array, " m"]],
    x: ArrayLike,
    indices: Sequence[int] | ArrayLike,
    *,
    args: tuple = (),
    absolute_sigma: bool = False,
    rtol: float = 1e-10,
    max_steps: int | None = None,
) -> Float[Array, " k"]:
    """Variances of the parameters `indices` at the solution `x` of the problem
    ``min 0.5 * ||fun(x, *args)||²`` (`fun` written with `jax.numpy`, returning weighted
    residuals), each from one conjugate-gradient solve of ``JᵀJ z = eᵢ`` with the
    Jacobian as JVPs / VJPs: ``pcov[i, i]`` without forming ``J`` or ``pcov``.

    As `curve_fit`'s ``pcov`` diagonal: scaled by the residual variance
    ``||f||² / (m - n)`` unless `absolute_sigma` (then the residuals' weights are taken
    as exact). A parameter the data do not determine (``JᵀJ`` singular along it) gets
    a very large or non-finite value, with CG's result not converged: check the fit's
    conditioning before trusting one. `rtol` and `max_steps` (default ``10 n``) are
    CG's.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.result_type(float))
    indices = jnp.atleast_1d(jnp.asarray(indices, dtype=jnp.int32))
    f, jvp = jax.linearize(lambda p: jnp.ravel(fun(p, *args)), x)
    vjp = jax.linear_transpose(jvp, x)

    def normal(v):
        return vjp(jvp(v))[0]

    operator = lx.FunctionLinearOperator(
        normal, jax.ShapeDtypeStruct(x.shape, x.dtype), lx.positive_semidefinite_tag
    )
    # (Lineax's CG scales its test elementwise: with atol 0 the zeros of eᵢ give 0 / 0
    # and stop it after one step. eᵢ has norm 1, so atol = rtol is the relative test.)
    solver = lx.CG(rtol=rtol, atol=rtol, max_steps=max_steps)

    def variance(i):
        unit = jnp.zeros_like(x).at[i].set(1.0)
        z = lx.linear_solve(operator, unit, solver, throw=False).value
        return z[i]

    unscaled = jax.vmap(variance)(indices)
    if absolute_sigma:
        return unscaled
    m, n = f.size, x.size
    dof = m - n
    if dof <= 0:
        return jnp.full(unscaled.shape, jnp.inf, unscaled.dtype)
    return unscaled * jnp.sum(f**2) / dof
