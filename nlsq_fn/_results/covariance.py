"""Parameter covariance from the Jacobian at the solution, as SciPy's ``curve_fit``."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int


class CovarianceParts(eqx.Module):
    """What the covariance is made of, from one SVD of the Jacobian."""

    unscaled: Float[Array, "n n"]  # pinv(JᵀJ): the covariance with absolute sigma
    residual_variance: Float[Array, ""]  # 2 cost / (m - n), inf without dof
    rank: Int[Array, ""]
    singular_values: Float[Array, " n"]
    # Parameters that move along a direction the data do not determine (a null
    # direction of J): their variances and covariances are infinite.
    undetermined: Bool[Array, " n"]

    def covariance(self, absolute_sigma: bool) -> Float[Array, "n n"]:
        return scaled_covariance(self, absolute_sigma)


def scaled_covariance(parts: CovarianceParts, absolute_sigma: bool) -> Float[Array, "n n"]:
    """`parts`' covariance. With NumPy parts (after a compiled fit) computed with NumPy:
    no eager `jnp` calls, each of which would compile a program. (A function, for the
    front ends on the host: Equinox binds a module's method by building a module, 30 µs,
    a tenth of a settled refit.)"""
    xp = np if isinstance(parts.unscaled, np.ndarray) else jnp
    pcov = parts.unscaled if absolute_sigma else parts.unscaled * parts.residual_variance
    pcov = xp.where(xp.all(xp.isfinite(pcov)), pcov, xp.inf)
    infinite = parts.undetermined[:, None] | parts.undetermined[None, :]
    return xp.where(infinite, xp.inf, pcov)


def covariance_parts(jac: Float[Array, "m n"], cost: Float[Array, ""], n_points):
    """SciPy's recipe: singular values below ``eps * max(m, n) * s_max`` are dropped
    (``m`` the number of counted points, so zero padding rows change nothing), with
    ``eps`` of the Jacobian's type. Parameters the data do not determine get infinite
    (co)variances, as in SciPy's default (``method='lm'``, whose covariance is infinite
    when ``J`` is rank-deficient); the others keep the pseudo-inverse's values.

    The SVD is that of ``J`` with its columns scaled to unit norm (`singular_values` are
    its): the same covariance when ``J`` has full rank, and a rank decision that does not
    depend on the parameters' units. In float32 it must not: NIST's Misra1a has columns
    1e6 apart, and the unscaled test dropped a parameter the data determine well."""
    m, n = jac.shape
    norms = jnp.sqrt(jnp.sum(jac**2, axis=0))
    unit = jnp.where(norms > 0, 1 / jnp.where(norms > 0, norms, 1.0), 1.0)
    _, s, vt = jnp.linalg.svd(jac * unit, full_matrices=False)
    rows = m if n_points is None else n_points
    kept = s > jnp.finfo(jac.dtype).eps * jnp.maximum(rows, n) * s[0]
    inv_s2 = jnp.where(kept, 1 / jnp.where(kept, s, 1.0) ** 2, 0.0)
    dof = rows - n
    residual_variance = jnp.where(dof > 0, 2 * cost / jnp.where(dof > 0, dof, 1), jnp.inf)
    # A parameter's share of the null space: its squared norm in the dropped directions,
    # plus, when m < n, in the n - m directions the thin SVD never computed (1 minus the
    # squared norm of its column of vt, which is rounding when m >= n). Summing the
    # dropped rows themselves keeps a determined parameter's share at 0 (or eps², the
    # rounding of a null vector) rather than the eps of ``1 - Σ`` in the working type.
    null_share = jnp.sum(jnp.where(kept[:, None], 0.0, vt) ** 2, axis=0)
    if m < n:
        null_share = null_share + 1.0 - jnp.sum(vt**2, axis=0)
    # sqrt(eps) of the Jacobian's type (1.5e-8 in float64, 3.5e-4 in float32): far above
    # the rounding of either sum (n eps), far below the share of any real null direction.
    undetermined = null_share > jnp.sqrt(jnp.finfo(jac.dtype).eps)
    unscaled = unit[:, None] * ((vt.T * inv_s2) @ vt) * unit[None, :]
    return CovarianceParts(unscaled, residual_variance, jnp.sum(kept), s, undetermined)


def covariance_from_jacobian(
    jac: Float[Array, "m n"],
    cost: Float[Array, ""],
    n_points,
    absolute_sigma: bool,
) -> Float[Array, "n n"]:
    """``pinv(JᵀJ)`` (singular values below ``eps * max(m, n) * s_max`` dropped),
    scaled by the reduced chi-square ``2 * cost / (m - n)`` unless `absolute_sigma`.

    `jac` is the robust-loss-scaled Jacobian and ``cost = 0.5 * sum(rho(f**2))``, so
    with a robust loss this is SciPy's estimate too (SciPy uses ``res.jac`` and
    ``res.cost`` of `least_squares`). Returns ``inf`` everywhere when the covariance
    cannot be estimated (``m <= n`` without `absolute_sigma`, or non-finite values), and
    ``inf`` in the rows and columns of parameters the data do not determine.
    """
    return covariance_parts(jac, cost, n_points).covariance(absolute_sigma)
