"""Block-arrow normal equations, solved by eliminating the local blocks (Schur complement).

A global fit's ``JᵀJ`` (parameters ``θ = [shared (n_s), local_1 (n_l), ..., local_k]``)
is block-arrow shaped: dataset ``i`` contributes a Gram block ``G_i = [[D_i, B_i], [B_iᵀ,
C_i]]`` over its ``[local_i | shared]`` columns, so

    JᵀJ = [[Σ C_i, B_1ᵀ, ..., B_kᵀ], [B_1, D_1, 0 ...], ..., [B_k, 0 ..., D_k]].

A shifted system ``(JᵀJ + diag(shift)) x = b`` costs ``k`` Cholesky factorizations of
``n_l × n_l`` (vmapped) and one of the Schur complement ``S = Σ C_i - Σ B_iᵀ D_i⁻¹ B_i``
(``n_s × n_s``), as bundle adjustment does: ``O(k (n_l + n_s)³)`` work and memory,
never ``O(n²)``. The Gram blocks come from per-dataset QR factors ``R_i`` (``R_iᵀ R_i =
G_i``), so a dataset with fewer points than parameters (one ODR point) is no special case.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve, solve_triangular
from jaxtyping import Array, Float


def split_flat(v, n_shared: int, k: int):
    """``(shared (n_s,), local (k, n_l))`` of a flat ``θ``-shaped vector."""
    return v[..., :n_shared], jnp.reshape(v[..., n_shared:], (*v.shape[:-1], k, -1))


def join_flat(shared, local):
    return jnp.concatenate([shared, jnp.reshape(local, (*local.shape[:-2], -1))], axis=-1)


def block_columns(v, n_shared: int, k: int):
    """A flat ``θ``-shaped vector as ``(k, n_l + n_s)``: each dataset's ``[local_i |
    shared]`` (the column order of its block)."""
    shared, local = split_flat(v, n_shared, k)
    return jnp.concatenate([local, jnp.broadcast_to(shared, (k, shared.shape[-1]))], axis=-1)


class BlockArrowCholesky(eqx.Module):
    """``JᵀJ + diag(shift)`` factored: ``D_i = L_i L_iᵀ``, ``W_i = L_i⁻¹ B_i``, ``S = L_S
    L_Sᵀ``."""

    chol_local: Float[Array, "k nl nl"]
    w: Float[Array, "k nl ns"]
    chol_schur: Float[Array, "ns ns"]

    @property
    def pivots(self) -> Float[Array, " n"]:
        """The factors' diagonals: as the diagonal of ``J``'s QR factor, a rank test."""
        local = jnp.diagonal(self.chol_local, axis1=1, axis2=2).reshape(-1)
        return jnp.concatenate([jnp.diagonal(self.chol_schur), local])

    def solve(self, b: Float[Array, " n"]) -> Float[Array, " n"]:
        k, n_shared = self.w.shape[0], self.w.shape[2]
        b_shared, b_local = split_flat(b, n_shared, k)
        z = jax.vmap(lambda c, r: solve_triangular(c, r, lower=True))(self.chol_local, b_local)
        x_shared = cho_solve((self.chol_schur, True), b_shared - jnp.einsum("kab,ka->b", self.w, z))
        x_local = jax.vmap(lambda c, r: solve_triangular(c, r, lower=True, trans="T"))(
            self.chol_local, z - jnp.einsum("kab,b->ka", self.w, x_shared)
        )
        return join_flat(x_shared, x_local)


def gram_blocks(r_blocks: Float[Array, "k w w"], d_columns=None) -> Float[Array, "k w w"]:
    """``G_i = R_iᵀ R_i``, of the columns scaled by `d_columns` ``(k, w)`` if given."""
    if d_columns is not None:
        r_blocks = r_blocks * d_columns[:, None, :]
    return jnp.einsum("kaw,kav->kwv", r_blocks, r_blocks)


def factor_block_arrow(grams: Float[Array, "k w w"], n_shared: int, shift) -> BlockArrowCholesky:
    """The Cholesky pieces of ``JᵀJ + diag(shift)`` (`shift` flat, ``θ``-shaped, or a
    scalar). Non-finite pieces where the matrix is not positive definite."""
    k, w = grams.shape[0], grams.shape[1]
    n_local = w - n_shared
    shift = jnp.broadcast_to(jnp.asarray(shift, grams.dtype), (n_shared + k * n_local,))
    shift_shared, shift_local = split_flat(shift, n_shared, k)
    d = grams[:, :n_local, :n_local] + jax.vmap(jnp.diag)(shift_local)
    b = grams[:, :n_local, n_local:]
    c = jnp.sum(grams[:, n_local:, n_local:], axis=0) + jnp.diag(shift_shared)
    chol_local = jnp.linalg.cholesky(d)
    w_blocks = jax.vmap(lambda c, r: solve_triangular(c, r, lower=True))(chol_local, b)
    schur = c - jnp.einsum("kab,kac->bc", w_blocks, w_blocks)
    return BlockArrowCholesky(chol_local, w_blocks, jnp.linalg.cholesky(schur))


class BlockCovariance(eqx.Module):
    """``(JᵀJ)⁻¹`` of a block-arrow problem by blocks, and the residual variance:
    `shared` (``S⁻¹``), `local` (each dataset's ``D_i⁻¹ + V_i S⁻¹ V_iᵀ``), `cross` (its
    covariance with the shared ones, ``-V_i S⁻¹``), and ``V_i = D_i⁻¹ B_i``, from which
    any other block follows (datasets ``i ≠ j``: ``V_i S⁻¹ V_jᵀ``). Infinite everywhere
    when ``JᵀJ`` is singular (to the rank test of `covariance_parts`)."""

    shared: Float[Array, "ns ns"]
    local: Float[Array, "k nl nl"]
    cross: Float[Array, "k nl ns"]
    v: Float[Array, "k nl ns"] | None
    residual_variance: Float[Array, ""]
    # The dense matrix where it was computed whole (the dense engine), else None.
    full: Float[Array, "n n"] | None = None

    def scaled(self, absolute_sigma: bool) -> "BlockCovariance":
        """The covariance: unscaled with `absolute_sigma`, else times the residual
        variance (SciPy's recipe); infinite when that is."""
        factor = 1.0 if absolute_sigma else self.residual_variance
        xp = np if isinstance(self.shared, np.ndarray) else jnp

        def scale(a):  # (inf everywhere when the residual variance is: no dof)
            if a is None:
                return None
            # (A batch of fits: one factor per member, on the leading axes.)
            f = xp.reshape(factor, xp.shape(factor) + (1,) * (a.ndim - xp.ndim(factor)))
            return xp.where(xp.isfinite(f), a * f, xp.inf)

        return BlockCovariance(
            scale(self.shared),
            scale(self.local),
            scale(self.cross),
            self.v,
            self.residual_variance,
            scale(self.full),
        )

    def diagonal(self):
        """The variances, flat (``θ``'s order), with NumPy."""
        local = np.diagonal(np.asarray(self.local), axis1=1, axis2=2).reshape(-1)
        return np.concatenate([np.diagonal(np.asarray(self.shared)), local])

    def dense(self) -> np.ndarray:
        """The full ``n × n`` matrix, with NumPy (``O(n²)`` memory: for moderate ``n``)."""
        if self.full is not None or self.v is None:
            return np.asarray(self.full)
        shared, local, cross, v = (
            np.asarray(a) for a in (self.shared, self.local, self.cross, self.v)
        )
        k, n_local, n_shared = v.shape
        # Off-diagonal local blocks: V_i S⁻¹ V_jᵀ = -cross_i V_jᵀ (scaled as `cross` is).
        local_all = -np.einsum("iab,jcb->iajc", cross, v).reshape(k * n_local, k * n_local)
        index = np.arange(k)
        local_all.reshape(k, n_local, k, n_local)[index, :, index, :] = local
        top = np.concatenate(
            [shared, cross.transpose(2, 0, 1).reshape(n_shared, k * n_local)], axis=1
        )
        bottom = np.concatenate([cross.reshape(k * n_local, n_shared), local_all], axis=1)
        return np.concatenate([top, bottom], axis=0)


def block_covariance(r_blocks, n_shared: int, cost, n_points) -> BlockCovariance:
    """`BlockCovariance` from the QR factors of the datasets' ``[local_i | shared]``
    Jacobian blocks, with the columns scaled to unit norm first (as `covariance_parts`:
    a rank test that does not depend on the parameters' units)."""
    k, w = r_blocks.shape[0], r_blocks.shape[1]
    n_local, n = w - n_shared, n_shared + k * (w - n_shared)
    grams = gram_blocks(r_blocks)
    diag = jnp.diagonal(grams, axis1=1, axis2=2)
    norms = join_flat(jnp.sqrt(jnp.sum(diag[:, n_local:], axis=0)), jnp.sqrt(diag[:, :n_local]))
    unit = jnp.where(norms > 0, 1 / jnp.where(norms > 0, norms, 1.0), 1.0)
    factor = factor_block_arrow(
        gram_blocks(r_blocks, block_columns(unit, n_shared, k)), n_shared, 0.0
    )
    pivots = factor.pivots
    rows = n_points
    regular = jnp.all(jnp.isfinite(pivots)) & (
        jnp.min(pivots) > jnp.finfo(grams.dtype).eps * jnp.maximum(rows, n) * jnp.max(pivots)
    )
    eye_s = jnp.eye(n_shared, dtype=grams.dtype)
    shared = cho_solve((factor.chol_schur, True), eye_s)
    # V_i = D_i⁻¹ B_i = L_i⁻ᵀ W_i; D_i⁻¹ = L_i⁻ᵀ L_i⁻¹.
    v = jax.vmap(lambda c, r: solve_triangular(c, r, lower=True, trans="T"))(
        factor.chol_local, factor.w
    )
    eye_l = jnp.eye(n_local, dtype=grams.dtype)
    d_inv = jax.vmap(lambda c: cho_solve((c, True), eye_l))(factor.chol_local)
    cross = -jnp.einsum("kab,bc->kac", v, shared)
    local = d_inv - jnp.einsum("kab,kcb->kac", cross, v)
    unit_s, unit_l = split_flat(unit, n_shared, k)
    shared = shared * unit_s[:, None] * unit_s[None, :]
    cross = cross * unit_l[:, :, None] * unit_s[None, None, :]
    local = local * unit_l[:, :, None] * unit_l[:, None, :]
    v = v * unit_l[:, :, None] / unit_s[None, None, :]
    infinite = lambda a: jnp.where(regular, a, jnp.inf)  # noqa: E731
    dof = rows - n
    residual_variance = jnp.where(dof > 0, 2 * cost / jnp.where(dof > 0, dof, 1), jnp.inf)
    return BlockCovariance(infinite(shared), infinite(local), infinite(cross), v, residual_variance)


def blocks_of_dense(pcov, n_shared: int, k: int, residual_variance) -> BlockCovariance:
    """The `BlockCovariance` view of an unscaled dense ``(JᵀJ)⁻¹`` (NumPy)."""
    pcov = np.asarray(pcov)
    n_local = (pcov.shape[0] - n_shared) // k
    local_all = pcov[n_shared:, n_shared:].reshape(k, n_local, k, n_local)
    index = np.arange(k)
    return BlockCovariance(
        shared=pcov[:n_shared, :n_shared],
        local=local_all[index, :, index, :],
        cross=pcov[n_shared:, :n_shared].reshape(k, n_local, n_shared),
        v=None,
        residual_variance=residual_variance,
        full=pcov,
    )
