"""Parameter covariance from the Jacobian at the solution, as SciPy's ``curve_fit``."""

import jax.numpy as jnp
from jaxtyping import Array, Float, Int


def _kept_singular_values(jac, n_points):
    """Singular values and right vectors of `jac`, and which of them SciPy keeps: those
    above ``eps * max(m, n) * s_max``, with ``m`` the number of counted points (so
    padding rows, which are zero, change nothing)."""
    m, n = jac.shape
    _, s, vt = jnp.linalg.svd(jac, full_matrices=False)
    rows = m if n_points is None else n_points
    threshold = jnp.finfo(jac.dtype).eps * jnp.maximum(rows, n) * s[0]
    return s, vt, s > threshold


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
    cannot be estimated (``m <= n`` without `absolute_sigma`, or non-finite values).
    """
    n = jac.shape[1]
    s, vt, kept = _kept_singular_values(jac, n_points)
    inv_s2 = jnp.where(kept, 1 / jnp.where(kept, s, 1.0) ** 2, 0.0)
    pcov = (vt.T * inv_s2) @ vt
    dof = n_points - n
    if not absolute_sigma:
        pcov = pcov * jnp.where(dof > 0, 2 * cost / jnp.where(dof > 0, dof, 1), jnp.inf)
    return jnp.where(jnp.all(jnp.isfinite(pcov)), pcov, jnp.inf)


def jacobian_rank(jac: Float[Array, "m n"], n_points) -> Int[Array, ""]:
    """The numerical rank `covariance_from_jacobian` uses (below ``n``: the covariance
    is a pseudo-inverse and some parameter combinations are not determined)."""
    _, _, kept = _kept_singular_values(jac, n_points)
    return jnp.sum(kept)
