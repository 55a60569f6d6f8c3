"""Across a batch of small float64 fits, the R factor and the trust-region subproblem
come from the normal equations (`nlsq_fn._evaluation.normal_equations`,
`batched_subproblem`) where each member's conditioning allows, else from the QR and SVD
route: per member the same as a fit alone."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from helpers import assert_same_optimum

import nlsq_fn as nf
from nlsq_fn._evaluation.linearize import factorize
from nlsq_fn._evaluation.normal_equations import applies, gram_r_factor, loop_r_factor
from nlsq_fn._strategies.batched_subproblem import (
    cholesky_subproblem,
    trust_region_subproblem,
)

TRF_OPTIONS = dict(rtol=0.01, gauss_newton_slack=1.0, to_boundary=True)
LM_OPTIONS = dict(rtol=0.1, gauss_newton_slack=1.1, to_boundary=False, last_evaluated=True)


def _options_tuple(options):
    keys = ["rtol", "gauss_newton_slack", "to_boundary", "last_evaluated"]
    return tuple(options.get(key, False) for key in keys)


def _subproblems(size, n=4, seed=0):
    """Well-conditioned but badly scaled factors, gradients, radii (some members take
    the Gauss–Newton step, some solve the secular equation) and previous alphas."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((size, n, n)) * np.logspace(-2, 2, n)
    g = rng.standard_normal((size, n))
    radius = np.where(np.arange(size) % 3 == 0, 1e6, 10 ** rng.uniform(-3, 0, size))
    alpha = np.where(np.arange(size) % 4 == 0, 0.3, 0.0)
    return a, g, radius, alpha, np.full(size, 40)


def _ill_conditioned(a):
    """`a` with its last column nearly a multiple of the first (scaled cond ~1e7)."""
    a = a.copy()
    a[:, -1] = 3 * a[:, 0] + 1e-7 * np.abs(a[:, 0]).max() * np.arange(a.shape[0])
    return a


@pytest.mark.parametrize("options", [TRF_OPTIONS, LM_OPTIONS], ids=["trf", "lm"])
@pytest.mark.parametrize("bounded", [False, pytest.param(True, marks=pytest.mark.extended)])
def test_batched_subproblem_is_each_members_svd_solution(options, bounded):
    """The batch's step and Levenberg–Marquardt parameter are those of the SVD route
    that one fit takes (LAPACK), member by member, whether the member takes the
    normal equations (every one but the last) or falls back (the last)."""
    a, g, radius, alpha, n_rows = _subproblems(24)
    a[-1] = _ill_conditioned(a[-1])
    diag = np.abs(np.random.default_rng(1).standard_normal(g.shape)) if bounded else None
    if bounded:
        diag[-1] = 0.0  # (a diagonal term would make the last member well conditioned)

    def one(a, g, radius, alpha, n_rows, diag):
        return trust_region_subproblem(a, g, radius, alpha, n_rows, diag=diag, **options)

    in_axes = (0, 0, 0, 0, 0, 0 if bounded else None)
    batched = jax.jit(jax.vmap(one, in_axes=in_axes))(a, g, radius, alpha, n_rows, diag)
    zeros = np.zeros(g.shape[1])
    flags = [
        bool(
            cholesky_subproblem(
                a[i],
                diag[i] if bounded else zeros,
                g[i],
                radius[i],
                alpha[i],
                n_rows[i],
                _options_tuple(options),
            )[2]
        )
        for i in range(len(a))
    ]
    assert all(flags[:-1]) and not flags[-1], "the last member falls back, no other"
    for i in range(len(a)):
        p, par = one(a[i], g[i], radius[i], alpha[i], n_rows[i], diag[i] if bounded else None)
        np.testing.assert_allclose(batched[0][i], p, rtol=1e-9, atol=1e-12 * np.abs(p).max())
        np.testing.assert_allclose(batched[1][i], par, rtol=1e-8, atol=1e-300)


