"""Box-bound geometry for the trust-region reflective strategy.

Coleman–Li scaling, distances to the bounds along a direction, and moving points
strictly inside the box; the same rules as `scipy.optimize._lsq.common`.
"""

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int


def in_bounds(x: Float[Array, " n"], lower, upper) -> Bool[Array, ""]:
    return jnp.all((x >= lower) & (x <= upper))


def coleman_li_scaling(
    x: Float[Array, " n"], grad: Float[Array, " n"], lower, upper
) -> tuple[Float[Array, " n"], Float[Array, " n"]]:
    """The Coleman–Li vector ``v`` and its derivative ``dv`` (entries -1, 0, 1).

    ``v_i`` is the distance to the bound the negative gradient points at, or 1 when
    that bound is infinite; minimising with ``diag(v)`` as metric turns the first-order
    condition of the bounded problem into a smooth system.
    """
    towards_upper = (grad < 0) & jnp.isfinite(upper)
    towards_lower = (grad > 0) & jnp.isfinite(lower)
    v = jnp.where(towards_upper, upper - x, 1.0)
    v = jnp.where(towards_lower, x - lower, v)
    dv = jnp.where(towards_upper, -1.0, 0.0)
    dv = jnp.where(towards_lower, 1.0, dv)
    return v.astype(x.dtype), dv.astype(x.dtype)


def step_size_to_bound(
    x: Float[Array, " n"], direction: Float[Array, " n"], lower, upper
) -> tuple[Float[Array, ""], Float[Array, " n"]]:
    """Largest ``t`` with ``x + t * direction`` inside the box, and which bounds it hits.

    The second output is ``sign(direction_i)`` for the coordinates that reach a bound
    at ``t`` and 0 elsewhere.
    """
    moving = direction != 0
    safe = jnp.where(moving, direction, 1.0)
    steps = jnp.maximum((lower - x) / safe, (upper - x) / safe)
    steps = jnp.where(moving, steps, jnp.inf)
    min_step = jnp.min(steps)
    hits = jnp.where(steps == min_step, jnp.sign(direction), 0.0)
    return min_step, hits


def intersect_trust_region(
    x: Float[Array, " n"], s: Float[Array, " n"], radius: Float[Array, ""]
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Both roots ``t1 <= t2`` of ``||x + t * s|| = radius``, for ``x`` inside the ball."""
    a = jnp.dot(s, s)
    b = jnp.dot(x, s)
    c = jnp.dot(x, x) - radius**2
    d = jnp.sqrt(jnp.maximum(b * b - a * c, 0.0))
    # Written so that neither root suffers cancellation.
    q = -(b + jnp.where(b >= 0, d, -d))
    safe_q = jnp.where(q == 0, 1.0, q)
    t1 = q / jnp.where(a == 0, 1.0, a)
    t2 = c / safe_q
    return jnp.minimum(t1, t2), jnp.maximum(t1, t2)


def find_active_constraints(
    x: Float[Array, " n"], lower, upper, rtol: float = 1e-10
) -> Int[Array, " n"]:
    """-1 where ``x`` is at its lower bound, 1 at its upper bound, 0 elsewhere.

    "At" means within ``rtol * max(1, |bound|)``; with ``rtol = 0`` only exact contact
    counts.
    """
    if rtol == 0:
        active = jnp.where(x <= lower, -1, 0)
        return jnp.where(x >= upper, 1, active)
    lower_dist = x - lower
    upper_dist = upper - x
    lower_threshold = rtol * jnp.maximum(1, jnp.abs(lower))
    upper_threshold = rtol * jnp.maximum(1, jnp.abs(upper))
    lower_active = jnp.isfinite(lower) & (lower_dist <= jnp.minimum(upper_dist, lower_threshold))
    upper_active = jnp.isfinite(upper) & (upper_dist <= jnp.minimum(lower_dist, upper_threshold))
    active = jnp.where(lower_active, -1, 0)
    return jnp.where(upper_active, 1, active)


def make_strictly_feasible(
    x: Float[Array, " n"], lower, upper, rstep: float = 1e-10
) -> Float[Array, " n"]:
    """Move ``x`` off any bound it touches, into the interior of the box.

    With ``rstep = 0`` the point moves to the next representable number inside.
    """
    active = find_active_constraints(x, lower, upper, rstep)
    if rstep == 0:
        at_lower = jnp.nextafter(lower, upper)
        at_upper = jnp.nextafter(upper, lower)
    else:
        at_lower = lower + rstep * jnp.maximum(1, jnp.abs(lower))
        at_upper = upper - rstep * jnp.maximum(1, jnp.abs(upper))
    x_new = jnp.where(active == -1, at_lower, x)
    x_new = jnp.where(active == 1, at_upper, x_new)
    tight = (x_new < lower) | (x_new > upper)
    return jnp.where(tight, 0.5 * (lower + upper), x_new).astype(x.dtype)
