"""The linearised problem at a point, reduced to an ``n``-sized summary.

The strategies only need ``cost``, the gradient ``Jᵀf`` and a square factor ``r`` with
``rᵀr = JᵀJ`` (all after weighting and robust-loss scaling). Computing that summary is
the only step that touches the ``m`` residuals, so it can be done in one shot, in chunks
or across devices without the strategies knowing.
"""

from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ._loss import AbstractLoss, Linear


class Linearization(eqx.Module):
    """Cost, gradient and Jacobian factor of the (robust, weighted) problem at a point."""

    cost: Float[Array, ""]
    grad: Float[Array, " n"]
    factor: Float[Array, "n n"]

    @property
    def finite(self) -> Bool[Array, ""]:
        return (
            jnp.isfinite(self.cost)
            & jnp.all(jnp.isfinite(self.grad))
            & jnp.all(jnp.isfinite(self.factor))
        )

    @property
    def column_norms(self) -> Float[Array, " n"]:
        """Column norms of the Jacobian (equal to those of its factor)."""
        return jnp.sqrt(jnp.sum(self.factor**2, axis=0))


def scale_for_loss(
    f: Float[Array, " m"], jac: Float[Array, "m n"], loss: AbstractLoss
) -> tuple[Float[Array, ""], Float[Array, " m"], Float[Array, "m n"]]:
    """Cost and the loss-scaled ``(f, J)`` whose Gauss–Newton model matches the robust
    cost to second order (Triggs et al., as in SciPy's ``scale_for_robust_loss_function``).
    """
    rho0, rho1, rho2 = loss(f)
    cost = 0.5 * jnp.sum(rho0)
    if isinstance(loss, Linear):
        return cost, f, jac
    eps = jnp.finfo(f.dtype).eps
    jac_scale = jnp.sqrt(jnp.maximum(rho1 + 2 * rho2 * f**2, eps))
    return cost, f * rho1 / jac_scale, jac * jac_scale[:, None]


def factorize(
    jac: Float[Array, "m n"], method: Literal["qr", "normal"]
) -> Float[Array, "n n"]:
    """A square ``r`` with ``rᵀr = JᵀJ``.

    ``"qr"`` keeps the conditioning of ``J``; ``"normal"`` forms ``JᵀJ`` (cheaper for
    large ``m``, but squares the condition number) and takes a symmetric square root.
    """
    m, n = jac.shape
    if method == "qr":
        if m < n:
            jac = jnp.concatenate([jac, jnp.zeros((n - m, n), jac.dtype)])
        return jnp.linalg.qr(jac, mode="r")
    if method == "normal":
        eigenvalues, eigenvectors = jnp.linalg.eigh(jac.T @ jac)
        return jnp.sqrt(jnp.maximum(eigenvalues, 0.0))[:, None] * eigenvectors.T
    raise ValueError(f"Unknown factorization {method!r}; use 'qr' or 'normal'.")


def residual_and_jacobian(
    residual: Callable[[Float[Array, " n"]], Float[Array, " m"]],
    x: Float[Array, " n"],
    mode: Literal["fwd", "rev"],
) -> tuple[Float[Array, " m"], Float[Array, "m n"]]:
    """Residuals and their exact Jacobian, in one pass."""

    def with_aux(x):
        f = residual(x)
        return f, f

    if mode == "fwd":
        jac, f = jax.jacfwd(with_aux, has_aux=True)(x)
    elif mode == "rev":
        jac, f = jax.jacrev(with_aux, has_aux=True)(x)
    else:
        raise ValueError(f"Unknown Jacobian mode {mode!r}; use 'fwd' or 'rev'.")
    return f, jac


def linearize(
    f: Float[Array, " m"],
    jac: Float[Array, "m n"],
    loss: AbstractLoss,
    method: Literal["qr", "normal"],
) -> Linearization:
    cost, f_scaled, jac_scaled = scale_for_loss(f, jac, loss)
    return Linearization(
        cost=cost, grad=jac_scaled.T @ f_scaled, factor=factorize(jac_scaled, method)
    )
