"""Correlated errors (SciPy's 2-D `sigma`, a covariance ``L Lᵀ``): the model and its
Jacobian whitened by ``L⁻¹``, so that the residuals are ``L⁻¹ (model - y)``."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


class WhitenedModel(eqx.Module):
    """``L⁻¹ model(x, params)`` for a covariance ``sigma = L Lᵀ`` (SciPy's 2-D `sigma`):
    with ``y`` whitened the same way, the residuals are ``L⁻¹ (model - y)``."""

    model: Callable
    cholesky: Float[Array, "m m"]

    def __call__(self, x, params):
        prediction = self.model(x, params)
        return jax.scipy.linalg.solve_triangular(self.cholesky, prediction, lower=True)

    def around_host(self, on_host: Callable) -> "WhitenedModel":
        """The whitening in JAX around the model run on the host (`on_host(model)`)."""
        return WhitenedModel(on_host(self.model), self.cholesky)


class ByIdentity:
    """A NumPy array held in static configuration (the `Solver`'s `jac`), which must be
    hashable: compared by identity."""

    def __init__(self, array):
        self.array = np.asarray(array)


class WhitenedJacobian(eqx.Module):
    """``L⁻¹ jac(x, params)``: the user's `jac` for the whitened residuals."""

    jac: Callable
    cholesky: ByIdentity

    def __call__(self, x, params):
        cholesky = jnp.asarray(self.cholesky.array)
        jac = jnp.reshape(self.jac(x, params), (cholesky.shape[0], -1))
        return jax.scipy.linalg.solve_triangular(cholesky, jac, lower=True)
