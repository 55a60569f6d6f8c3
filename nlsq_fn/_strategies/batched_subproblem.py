"""The trust-region subproblem of TRF and LM, one route for a single fit and another
across a `vmap`-ed batch of small ones.

One fit (and every member whose normal equations are not safe) takes SciPy's route: the
SVD of ``A`` (the scaled Jacobian's factor, with the rows ``diag(sqrt(d))`` of the bounded
problem appended) and `solve_subproblem`'s secular equation on it. Across a batch of
float64 fits with few parameters (`normal_equations.applies`), each member instead factors
``H + αI`` with ``H = AᵀA`` by Cholesky for every ``α`` the secular equation tries: the
same ``p(α) = -(H + αI)⁻¹g``, ``‖p‖`` and derivative as the SVD gives, in a few dozen
elementwise operations instead of Jacobi sweeps. The choice is a vmap rule
(`jax.custom_batching.custom_vmap`), so `solve` and `vmap(solve)` share the code.
"""

import functools

import jax
import jax.numpy as jnp

from .._evaluation.normal_equations import (
    applies,
    cholesky,
    scaled_cholesky,
    solve_upper,
    solve_upper_transposed,
)
from .small_linalg import singular_values_and_vt
from .trust_region import secular_newton, solve_subproblem


def _norm2(x):
    out = x[0] ** 2
    for entry in x[1:]:
        out = out + entry**2
    return out


def cholesky_subproblem(a, diag, g, radius, alpha, n_rows, options):
    """`solve_subproblem` for one member from Cholesky factors of ``AᵀA + diag(d) + αI``
    (entry by entry: under `vmap` every operation is elementwise over the batch), and
    whether it is safe: the normal equations well conditioned (`scaled_cholesky`), the
    problem of full rank as the SVD route would judge it, every factorization used
    positive definite and the result finite. Returns ``(p, alpha, safe)``."""
    rtol, slack, to_boundary, last_evaluated = options
    k, n = a.shape
    h = [
        [
            sum((a[r, i] * a[r, j] for r in range(1, k)), a[0, i] * a[0, j])
            + (diag[i] if i == j else 0.0)
            if j >= i
            else None
            for j in range(n)
        ]
        for i in range(n)
    ]
    u_scaled, scale, well_conditioned, condition2 = scaled_cholesky(h, n)
    # H = C H_s C with C = diag(scale): its Cholesky factor is u_s C.
    u = [[u_scaled[i][j] * scale[j] if j >= i else None for j in range(n)] for i in range(n)]
    # The SVD route takes the Gauss–Newton step only for full rank, `s_min > eps m s_max`:
    # with a margin of 100 for its rounding. cond(H) = (s_max / s_min)² is at most
    # cond(H_s) (max C / min C)².
    eps = jnp.finfo(a.dtype).eps
    spread = functools.reduce(jnp.maximum, scale) / functools.reduce(jnp.minimum, scale)
    rank_bound = (0.01 / (eps * jnp.maximum(n_rows, n))) ** 2
    full_rank = (n_rows >= n) & (condition2 * spread**2 <= rank_bound)
    safe = well_conditioned & full_rank
    g_list = [g[i] for i in range(n)]

    def solved(u):
        """``(H + αI)⁻¹ g`` from the factor `u` of ``H + αI``, its norm, ``φ(α)`` and
        ``φ'(α)``."""
        p = solve_upper(u, solve_upper_transposed(u, g_list, n), n)
        p_norm = jnp.sqrt(_norm2(p))
        safe_p_norm = jnp.where(p_norm > 0, p_norm, 1.0)
        # Σ (Vᵀg)² / (s² + α)³ = pᵀ (H + αI)⁻¹ p = ‖u⁻ᵀ p‖²
        phi_prime = -_norm2(solve_upper_transposed(u, p, n)) / safe_p_norm
        return p, p_norm, p_norm - radius, jnp.where(phi_prime == 0, -1.0, phi_prime)

    def shifted(alpha):
        shifted_h = [[h[i][j] + alpha if i == j else h[i][j] for j in range(n)] for i in range(n)]
        return cholesky(shifted_h, n)

    def phi_and_derivative(alpha):
        return solved(shifted(alpha)[0])[2:]

    p_solved, p_norm, phi0, phi0_prime = solved(u)
    p_gauss_newton = [-x for x in p_solved]
    take_gauss_newton = p_norm <= slack * radius
    alpha_upper = jnp.sqrt(_norm2(g_list)) / radius
    alpha_lower = -phi0 / phi0_prime
    alpha, evaluated = secular_newton(
        phi_and_derivative,
        radius,
        alpha,
        alpha_lower,
        alpha_upper,
        jnp.asarray(True),
        rtol,
        skip=take_gauss_newton | ~safe,
    )
    if last_evaluated:
        alpha = evaluated
    u_at_alpha, positive_at_alpha = shifted(alpha)
    p = jnp.stack(
        [-x for x in solve_upper(u_at_alpha, solve_upper_transposed(u_at_alpha, g_list, n), n)]
    )
    if to_boundary:
        p_norm = jnp.linalg.norm(p)
        p = p * jnp.where(p_norm > 0, radius / jnp.where(p_norm > 0, p_norm, 1.0), 1.0)
    p = jnp.where(take_gauss_newton, jnp.stack(p_gauss_newton), p)
    safe = safe & (take_gauss_newton | positive_at_alpha) & jnp.all(jnp.isfinite(p))
    return p, jnp.where(take_gauss_newton, 0.0, alpha), safe


