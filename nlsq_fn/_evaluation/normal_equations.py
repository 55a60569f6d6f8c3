"""The normal equations of a batch of small fits, in elementwise arithmetic, where their
conditioning makes them as good as the QR and SVD route.

Each iteration of a `vmap`-ed batch of ``n``-parameter fits takes every member's R factor
of its ``m × n`` Jacobian and then the SVD of an ``n × n`` matrix (Householder reflections
and Jacobi rotations vectorised over the batch, `nlsq_fn._strategies.small_linalg`). For
small ``n`` the same quantities follow from ``G = JᵀJ`` with far less arithmetic: one
product per pair of columns, and Cholesky factorizations of ``n × n`` matrices, written
out entry by entry so that every operation is elementwise over the batch (XLA fuses them
into a few loops). The trust-region subproblem's secular equation needs ``‖p(α)‖`` and its
derivative, ``p(α) = -(H + αI)⁻¹g``: from the SVD ``H = V diag(s²) Vᵀ`` as SciPy does, or
from the Cholesky factor of ``H + αI``, the same formulas.

Forming ``JᵀJ`` squares the condition number, so each member is checked: with its columns
scaled to unit norm, the Cholesky factor ``u`` of the scaled Gram matrix must have
``‖u‖_F² ‖u⁻¹‖_F² <= 1 / sqrt(eps)`` (an upper bound of ``cond(JᵀJ)`` in those scaled
variables: at least half the digits survive in every direction, as
`nlsq_fn._evaluation.linearize.normal_root_if_safe` asks). A member that fails takes the QR
or SVD route; a batch with none that fails never computes it (`jax.lax.cond` on the whole
batch). Only float64: in float32 the threshold would send most members back.
"""

import jax
import jax.numpy as jnp
import numpy as np

from .small_qr import batched_householder_r, r_factor

# Entry-by-entry Cholesky is n³/6 operations per member, compiled into the program: few
# columns only.
MAX_NORMAL_COLUMNS = 8


def applies(dtype, n: int) -> bool:
    """Whether a batch of `dtype` with `n` parameters takes the normal equations."""
    return np.dtype(dtype) == np.float64 and 1 <= n <= MAX_NORMAL_COLUMNS


def _sum(terms, start):
    for term in terms:
        start = start + term
    return start


def cholesky(a, n: int):
    """The upper factor ``u`` (``uᵀu = a``, a list of rows, entries elementwise over the
    batch) of the symmetric `a` (read above the diagonal), and whether every pivot was
    positive (else the factor is garbage)."""
    u: list[list] = [[None] * n for _ in range(n)]
    positive = None
    for i in range(n):
        pivot2 = _sum((-(u[k][i] ** 2) for k in range(i)), a[i][i])
        ok = pivot2 > 0
        positive = ok if positive is None else positive & ok
        pivot = jnp.sqrt(jnp.where(ok, pivot2, 1.0))
        u[i][i] = pivot
        for j in range(i + 1, n):
            u[i][j] = _sum((-u[k][i] * u[k][j] for k in range(i)), a[i][j]) / pivot
    return u, positive


def solve_upper(u, b, n: int):
    """``x`` with ``u x = b``."""
    x: list = [None] * n
    for i in reversed(range(n)):
        x[i] = _sum((-u[i][k] * x[k] for k in range(i + 1, n)), b[i]) / u[i][i]
    return x


def solve_upper_transposed(u, b, n: int):
    """``x`` with ``uᵀ x = b``."""
    x: list = [None] * n
    for i in range(n):
        x[i] = _sum((-u[k][i] * x[k] for k in range(i)), b[i]) / u[i][i]
    return x


def frobenius_condition2(u, n: int):
    """``‖u‖_F² ‖u⁻¹‖_F²`` of the upper triangular `u` (``>= cond(uᵀu)``)."""
    inverse_norm2 = 0.0
    for j in range(n):
        column = solve_upper(u, [1.0 if i == j else 0.0 for i in range(n)], n)
        inverse_norm2 = _sum((x**2 for x in column[: j + 1]), inverse_norm2)
    norm2 = _sum((u[i][j] ** 2 for i in range(n) for j in range(i, n)), 0.0)
    return norm2 * inverse_norm2


def scaled_cholesky(a, n: int):
    """The Cholesky factor of the symmetric positive `a` with its rows and columns scaled
    to a unit diagonal, the scales ``sqrt(a_ii)``, and whether the factor is safe: every
    pivot positive, finite, and the scaled matrix's condition (bound) at most
    ``1 / sqrt(eps)``."""
    scale = [jnp.sqrt(a[i][i]) for i in range(n)]
    safe_scale = [jnp.where(c > 0, c, 1.0) for c in scale]
    scaled = [
        [a[i][j] / (safe_scale[i] * safe_scale[j]) if j >= i else None for j in range(n)]
        for i in range(n)
    ]
    u, positive = cholesky(scaled, n)
    condition2 = frobenius_condition2(u, n)
    eps = jnp.finfo(condition2.dtype).eps
    safe = positive & (condition2 <= 1 / np.sqrt(eps)) & jnp.isfinite(condition2)
    for c in scale:
        safe = safe & (c > 0)
    return u, safe_scale, safe, condition2


def gram_r_factor(a):
    """For every ``a[b]`` (``m × n``, the batch first): an upper triangular ``r`` with
    ``rᵀr = aᵀa`` (the Cholesky factor of ``aᵀa``: the QR route's ``R`` up to the signs of
    its rows) and whether it is safe (`scaled_cholesky`)."""
    batch, _, n = a.shape
    # One batched product (XLA's dot) reads `a` once; sums per pair of columns would
    # read it n(n+1)/2 times.
    product = jnp.einsum("bmi,bmj->bij", a, a)
    gram = [[product[:, i, j] if j >= i else None for j in range(n)] for i in range(n)]
    u, scale, safe, _ = scaled_cholesky(gram, n)
    zero = jnp.zeros((batch,), a.dtype)
    rows = [
        jnp.stack([u[i][j] * scale[j] if j >= i else zero for j in range(n)], 1) for i in range(n)
    ]
    return jnp.stack(rows, axis=1), safe


@jax.custom_batching.custom_vmap
def loop_r_factor(a):
    """The R factor of ``a`` (``m × n``, ``m >= n``) in the fit's loop: LAPACK for one
    matrix; across a batch `gram_r_factor` where safe, else `r_factor`'s Householder
    reflections."""
    return jnp.linalg.qr(a, mode="r")


@loop_r_factor.def_vmap
def _loop_r_factor_batched(axis_size, in_batched, a):
    if not in_batched[0]:
        a = jnp.broadcast_to(a, (axis_size, *a.shape))
    if not applies(a.dtype, a.shape[-1]):
        return jax.vmap(r_factor)(a), True
    r, safe = gram_r_factor(a)
    # A member with NaN or inf gets NaN (as from LAPACK) and sends no batch the long way.
    finite = jnp.all(jnp.isfinite(a), axis=(1, 2))
    r = jnp.where(finite[:, None, None], r, jnp.nan)
    # Only a batch with an unsafe member pays for the reflections.
    return jax.lax.cond(
        jnp.all(safe | ~finite),
        lambda: r,
        lambda: jnp.where((safe | ~finite)[:, None, None], r, batched_householder_r(a)),
    ), True
