"""Parameter covariance from the Jacobian at the solution, as SciPy's ``curve_fit``."""

import jax.numpy as jnp
from jaxtyping import Array, Float


def covariance_from_jacobian(
    jac: Float[Array, "m n"],
    cost: Float[Array, ""],
    n_points,
    absolute_sigma: bool,
) -> Float[Array, "n n"]:
    """``pinv(JᵀJ)`` (singular values below ``eps * max(m, n) * s_max`` dropped),
    scaled by the reduced chi-square ``2 * cost / (m - n)`` unless `absolute_sigma`.

    `jac` is the robust-loss-scaled Jacobian, so with a robust loss this is SciPy's
    estimate too. Returns ``inf`` everywhere when the covariance cannot be estimated
    (``m <= n`` without `absolute_sigma`, or non-finite values).
    """
    m, n = jac.shape
    _, s, vt = jnp.linalg.svd(jac, full_matrices=False)
    threshold = jnp.finfo(jac.dtype).eps * max(m, n) * s[0]
    kept = s > threshold
    inv_s2 = jnp.where(kept, 1 / jnp.where(kept, s, 1.0) ** 2, 0.0)
    pcov = (vt.T * inv_s2) @ vt
    dof = n_points - n
    if not absolute_sigma:
        pcov = pcov * jnp.where(dof > 0, 2 * cost / jnp.where(dof > 0, dof, 1), jnp.inf)
    return jnp.where(jnp.all(jnp.isfinite(pcov)), pcov, jnp.inf)