def svd_subproblem(a, diag, g, radius, alpha, n_rows, options, bounded):
    """SciPy's route: the SVD of ``A`` (with the rows ``diag(sqrt(d))`` if `bounded`)."""
    rtol, slack, to_boundary, last_evaluated = options
    if bounded:
        a = jnp.concatenate([a, jnp.diag(jnp.sqrt(diag))])
    s, vt = singular_values_and_vt(a)
    return solve_subproblem(
        s,
        vt,
        vt @ g,
        radius,
        alpha,
        n_rows,
        rtol=rtol,
        gauss_newton_slack=slack,
        to_boundary=to_boundary,
        last_evaluated=last_evaluated,
    )


@functools.cache
def _routed(options, bounded):
    @jax.custom_batching.custom_vmap
    def subproblem(a, diag, g, radius, alpha, n_rows):
        return svd_subproblem(a, diag, g, radius, alpha, n_rows, options, bounded)

    @subproblem.def_vmap
    def batched(axis_size, in_batched, *arguments):
        arguments = tuple(
            argument if batched else jnp.broadcast_to(argument, (axis_size, *argument.shape))
            for argument, batched in zip(arguments, in_batched, strict=True)
        )
        svd = jax.vmap(lambda *one: svd_subproblem(*one, options, bounded))
        a = arguments[0]
        if not applies(a.dtype, a.shape[-1]):
            return svd(*arguments), (True, True)
        p, alpha, safe = jax.vmap(lambda *one: cholesky_subproblem(*one, options))(*arguments)
        # A member with NaN or inf gets NaN and sends no batch the long way.
        finite = jnp.ones(safe.shape, bool)
        for argument in arguments[:4]:
            finite &= jnp.all(jnp.isfinite(argument.reshape(axis_size, -1)), axis=1)
        p = jnp.where(finite[:, None], p, jnp.nan)
        alpha = jnp.where(finite, alpha, jnp.nan)
        keep = safe | ~finite

        def with_fallback():
            p_svd, alpha_svd = svd(*arguments)
            return jnp.where(keep[:, None], p, p_svd), jnp.where(keep, alpha, alpha_svd)

        # Only a batch with an unsafe member pays for the SVDs.
        return jax.lax.cond(jnp.all(keep), lambda: (p, alpha), with_fallback), (True, True)

    return subproblem


def trust_region_subproblem(
    a,
    g,
    radius,
    alpha,
    n_rows,
    *,
    diag=None,
    rtol,
    gauss_newton_slack,
    to_boundary,
    last_evaluated=False,
):
    """``(p, alpha)``: `solve_subproblem`'s step minimising ``‖A p‖² / 2 + pᵀdiag(d)p / 2
    + gᵀp`` within `radius` (the diagonal term `diag` only for a bounded problem), from
    the SVD of ``A`` for one fit, from Cholesky factors across a batch where safe."""
    options = (rtol, gauss_newton_slack, to_boundary, last_evaluated)
    bounded = diag is not None
    if diag is None:
        diag = jnp.zeros_like(g)
    return _routed(options, bounded)(a, diag, g, radius, alpha, jnp.asarray(n_rows))
