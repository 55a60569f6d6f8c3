"""The linearised problem for a matrix-free strategy (`TRFLSMR`): residuals, gradient
and the Jacobian as a linear operator, never an ``n × n`` factor.

With JAX's derivatives (``jac="fwd"`` / ``"rev"``) the Jacobian is never formed: the
gradient is one VJP of the residuals, and each product with ``J`` or ``Jᵀ`` is a JVP /
VJP of the model linearised once per proposed step (`jacobian_operator`). With a given
Jacobian (a `jac` function, finite differences, a host model's sparse or operator
Jacobian made dense on the host) the ``m × n`` matrix is kept and used as the operator.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Union, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jaxtyping import Array, Bool, Float

from .._problem.loss import AbstractLoss
from .linearize import scale_residuals_for_loss
from .sparse_jacobian import is_bcoo

if TYPE_CHECKING:
    from jax.experimental.sparse import BCOO


class OperatorLinearization(eqx.Module):
    """Cost, gradient, loss-scaled residuals at a point, and what the Jacobian's
    operator needs there: the loss's row scale and, where it was given as a matrix, the
    loss-scaled Jacobian itself."""

    cost: Float[Array, ""]
    grad: Float[Array, " n"]
    f: Float[Array, " m"]  # loss-scaled residuals
    row_scale: Float[Array, " m"] | None  # the loss's factor of each Jacobian row
    jac: Union[Float[Array, "m n"], "BCOO", None]  # loss-scaled; None: JVPs / VJPs

    @property
    def finite(self) -> Bool[Array, ""]:
        ok = (
            jnp.isfinite(self.cost)
            & jnp.all(jnp.isfinite(self.grad))
            & jnp.all(jnp.isfinite(self.f))
        )
        jac = self.jac
        if is_bcoo(jac):
            ok = ok & jnp.all(jnp.isfinite(jac.data))
        elif jac is not None:
            ok = ok & jnp.all(jnp.isfinite(cast(Array, jac)))  # (dense here)
        return ok

    @property
    def column_norms(self) -> Float[Array, " n"]:
        """Column norms of the Jacobian (for ``x_scale="jac"``; a matrix-free Jacobian
        has none: `TRFLSMR` refuses ``x_scale="jac"`` without a matrix)."""
        jac = self.jac
        if jac is None:
            return jnp.ones_like(self.grad)
        if is_bcoo(jac):
            squares = jac.data**2
            return jnp.sqrt(jax.ops.segment_sum(squares, jac.indices[:, 1], self.grad.size))
        return jnp.sqrt(jnp.sum(cast(Array, jac) ** 2, axis=0))  # (dense here)

    @property
    def factor(self) -> None:
        """No ``n × n`` factor (the `Solution`'s `factor` is None)."""
        return None


def is_sparse(jac) -> bool:
    """Whether a Jacobian is a JAX sparse (`BCOO`) matrix."""
    return is_bcoo(jac)


def matrix_linearization(
    f: Float[Array, " m"], jac: Union[Float[Array, "m n"], "BCOO"], loss: AbstractLoss
) -> OperatorLinearization:
    """The summary at a point where the Jacobian was given as a matrix."""
    cost, f_scaled, row_scale = scale_residuals_for_loss(f, loss)
    if row_scale is not None:
        jac = jac * row_scale[:, None]
    return OperatorLinearization(cost, jac.T @ f_scaled, f_scaled, row_scale, jac)


def autodiff_linearization(
    residual: Callable[[Float[Array, " n"]], Float[Array, " m"]],
    x: Float[Array, " n"],
    loss: AbstractLoss,
) -> OperatorLinearization:
    """The summary at `x` from one evaluation and one VJP of `residual` (flat
    parameters -> weighted residuals): the Jacobian is not formed."""
    f, vjp = jax.vjp(residual, x)
    cost, f_scaled, row_scale = scale_residuals_for_loss(f, loss)
    weights = f_scaled if row_scale is None else f_scaled * row_scale
    (grad,) = vjp(weights)
    return OperatorLinearization(cost, grad, f_scaled, row_scale, None)


def jacobian_operator(
    residual: Callable[[Float[Array, " n"]], Float[Array, " m"]] | None,
    x: Float[Array, " n"],
    linearization: OperatorLinearization,
) -> lx.AbstractLinearOperator:
    """The loss-scaled Jacobian at `x` as a Lineax operator: the stored matrix, or the
    model linearised at `x` (one evaluation; then each product is a JVP, each
    transposed product its transpose, a VJP)."""
    jac = linearization.jac
    if is_sparse(jac):
        # (Lineax transposes the product, a BCOO `dot_general`, for LSMR's Jᵀ u.)
        return lx.FunctionLinearOperator(lambda v: jac @ v, jax.ShapeDtypeStruct(x.shape, x.dtype))
    if jac is not None:
        return lx.MatrixLinearOperator(jac)
    if residual is None:
        raise ValueError("A matrix-free Jacobian needs the residual function.")
    _, jvp = jax.linearize(residual, x)
    row_scale = linearization.row_scale

    def product(v):
        out = jvp(v)
        return out if row_scale is None else out * row_scale

    return lx.FunctionLinearOperator(product, jax.ShapeDtypeStruct(x.shape, x.dtype))


def host_jacobian_operator(residual, x, loss):
    """The loss-scaled Jacobian of `residual` at concrete `x` as a SciPy
    `LinearOperator` (compiled JVP / VJP products), for a matrix-free fit's result:
    SciPy's ``res.jac`` without the ``m × n`` matrix."""
    from scipy.sparse.linalg import LinearOperator

    f, jvp = jax.linearize(residual, x)
    _, _, row_scale = scale_residuals_for_loss(f, loss)
    scale = jnp.ones_like(f) if row_scale is None else row_scale
    vjp = jax.linear_transpose(jvp, x)
    forward = jax.jit(lambda v: jvp(v) * scale)
    backward = jax.jit(lambda u: vjp(u * scale)[0])

    def matvec(v):
        return np.asarray(forward(jnp.asarray(np.ravel(v), x.dtype)))

    def rmatvec(u):
        return np.asarray(backward(jnp.asarray(np.ravel(u), f.dtype)))

    return LinearOperator((f.size, x.size), matvec=matvec, rmatvec=rmatvec, dtype=np.dtype(f.dtype))
