"""The R factor of the small matrices of a batch of fits, in operations that vectorise.

A `vmap`-ed fit takes, at every evaluation and for every member, the R factor of its
``m × n`` Jacobian (LAPACK's `geqrf`, one call per member, paying a call's fixed
overhead each time, which for few columns costs more than the arithmetic). Householder
reflections written in `jax.numpy`, with the batch as the last, contiguous axis, give
the same factor up to the signs of its rows (``RᵀR = JᵀJ`` either way) for the whole
batch at once. A single, unbatched matrix keeps LAPACK: the choice is made by a vmap
rule (`jax.custom_batching.custom_vmap`), so the same code serves `solve` and
`vmap(solve)`. (The SVDs of the strategies' subproblems, likewise, are
`_strategies/small_linalg.py`'s.)
"""

import jax
import jax.numpy as jnp

# Householder reflections for the R factor: n of them, each O(m n) per member; above
# this many columns LAPACK's per-member call is the cheaper one.
MAX_SMALL_QR_COLUMNS = 8


def batched_householder_r(a):
    """The ``n × n`` R factor of every ``a[b]`` (``m × n``, ``m ≥ n``), as LAPACK's
    `geqrf` computes it: reflection ``k`` maps column ``k`` below the diagonal onto
    ``-sign(a_kk) ‖a_k‖ e_k``."""
    _, m, n = a.shape
    dtype = a.dtype
    # Columns with the batch last: every operation is elementwise over (rows, batch).
    columns = [a[:, :, j].T for j in range(n)]
    rows = []
    for k in range(n):
        x = columns[k][k:]
        head = x[0]
        below = jnp.sum(x[1:] * x[1:], axis=0)
        # As LAPACK's `dlarfg`: nothing below the diagonal, no reflection (tau = 0).
        reflect = below > 0
        norm = jnp.sqrt(head * head + below)
        alpha = -jnp.where(head >= 0, 1.0, -1.0).astype(dtype) * norm
        v = x.at[0].add(-alpha)
        v_norm2 = jnp.where(reflect, jnp.sum(v * v, axis=0), 1.0)
        tau = jnp.where(reflect, 2 / v_norm2, 0.0)
        row = [jnp.zeros_like(head)] * k + [jnp.where(reflect, alpha, head)]
        for j in range(k + 1, n):
            y = columns[j][k:]
            y = y - (tau * jnp.sum(v * y, axis=0)) * v
            columns[j] = jnp.concatenate([columns[j][:k], y])
            row.append(y[0])
        rows.append(jnp.stack(row, axis=1))  # (batch, n)
    return jnp.stack(rows, axis=1)  # (batch, n, n)


@jax.custom_batching.custom_vmap
def _small_r(a):
    return jnp.linalg.qr(a, mode="r")


@_small_r.def_vmap
def _small_r_batched(axis_size, in_batched, a):
    if not in_batched[0]:
        a = jnp.broadcast_to(a, (axis_size, *a.shape))
    return batched_householder_r(a), True


def r_factor(a):
    """The R factor of ``a`` (``m × n``, ``m ≥ n``): LAPACK for one matrix, Householder
    reflections across a batch of matrices of few columns."""
    if a.shape[-1] <= MAX_SMALL_QR_COLUMNS and a.shape[-2] >= a.shape[-1]:
        return _small_r(a)
    return jnp.linalg.qr(a, mode="r")
