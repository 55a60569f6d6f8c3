"""SVDs and R factors of the small matrices of a batch of fits, in operations that
vectorise.

A `vmap`-ed fit of ``n`` parameters takes, at every iteration and for every member, the
SVD of an ``n × n`` (or ``2n × n``) matrix. LAPACK does that one member after another,
paying a call's fixed overhead each time, which for small ``n`` costs more than the
arithmetic. One-sided (Hestenes) Jacobi rotations written in `jax.numpy`, with the batch
as the last, contiguous axis, do the whole batch at once and are as accurate (they find
small singular values to high relative accuracy). A single, unbatched matrix keeps
LAPACK, which is faster for one: the choice is made by a vmap rule
(`jax.custom_batching.custom_vmap`), so the same code serves `solve` and `vmap(solve)`.

The same holds for the R factor of each member's Jacobian, which the evaluation takes
(`_evaluation/small_qr.py`, this module's other half, a layer below).
"""

import jax
import jax.numpy as jnp
import numpy as np

# A sweep has n(n-1)/2 rotations: above this many columns LAPACK's per-member call
# costs less than the rotations.
MAX_SMALL_COLUMNS = 5
_MAX_SWEEPS = 30


def batched_jacobi_svd(a):
    """Singular values (descending) and ``Vᵀ`` of every ``a[b]`` (``k × n``, ``k ≥ n``),
    rotating pairs of columns until every pair is orthogonal to working precision
    (cosines below ``k·eps``) in every member of the batch."""
    batch, k, n = a.shape
    dtype = a.dtype
    # Rounding leaves columns orthogonal to about k·eps (LAPACK's Jacobi, `gesvj`,
    # stops at sqrt(k)·eps): asking for eps itself can sweep forever.
    tolerance = k * jnp.finfo(dtype).eps
    pairs = np.array([(i, j) for i in range(n) for j in range(i + 1, n)], np.int32)
    pairs = pairs.reshape(-1, 2)
    if n == 1:
        s = jnp.sqrt(jnp.sum(a**2, axis=1))
        return s, jnp.ones((batch, 1, 1), dtype)
    first, second = jnp.asarray(pairs[:, 0]), jnp.asarray(pairs[:, 1])
    # Column-major with the batch last: a rotation is elementwise over (k, batch).
    columns = jnp.transpose(a, (2, 1, 0))
    v_columns = jnp.broadcast_to(jnp.eye(n, dtype=dtype)[:, :, None], (n, n, batch))

    def rotate(pair, carry):
        columns, v_columns, worst = carry
        i, j = first[pair], second[pair]
        ai, aj = columns[i], columns[j]
        alpha, beta = jnp.sum(ai * ai, 0), jnp.sum(aj * aj, 0)
        gamma = jnp.sum(ai * aj, 0)
        norms = alpha * beta
        cosine_between = jnp.abs(gamma) / jnp.sqrt(jnp.where(norms > 0, norms, 1.0))
        act = (gamma != 0) & (cosine_between > tolerance)
        zeta = (beta - alpha) / (2 * jnp.where(act, gamma, 1.0))
        t = jnp.where(zeta >= 0, 1.0, -1.0) / (jnp.abs(zeta) + jnp.sqrt(1 + zeta**2))
        c = 1 / jnp.sqrt(1 + t**2)
        s = jnp.where(act, c * t, 0.0)
        c = jnp.where(act, c, 1.0)
        columns = columns.at[i].set(c * ai - s * aj).at[j].set(s * ai + c * aj)
        vi, vj = v_columns[i], v_columns[j]
        v_columns = v_columns.at[i].set(c * vi - s * vj).at[j].set(s * vi + c * vj)
        worst = jnp.maximum(worst, jnp.max(jnp.where(gamma != 0, cosine_between, 0.0)))
        return columns, v_columns, worst

    def sweep(carry):
        columns, v_columns, _, count = carry
        columns, v_columns, worst = jax.lax.fori_loop(
            0, len(pairs), rotate, (columns, v_columns, jnp.zeros((), dtype))
        )
        return columns, v_columns, worst, count + 1

    def unfinished(carry):
        _, _, worst, count = carry
        return (worst > tolerance) & (count < _MAX_SWEEPS)

    start = (columns, v_columns, jnp.asarray(jnp.inf, dtype), 0)
    columns, v_columns, _, _ = jax.lax.while_loop(unfinished, sweep, start)
    s = jnp.sqrt(jnp.sum(columns**2, axis=1)).T
    vt = jnp.transpose(v_columns, (2, 0, 1))
    order = jnp.argsort(-s, axis=1)
    return jnp.take_along_axis(s, order, 1), jnp.take_along_axis(vt, order[:, :, None], 1)


@jax.custom_batching.custom_vmap
def _small_svd(a):
    _, s, vt = jnp.linalg.svd(a, full_matrices=False)
    return s, vt


@_small_svd.def_vmap
def _small_svd_batched(axis_size, in_batched, a):
    if not in_batched[0]:
        a = jnp.broadcast_to(a, (axis_size, *a.shape))
    return batched_jacobi_svd(a), (True, True)


def singular_values_and_vt(a):
    """``(s, Vᵀ)`` of the thin SVD of ``a`` (``k × n``, ``k ≥ n``), singular values in
    descending order: LAPACK for one matrix, Jacobi rotations across a batch of small
    ones."""
    if a.shape[-1] <= MAX_SMALL_COLUMNS:
        return _small_svd(a)
    _, s, vt = jnp.linalg.svd(a, full_matrices=False)
    return s, vt
