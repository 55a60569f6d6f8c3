"""Robust loss functions, defined as SciPy defines them.

Each loss is a function ``rho(z)`` of the squared residual ``z = f**2``. With a scale
``C = f_scale`` the loss actually applied is ``C**2 * rho(z / C**2)``, so residuals much
smaller than ``C`` are treated quadratically and larger ones are down-weighted.
"""

import abc
import functools
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .host_errors import host_callback
from .host_model import NUMPY_TRACING_ERRORS


class AbstractLoss(eqx.Module):
    """A robust loss ``rho(z)`` of the squared residual ``z``.

    Subclasses implement `rho_unscaled`, returning ``(rho, rho', rho'')`` at ``z`` for
    ``f_scale = 1``; the scaling by `f_scale` is applied here, exactly as
    `scipy.optimize.least_squares` applies it. ``rho`` must satisfy ``rho(0) = 0``,
    ``rho'(0) = 1`` and be concave or linear, like SciPy's losses.
    """

    f_scale: eqx.AbstractVar[Float[ArrayLike, ""]]

    @abc.abstractmethod
    def rho_unscaled(
        self, z: Float[Array, " m"]
    ) -> tuple[Float[Array, " m"], Float[Array, " m"], Float[Array, " m"]]:
        """``(rho(z), rho'(z), rho''(z))`` for a unit `f_scale`."""

    def __call__(
        self, f: Float[Array, " m"]
    ) -> tuple[Float[Array, " m"], Float[Array, " m"], Float[Array, " m"]]:
        """``(rho, rho', rho'')`` of the residuals `f`, derivatives taken in ``z = f**2``."""
        c2 = jnp.asarray(self.f_scale, f.dtype) ** 2
        rho0, rho1, rho2 = self.rho_unscaled(f**2 / c2)
        return rho0 * c2, rho1, rho2 / c2

    def cost(self, f: Float[Array, " m"]) -> Float[Array, ""]:
        """``0.5 * sum(rho(f**2))``: the objective SciPy calls ``cost``."""
        return 0.5 * jnp.sum(self(f)[0])


class Linear(AbstractLoss):
    """Ordinary least squares: ``rho(z) = z``."""

    f_scale: Float[ArrayLike, ""] = 1.0

    def rho_unscaled(self, z):
        return z, jnp.ones_like(z), jnp.zeros_like(z)


class SoftL1(AbstractLoss):
    """``rho(z) = 2 * (sqrt(1 + z) - 1)``: a smooth approximation of the l1 loss."""

    f_scale: Float[ArrayLike, ""] = 1.0

    def rho_unscaled(self, z):
        t = 1 + z
        return 2 * (jnp.sqrt(t) - 1), t**-0.5, -0.5 * t**-1.5


class Huber(AbstractLoss):
    """``rho(z) = z`` for ``z <= 1``, else ``2 * sqrt(z) - 1``."""

    f_scale: Float[ArrayLike, ""] = 1.0

    def rho_unscaled(self, z):
        inner = z <= 1
        # z is clipped away from zero in the outer branch so it stays finite where unused.
        z_outer = jnp.where(inner, 1.0, z)
        rho0 = jnp.where(inner, z, 2 * jnp.sqrt(z_outer) - 1)
        rho1 = jnp.where(inner, 1.0, z_outer**-0.5)
        rho2 = jnp.where(inner, 0.0, -0.5 * z_outer**-1.5)
        return rho0, rho1, rho2


class Cauchy(AbstractLoss):
    """``rho(z) = ln(1 + z)``: strongly down-weights outliers."""

    f_scale: Float[ArrayLike, ""] = 1.0

    def rho_unscaled(self, z):
        t = 1 + z
        return jnp.log1p(z), 1 / t, -1 / t**2


class Arctan(AbstractLoss):
    """``rho(z) = arctan(z)``: bounds the contribution of any single residual."""

    f_scale: Float[ArrayLike, ""] = 1.0

    def rho_unscaled(self, z):
        t = 1 + z**2
        return jnp.arctan(z), 1 / t, -2 * z / t**2


class CallableLoss(AbstractLoss):
    """A loss given as SciPy takes one: ``loss(z)`` returns an array of shape (3, m),
    ``rho(z)`` and its first two derivatives, for ``f_scale = 1`` (scaled here as
    SciPy scales it). Written with `jax.numpy` it is traced; a NumPy function (one that
    assigns into arrays, say) is called on the host through `jax.pure_callback`."""

    # (Equinox drops the base's abstract `f_scale` from the fields, so `rho` comes first;
    # mypy's dataclass model keeps it.)
    rho: Callable = eqx.field(static=True)  # type: ignore[misc]
    f_scale: Float[ArrayLike, ""] = 1.0

    def rho_unscaled(self, z):
        try:
            out = jnp.asarray(self.rho(z), z.dtype)
        except NUMPY_TRACING_ERRORS:
            shape = jax.ShapeDtypeStruct((3,) + z.shape, z.dtype)
            out = host_callback(
                lambda z: np.asarray(self.rho(np.asarray(z)), z.dtype),
                shape,
                z,
                vmap_method="sequential",
            )
        if out.shape != (3,) + z.shape:
            raise ValueError(
                f"The `loss` callable must return shape {(3,) + z.shape} (rho, rho', "
                f"rho'' of z = f**2), got {out.shape}."
            )
        return out[0], out[1], out[2]


_LOSSES_BY_NAME: dict[str, type[AbstractLoss]] = {
    "linear": Linear,
    "soft_l1": SoftL1,
    "huber": Huber,
    "cauchy": Cauchy,
    "arctan": Arctan,
}


@functools.lru_cache(maxsize=64)
def _named_loss(name: str, f_scale: float) -> AbstractLoss:
    # One immutable module per name and Python `f_scale`: each fit asks for one.
    return _LOSSES_BY_NAME[name](f_scale=f_scale)


def as_loss(loss: "str | Callable | AbstractLoss", f_scale: float = 1.0) -> AbstractLoss:
    """A loss module from SciPy's loss name (``"huber"``, ...), a SciPy-style callable
    ``loss(z) -> (3, m)`` or a module."""
    if isinstance(loss, AbstractLoss):
        return loss
    if callable(loss) and not isinstance(loss, str):
        if not f_scale > 0:
            raise ValueError(f"`f_scale` must be positive, got {f_scale}.")
        return CallableLoss(rho=loss, f_scale=f_scale)
    if isinstance(loss, str) and loss in _LOSSES_BY_NAME:
        if not f_scale > 0:
            raise ValueError(f"`f_scale` must be positive, got {f_scale}.")
        if type(f_scale) in (float, int):
            return _named_loss(loss, f_scale)
        return _LOSSES_BY_NAME[loss](f_scale=f_scale)
    raise ValueError(
        f"`loss` must be one of {sorted(_LOSSES_BY_NAME)}, a callable or an AbstractLoss, "
        f"got {loss!r}."
    )