def test_batched_r_factor_is_the_qr_factor_and_ill_conditioned_members_fall_back():
    """`loop_r_factor` across a batch: ``rᵀr = JᵀJ`` and, up to the signs of its rows,
    LAPACK's R; a member whose ``JᵀJ`` would lose more than half the digits is not
    safe for the normal equations and gets its R from Householder reflections: as
    exact as LAPACK's, where the Cholesky factor of ``JᵀJ`` would be off by ~1e-4."""
    rng = np.random.default_rng(2)
    jac = rng.standard_normal((6, 40, 4)) * np.array([1e-3, 1.0, 1e3, 10.0])
    jac[-1, :, 3] = jac[-1, :, 0] * 1e4 * (1 + 1e-6 * rng.standard_normal(40))
    _, safe = gram_r_factor(jnp.asarray(jac))
    assert np.all(np.asarray(safe)[:-1]) and not bool(safe[-1])
    r = np.asarray(jax.jit(jax.vmap(loop_r_factor))(jnp.asarray(jac)))
    for member, factor in zip(jac, r, strict=True):
        lapack = scipy.linalg.qr(member, mode="r")[0][:4]
        signs = np.sign(np.diag(factor) * np.diag(lapack))
        np.testing.assert_allclose(
            factor * signs[:, None], lapack, rtol=0, atol=1e-12 * np.abs(lapack).max()
        )


def test_float32_and_many_parameters_keep_the_qr_and_svd_route():
    assert applies(np.float64, 4) and applies(np.float64, 8)
    assert not applies(np.float32, 4) and not applies(np.float64, 9)


def polynomial(x, p):
    """A parabola and a sine: over points far from the origin the parabola's columns
    are nearly parallel (``cond(JᵀJ)`` ~1e11 with the columns scaled)."""
    return p[0] + p[1] * x + p[2] * x**2 + jnp.sin(p[3] * x)


def test_a_batch_mixing_safe_and_ill_conditioned_members_matches_separate_fits():
    """A batch in which most members are well conditioned (the normal equations) and
    some, whose points sit far from the origin, are not (the QR and SVD route): every
    member's optimum, status and evaluation count are those of its fit alone."""
    rng = np.random.default_rng(4)
    size, m = 12, 30
    offsets = np.where(np.arange(size) % 4 == 3, 30.0, 0.0)  # members 3, 7, 11
    x = np.linspace(0.0, 2.0, m)[None, :] + offsets[:, None]
    truth = np.array([1.0, -0.5, 0.2, 0.8])
    y = np.stack([np.asarray(polynomial(xi, truth)) for xi in x])
    y = y + 0.01 * rng.standard_normal(y.shape)
    data = nf.Data(x, y)
    start = jnp.array([0.5, 0.0, 0.0, 0.5])
    state = nf.init_batch(polynomial, data, start)
    batch = nf.solve_batch(polynomial, data, state)
    solve = eqx.filter_jit(nf.solve)
    for index in range(size):
        member = nf.Data(x[index], y[index])
        alone = solve(polynomial, member, nf.init(polynomial, member, start))
        _, safe = gram_r_factor(alone.jac[None])
        assert bool(safe[0]) == (offsets[index] == 0), "which members take which route"
        assert int(batch.status[index]) == int(alone.status) and bool(alone.success)
        assert int(batch.nfev[index]) == int(alone.nfev), f"member {index}"
        assert_same_optimum(
            batch.x[index],
            alone.x,
            batch.cost[index],
            alone.cost,
            jac=alone.jac,
            err_msg=f"member {index}",
        )


def test_an_explicit_qr_keeps_the_qr_in_a_batch():
    """``factorization="qr"`` is a request: the batched loop's R is then QR's, signs
    and all (as LAPACK's), while ``"auto"`` takes the Cholesky factor of ``JᵀJ``
    (positive diagonal)."""
    jac = np.random.default_rng(5).standard_normal((8, 40, 4))
    qr = np.asarray(jax.vmap(lambda j: factorize(j, "qr", True))(jnp.asarray(jac)))
    auto = np.asarray(jax.vmap(lambda j: factorize(j, "auto", True))(jnp.asarray(jac)))
    lapack = np.stack([scipy.linalg.qr(member, mode="r")[0][:4] for member in jac])
    assert np.any(np.diagonal(lapack, axis1=1, axis2=2) < 0)
    np.testing.assert_allclose(qr, lapack, rtol=0, atol=1e-12 * np.abs(lapack).max())
    assert np.all(np.diagonal(auto, axis1=1, axis2=2) > 0)
    np.testing.assert_allclose(np.abs(auto), np.abs(lapack), atol=1e-12 * np.abs(lapack).max())
