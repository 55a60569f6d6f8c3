"""Finite-difference Jacobians, as SciPy's ``approx_derivative`` computes them.

Only on request (``jac="2-point" | "3-point" | "cs"``): JAX's exact Jacobian is the
default. They are here for models whose derivatives JAX cannot take (NumPy models run on
the host, see `nlsq_fn._problem.host_model`) and to reproduce SciPy's results exactly. The
steps follow SciPy: relative to ``max(1, |x|)`` by default (``sqrt(eps)`` for 2-point
and complex step, ``eps^(1/3)`` for 3-point), ``diff_step * |x|`` when given, turned
around or made one-sided so that no evaluation leaves the bounds, and divided by the
step actually taken (``(x + h) - x``, exactly representable).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PyTree

FINITE_DIFFERENCE_METHODS = ("2-point", "3-point", "cs")


def _relative_step(method: str, x_dtype, f_dtype) -> float:
    eps = jnp.finfo(x_dtype).eps
    if jnp.issubdtype(f_dtype, jnp.inexact):
        eps = max(eps, jnp.finfo(f_dtype).eps)  # the coarser of the two types
    return float(eps ** (1 / 3) if method == "3-point" else eps**0.5)


def absolute_step(
    x: Float[Array, " n"], f_dtype, method: str, diff_step: Float[Array, " n"] | None
) -> Float[Array, " n"]:
    """SciPy's ``_compute_absolute_step``: the signed step of each variable."""
    sign = jnp.where(x >= 0, 1.0, -1.0).astype(x.dtype)
    default = _relative_step(method, x.dtype, f_dtype) * sign * jnp.maximum(1.0, jnp.abs(x))
    if diff_step is None:
        return default.astype(x.dtype)
    step = (diff_step * sign * jnp.abs(x)).astype(x.dtype)
    # A zero step (x = 0, or a step too small to change x) falls back to the default.
    return jnp.where((x + step) - x == 0, default, step).astype(x.dtype)


def adjust_to_bounds(
    x, step, method: str, lower, upper
) -> tuple[Float[Array, " n"], Bool[Array, " n"]]:
    """SciPy's ``_adjust_scheme_to_bounds``: steps (and which 3-point differences are
    one-sided) that keep every evaluation inside ``[lower, upper]``."""
    lower_dist = x - lower
    upper_dist = upper - x
    if method == "2-point":
        violated = (x + step < lower) | (x + step > upper)
        fitting = jnp.abs(step) <= jnp.maximum(lower_dist, upper_dist)
        step = jnp.where(violated & fitting, -step, step)
        forward = (upper_dist >= lower_dist) & ~fitting
        backward = (upper_dist < lower_dist) & ~fitting
        step = jnp.where(forward, upper_dist, jnp.where(backward, -lower_dist, step))
        return step, jnp.ones(x.shape, bool)
    step = jnp.abs(step)
    central = (lower_dist >= step) & (upper_dist >= step)
    forward = (upper_dist >= lower_dist) & ~central
    backward = (upper_dist < lower_dist) & ~central
    adjusted = jnp.where(forward, jnp.minimum(step, 0.5 * upper_dist), step)
    adjusted = jnp.where(backward, -jnp.minimum(step, 0.5 * lower_dist), adjusted)
    one_sided = forward | backward
    min_dist = jnp.minimum(upper_dist, lower_dist)
    adjusted_central = ~central & (jnp.abs(adjusted) <= min_dist)
    adjusted = jnp.where(adjusted_central, min_dist, adjusted)
    return adjusted, one_sided & ~adjusted_central


def finite_difference_jacobian(
    residual: Callable[[PyTree], Float[Array, " m"]],
    x: Float[Array, " n"],
    unravel: Callable[[Float[Array, " n"]], PyTree],
    f0: Float[Array, " m"],
    method: str,
    diff_step: tuple[float, ...] | float | None,
    lower: Float[Array, " n"],
    upper: Float[Array, " n"],
    bounded: bool,
) -> Float[Array, "m n"]:
    """The ``(m, n)`` Jacobian of `residual` (a function of the parameters' pytree) at
    the flat parameters `x`, where its value is `f0`.

    The ``n`` (2-point, complex step) or ``2n`` (3-point) evaluations are batched with
    `jax.vmap`; under a host callback they run one after the other, as in SciPy.
    """
    if method not in FINITE_DIFFERENCE_METHODS:
        raise ValueError(
            f"Unknown finite-difference method {method!r}; use one of {FINITE_DIFFERENCE_METHODS}."
        )
    n = x.size
    rel = None if diff_step is None else jnp.broadcast_to(jnp.asarray(diff_step, x.dtype), (n,))
    step = absolute_step(x, f0.dtype, method, rel)
    eye = jnp.eye(n, dtype=x.dtype)
    at = jax.vmap(lambda x_: residual(unravel(x_)))

    if method == "cs":
        # Bounds do not apply: the real part never moves.
        params = unravel(x)

        def along_imaginary(direction):
            return residual(jax.tree.map(lambda p, d: p + 1j * d, params, unravel(direction)))

        f_complex = jax.vmap(along_imaginary)(eye * step[:, None])
        return (jnp.imag(f_complex) / step[:, None]).T.astype(f0.dtype)

    if method == "2-point":
        one_sided = jnp.ones(n, bool)
    else:
        step, one_sided = jnp.abs(step), jnp.zeros(n, bool)
    if bounded:
        step, one_sided = adjust_to_bounds(x, step, method, lower, upper)
    if method == "2-point":
        shifted = x + eye * step[:, None]
        dx = (x + step) - x
        difference = at(shifted) - f0
    else:
        near = jnp.where(one_sided, step, -step)
        far = jnp.where(one_sided, 2 * step, step)
        f_near = at(x + eye * near[:, None])
        f_far = at(x + eye * far[:, None])
        dx = jnp.where(one_sided, (x + 2 * step) - x, (x + step) - (x - step))
        difference = jnp.where(one_sided[:, None], -3.0 * f0 + 4 * f_near - f_far, f_far - f_near)
    return (difference / dx[:, None]).T
