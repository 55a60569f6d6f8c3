"""The batched Jacobi SVD and Householder R factor against LAPACK's (NumPy's) on the
matrices the strategies factorise, and the vmap rules that choose them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nlsq_fn._evaluation.small_qr import (
    MAX_SMALL_QR_COLUMNS,
    batched_householder_r,
    r_factor,
)
from nlsq_fn._strategies.small_linalg import (
    MAX_SMALL_COLUMNS,
    batched_jacobi_svd,
    singular_values_and_vt,
)


def _matrices(rng, batch, k, n):
    a = rng.standard_normal((batch, k, n))
    a[0] *= 10.0 ** np.arange(n)  # columns scaled over n decades
    a[1, :, -1] = a[1, :, 0]  # rank deficient
    a[2] = 0.0
    a[3, :, 0] *= 1e-9  # one tiny singular value
    return a


# The default run: one column, two (the first rotation) and the limit; the sizes between
# in CI's extended step (each size compiles its own unrolled sweeps).
DEFAULT_SVD_COLUMNS = (1, 2, MAX_SMALL_COLUMNS)


@pytest.mark.parametrize(
    "n",
    [
        pytest.param(n, marks=[] if n in DEFAULT_SVD_COLUMNS else [pytest.mark.extended])
        for n in range(1, MAX_SMALL_COLUMNS + 1)
    ],
)
@pytest.mark.parametrize("rows", ["square", "augmented"])
def test_jacobi_svd_matches_lapack(n, rows):
    rng = np.random.default_rng(n)
    k = n if rows == "square" else 2 * n
    a = _matrices(rng, 16, k, n)
    s, vt = map(np.asarray, jax.jit(batched_jacobi_svd)(jnp.asarray(a)))
    eps = np.finfo(np.float64).eps
    for member, s_member, vt_member in zip(a, s, vt, strict=True):
        reference = np.linalg.svd(member, compute_uv=False)
        top = max(reference[0], 1e-300)
        assert np.all(np.diff(s_member) <= 0)
        np.testing.assert_allclose(s_member, reference, rtol=0, atol=50 * n * eps * top)
        np.testing.assert_allclose(vt_member @ vt_member.T, np.eye(n), atol=50 * n * eps)
        # A V = U S: the rotated columns are orthogonal with norms s.
        rotated = member @ vt_member.T
        np.testing.assert_allclose(
            rotated.T @ rotated, np.diag(s_member**2), atol=50 * n * eps * top**2
        )


def test_float32():
    a = _matrices(np.random.default_rng(0), 8, 8, 4).astype(np.float32)
    s, vt = batched_jacobi_svd(jnp.asarray(a))
    assert s.dtype == jnp.float32 and vt.dtype == jnp.float32
    for member, s_member in zip(a, np.asarray(s), strict=True):
        reference = np.linalg.svd(member.astype(np.float64), compute_uv=False)
        np.testing.assert_allclose(s_member, reference, atol=1e-5 * max(reference[0], 1e-30))


def test_vmap_rule_replaces_lapack_only_when_batched():
    a = jnp.asarray(np.random.default_rng(1).standard_normal((5, 6, 3)))
    single = str(jax.make_jaxpr(singular_values_and_vt)(a[0]))
    batched = str(jax.make_jaxpr(jax.vmap(singular_values_and_vt))(a))
    assert "svd" in single
    assert "svd" not in batched and "while" in batched
    for member, (s, vt) in zip(
        a, zip(*jax.vmap(singular_values_and_vt)(a), strict=True), strict=True
    ):
        s_single, vt_single = singular_values_and_vt(member)
        np.testing.assert_allclose(s, s_single, rtol=1e-13)
        np.testing.assert_allclose(np.abs(vt), np.abs(vt_single), atol=1e-12)
    # Matrices with more columns than the limit keep LAPACK when batched too.
    wide = jnp.ones((2, 8, MAX_SMALL_COLUMNS + 1))
    assert "svd" in str(jax.make_jaxpr(jax.vmap(singular_values_and_vt))(wide))


@pytest.mark.parametrize(
    "n", [1, 2, pytest.param(4, marks=pytest.mark.extended), MAX_SMALL_QR_COLUMNS]
)  # (4: a size between, in CI's extended step)
@pytest.mark.parametrize("m_over_n", [1, 10])
def test_householder_r_matches_lapack(n, m_over_n):
    """LAPACK's R (NumPy's `qr`, the same Householder convention) to rounding; where
    the matrix is rank deficient R is not unique, and only ``RᵀR = AᵀA`` is checked."""
    rng = np.random.default_rng(10 * n + m_over_n)
    a = _matrices(rng, 12, m_over_n * n, n)
    a[4, :, 0] *= -1.0  # a negative diagonal on the way
    r = np.asarray(jax.jit(batched_householder_r)(jnp.asarray(a)))
    eps = np.finfo(np.float64).eps
    for index, (member, r_member) in enumerate(zip(a, r, strict=True)):
        scale = max(np.linalg.norm(member), 1e-300)
        assert np.all(np.tril(r_member, -1) == 0)
        gram = member.T @ member
        np.testing.assert_allclose(r_member.T @ r_member, gram, atol=50 * n * eps * scale**2)
        if index != 1 or n == 1:  # (member 1 is rank deficient)
            reference = np.linalg.qr(member, mode="r")
            np.testing.assert_allclose(r_member, reference, atol=50 * n * eps * scale)


def test_r_factor_vmap_rule_replaces_lapack_only_when_batched():
    a = jnp.asarray(np.random.default_rng(2).standard_normal((5, 9, 3)))
    single = str(jax.make_jaxpr(r_factor)(a[0]))
    batched = str(jax.make_jaxpr(jax.vmap(r_factor))(a))
    assert " qr[" in single  # JAX's QR primitive: LAPACK
    assert " qr[" not in batched
    for member, r in zip(a, jax.vmap(r_factor)(a), strict=True):
        np.testing.assert_allclose(r, r_factor(member), atol=1e-13)
    wide = jnp.ones((2, 12, MAX_SMALL_QR_COLUMNS + 1))
    assert " qr[" in str(jax.make_jaxpr(jax.vmap(r_factor))(wide))
