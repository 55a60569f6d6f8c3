"""Chunked evaluation (`Solver(chunk_size=...)`) gives the unchunked fit.

The chunked path folds each chunk's residuals and Jacobian rows into the n-sized summary
and never forms the m x n Jacobian; in exact arithmetic it is the same computation, so
both reach the same optimum to what the fit resolves (`helpers.assert_same_optimum`), along
the same path, with the same ``JᵀJ``. Chunk
sizes are chosen so that the last chunk overlaps the previous one (the overlap must be
counted once) and so that one case has a single chunk.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from helpers import FnModel, assert_same_optimum, exp_decay, solve, two_gaussians_baseline
from jax.flatten_util import ravel_pytree

import nlsq_fn as nf


def _exp_problem(m=203, seed=0):
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 5, m)
    y = np.asarray(exp_decay(x, np.array([3.0, 1.2, 0.4]))) + 0.05 * rng.standard_normal(m)
    return x, y, np.array([1.0, 0.5, 0.0])


def _outlier_problem(m=150):
    rng = np.random.default_rng(8)
    x = np.linspace(0, 10, m)
    truth = np.array([3.0, 3.0, 0.8, 2.0, 6.5, 1.2, 0.2, 0.01])
    y = np.asarray(two_gaussians_baseline(x, truth)) + 0.05 * rng.standard_normal(m)
    y[rng.choice(m, 15, replace=False)] += 2.0
    return x, y, np.array([2.5, 3.2, 1.0, 2.5, 6.3, 1.0, 0.0, 0.0])


def _both(model_fn, data, p0, chunk_size, **options):
    model = FnModel(model_fn)
    plain = solve(model, data, nf.init(model, data, p0, nf.Solver(**options)))
    chunked_solver = nf.Solver(chunk_size=chunk_size, **options)
    chunked = solve(model, data, nf.init(model, data, p0, chunked_solver))
    return plain, chunked


def _assert_same(plain, chunked):
    # Chunked sums round differently from one-shot ones: compare to what the fit resolves.
    assert_same_optimum(
        ravel_pytree(chunked.x)[0],
        ravel_pytree(plain.x)[0],
        chunked.cost,
        plain.cost,
        jac=plain.jac,
    )
    # (Not the same path: a termination test at its threshold may flip with rounding.)
    assert bool(chunked.success) and bool(plain.success)
    assert chunked.jac is None
    # The chunked summary is JᵀJ of the (loss-scaled) Jacobian the plain fit returns.
    jtj = plain.jac.T @ plain.jac
    # (The chunked one is evaluated at its own, nearly equal, optimum.)
    np.testing.assert_allclose(chunked.factor.T @ chunked.factor, jtj, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(plain.factor.T @ plain.factor, jtj, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "strategy, factorization",
    [(nf.TRF(), "qr"), (nf.LevenbergMarquardt(), "normal")],
    ids=["trf-qr", "lm-normal"],
)
def test_chunked_equals_unchunked(strategy, factorization):
    x, y, p0 = _exp_problem()
    plain, chunked = _both(
        exp_decay,
        nf.Data(x, y),
        jnp.asarray(p0),
        64,
        strategy=strategy,
        factorization=factorization,
    )
    assert bool(plain.success)
    _assert_same(plain, chunked)


@pytest.mark.extended
def test_chunked_bounds_sigma_mask():
    x, y, p0 = _exp_problem(seed=1)
    sigma = 0.03 + 0.04 * np.random.default_rng(2).random(x.size)
    mask = np.ones(x.size, bool)
    mask[::7] = False
    y[::7] = 1e3  # garbage at masked points must not matter
    data = nf.Data(x, y, sigma=sigma, mask=mask)
    bounds = (np.array([0.0, 0.0, -1.0]), np.array([2.8, 10.0, 1.0]))
    plain, chunked = _both(exp_decay, data, jnp.asarray(p0), 50, bounds=bounds)
    assert int(plain.active_mask[0]) == 1  # the upper bound on the amplitude is active
    _assert_same(plain, chunked)
    np.testing.assert_array_equal(chunked.active_mask, plain.active_mask)


@pytest.mark.extended
def test_chunked_robust_loss():
    x, y, p0 = _outlier_problem()
    plain, chunked = _both(
        two_gaussians_baseline, nf.Data(x, y), jnp.asarray(p0), 40, loss=nf.Cauchy(f_scale=0.1)
    )
    _assert_same(plain, chunked)


@pytest.mark.extended
def test_chunked_pytree_params_and_inputs_single_chunk():
    """Two input columns as a dict, parameters as a dict; the chunk covers everything."""
    rng = np.random.default_rng(4)
    m = 90
    inputs = {"t": np.linspace(0, 3, m), "u": rng.random(m)}
    y = 2.0 * np.exp(-0.7 * inputs["t"]) + 0.5 * inputs["u"] + 0.01 * rng.standard_normal(m)

    def model(x, p):
        return p["a"] * jnp.exp(-p["k"] * x["t"]) + p["c"] * x["u"]

    p0 = {"a": jnp.asarray(1.0), "k": jnp.asarray(1.0), "c": jnp.asarray(0.0)}
    plain, chunked = _both(model, nf.Data(inputs, y), p0, 1000)
    _assert_same(plain, chunked)


@pytest.mark.extended
def test_chunked_two_dimensional_y():
    """Images: chunks run along the first axis of y (rows) and of x."""
    rng = np.random.default_rng(5)
    rows, cols = np.meshgrid(np.arange(23.0), np.arange(9.0), indexing="ij")

    def model(x, p):
        return p[0] * jnp.exp(-((x[0] - p[1]) ** 2 + (x[1] - p[2]) ** 2) / 20.0)

    x = (rows, cols)
    y = np.asarray(model(x, np.array([3.0, 11.0, 4.0]))) + 0.01 * rng.standard_normal(rows.shape)
    plain, chunked = _both(model, nf.Data(x, y), jnp.array([2.0, 10.0, 5.0]), 5)
    _assert_same(plain, chunked)


def test_chunk_size_rejects_inputs_without_a_point_axis():
    x, y, p0 = _exp_problem()

    def model(x, p):
        return p[0] * jnp.exp(-p[1] * x[0]) + x[1]

    data = nf.Data((x, np.asarray(0.5)), y)
    with pytest.raises(ValueError, match="leading axis"):
        nf.init(model, data, p0, nf.Solver(chunk_size=32))
    with pytest.raises(ValueError, match="positive"):
        nf.init(exp_decay, nf.Data(x, y), p0, nf.Solver(chunk_size=0))


def test_chunked_fit_is_differentiable_like_the_unchunked_one():
    """Implicit differentiation through the chunked fit (w.r.t. the data)."""
    x, y, p0 = _exp_problem(m=120)
    model = FnModel(exp_decay)

    @jax.jit
    def tangents(y, tangent):
        plain = jax.jvp(lambda y: fitted(y, None), (y,), (tangent,))[1]
        chunked = jax.jvp(lambda y: fitted(y, 32), (y,), (tangent,))[1]
        return plain, chunked

    def fitted(y, chunk_size):
        data = nf.Data(x, y)
        state = nf.init(model, data, jnp.asarray(p0), nf.Solver(chunk_size=chunk_size))
        return nf.solve(model, data, state).x

    tangent = jnp.asarray(np.random.default_rng(6).standard_normal(x.size))
    plain, chunked = tangents(jnp.asarray(y), tangent)
    np.testing.assert_allclose(chunked, plain, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("bounded", [False, True], ids=["unbounded", "bounded"])
def test_benchmark_configuration_matches_scipy(bounded):
    """The configuration the benchmarks time for large data (TRF, ``factorization="normal"``,
    chunks) reaches SciPy's optimum."""
    x, y, p0 = _exp_problem(m=3000, seed=9)
    bounds = (np.array([0.0, 0.0, -1.0]), np.array([2.9, 10.0, 1.0])) if bounded else None
    solver = nf.Solver(
        factorization="normal", chunk_size=256, bounds=bounds, ftol=1e-10, xtol=1e-10, gtol=1e-10
    )
    model = FnModel(exp_decay)
    data = nf.Data(x, y)
    ours = solve(model, data, nf.init(model, data, jnp.asarray(p0), solver))
    reference = scipy.optimize.least_squares(
        lambda p: p[0] * np.exp(-p[1] * x) + p[2] - y,
        p0,
        bounds=bounds if bounded else (-np.inf, np.inf),
        ftol=1e-10,
        xtol=1e-10,
        gtol=1e-10,
    )
    assert bool(ours.success), ours.message
    np.testing.assert_allclose(np.asarray(ours.x), reference.x, rtol=1e-6)
    np.testing.assert_allclose(float(ours.cost), reference.cost, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(ours.active_mask), reference.active_mask)
    if bounded:
        assert reference.active_mask[0] == 1  # the amplitude's upper bound is active
