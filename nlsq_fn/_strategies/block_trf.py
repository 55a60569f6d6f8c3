"""Trust Region Reflective on a block-arrow problem (a global fit): SciPy's TRF steps,
with the subproblem's linear algebra done by blocks.

`TRF` finds its step from the SVD of the ``n × n`` factor: ``O(n³)`` work and ``O(n²)``
memory, hopeless for 2,000 datasets (``n = 6,002``). `BlockTRF` keeps everything else
of `TRF` (scaling, reflections, radius, acceptance) and replaces only `subproblem`:
``p(alpha) = -(J_hᵀJ_h + diag(diag_h) + alpha I)⁻¹ g_h`` by the block-arrow Cholesky
(`nlsq_fn._strategies.block_arrow`), and the Levenberg–Marquardt parameter by the same safeguarded
Newton iterations on ``||p(alpha)|| = radius`` (`secular_newton`) that the SVD path runs
(with ``phi' = -pᵀ(A + alpha I)⁻¹p / ||p||``, one more solve). The SVD's exact rank test
``s_min > eps m s_max`` becomes the same test on the Cholesky pivots (the diagonal of
``J``'s triangular factor), which decides alike except near rank deficiency.
"""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from .block_arrow import block_columns, factor_block_arrow, gram_blocks, join_flat
from .trf import TRF
from .trust_region import secular_newton


class BlockLinearization(eqx.Module):
    """Cost, gradient (``θ``'s order) and the QR factors ``R_i`` of each dataset's
    loss-scaled ``[local_i | shared]`` Jacobian block: ``O(k w²)``, no ``n × n`` factor."""

    cost: Float[Array, ""]
    grad: Float[Array, " n"]
    r_blocks: Float[Array, "k w w"]
    n_shared: int = eqx.field(static=True)

    @property
    def factor(self) -> None:
        # A fit by blocks never forms the ``n × n`` factor: its solution has none.
        return None

    @property
    def finite(self) -> Bool[Array, ""]:
        return (
            jnp.isfinite(self.cost)
            & jnp.all(jnp.isfinite(self.grad))
            & jnp.all(jnp.isfinite(self.r_blocks))
        )

    @property
    def column_norms(self) -> Float[Array, " n"]:
        squares = jnp.sum(self.r_blocks**2, axis=1)  # (k, w): each column's squared norm
        n_local = squares.shape[1] - self.n_shared
        return join_flat(
            jnp.sqrt(jnp.sum(squares[:, n_local:], axis=0)), jnp.sqrt(squares[:, :n_local])
        )


class ScaledBlocks(eqx.Module):
    """``J diag(d)`` for the step selection, which only needs ``@ v``: here each
    dataset's ``R_i`` times its part of ``d v`` (the same norms and inner products as
    ``J d v``)."""

    r_blocks: Float[Array, "k w w"]
    d: Float[Array, " n"]
    n_shared: int = eqx.field(static=True)

    def __matmul__(self, v):
        k = self.r_blocks.shape[0]
        columns = block_columns(self.d * v, self.n_shared, k)
        return jnp.einsum("kab,kb->ka", self.r_blocks, columns).reshape(-1)


class BlockTRF(TRF):
    """`TRF` whose subproblem is solved by eliminating the local blocks: for the
    `BlockLinearization` of a global fit with `n_shared` shared parameters."""

    n_shared: int = eqx.field(static=True)

    def subproblem(self, linearization, d, diag_h, g_h, state, problem):
        r_blocks = linearization.r_blocks
        k = r_blocks.shape[0]
        n = g_h.size
        grams = gram_blocks(r_blocks, block_columns(d, self.n_shared, k))
        radius = state.radius

        def step_at(alpha):
            factor = factor_block_arrow(grams, self.n_shared, diag_h + alpha)
            return factor, -factor.solve(g_h)

        factor0, p_gauss_newton = step_at(jnp.zeros((), g_h.dtype))
        pivots = factor0.pivots
        eps = jnp.finfo(g_h.dtype).eps
        full_rank = (
            (problem.n_rows >= n)
            & jnp.all(jnp.isfinite(pivots))
            & (jnp.min(pivots) > eps * problem.n_rows * jnp.max(pivots))
        )
        p_gauss_newton = jnp.where(full_rank, p_gauss_newton, 0.0)
        take_gauss_newton = full_rank & (jnp.linalg.norm(p_gauss_newton) <= radius)

        def phi_and_derivative(alpha):
            factor, p = step_at(alpha)
            p_norm = jnp.linalg.norm(p)
            safe_p_norm = jnp.where(p_norm > 0, p_norm, 1.0)
            phi_prime = -jnp.dot(p, factor.solve(p)) / safe_p_norm
            return p_norm - radius, jnp.where(phi_prime == 0, -1.0, phi_prime)

        alpha_upper = jnp.linalg.norm(g_h) / radius
        phi0, phi0_prime = phi_and_derivative(jnp.where(full_rank, 0.0, 1.0))
        alpha_lower = jnp.where(full_rank, -phi0 / phi0_prime, 0.0)
        alpha, _ = secular_newton(
            phi_and_derivative, radius, state.alpha, alpha_lower, alpha_upper, full_rank, 0.01
        )
        _, p = step_at(alpha)
        p_norm = jnp.linalg.norm(p)
        p = p * jnp.where(p_norm > 0, radius / jnp.where(p_norm > 0, p_norm, 1.0), 1.0)
        p = jnp.where(take_gauss_newton, p_gauss_newton, p)
        jac_h = ScaledBlocks(r_blocks, d, self.n_shared)
        return jac_h, p, jnp.where(take_gauss_newton, 0.0, alpha)
