"""`odr_solve`, the pure ODR fit: under `jax.jit` and `jax.vmap` it gives what separate
`nf.odr` fits give (which the tests of `test_structured.py` hold to `scipy.odr`), and
its implicit derivatives with respect to `x`, `y` and the weights equal central finite
differences of `nf.odr` fits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import decay

import nlsq_fn as nf

TIGHT = dict(ftol=1e-12, xtol=1e-12, gtol=1e-12)


def decay_vector(x, beta):
    return beta[0] * jnp.exp(-beta[1] * x) + beta[2]


def points(seed: int, m: int = 20):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 4.0, m)
    sx, sy = 0.05 * (1 + rng.random(m)), 0.02 * (1 + rng.random(m))
    y = np.asarray(decay(x, 2.0, 0.6, 0.3)) + sy * rng.normal(size=m)
    return x + sx * rng.normal(size=m), y, sx, sy


BETA0 = np.array([1.0, 1.0, 0.0])


def assert_close(actual, expected, rtol=1e-8, atol=1e-12):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


def test_odr_solve_under_jit_equals_odr():
    x, y, sx, sy = points(0)
    solver = nf.Solver(**TIGHT)
    found = jax.jit(
        lambda x, y, sx, sy: nf.odr_solve(decay_vector, x, y, BETA0, solver, sigma_x=sx, sigma_y=sy)
    )(x, y, sx, sy)
    expected = nf.odr(decay, x, y, BETA0, sigma_x=sx, sigma_y=sy, **TIGHT)
    assert bool(found.success)
    assert_close(found.beta, expected.beta)
    assert_close(found.sd_beta, expected.sd_beta)
    assert_close(found.delta, expected.delta, atol=1e-12)
    assert_close(found.eps, expected.eps, atol=1e-12)
    assert_close(found.res_var, expected.res_var)
    assert_close(found.pcov(), expected.pcov)
    assert_close(found.pcov(absolute_sigma=True), expected.cov_beta)


def test_odr_solve_checks_its_points():
    with pytest.raises(ValueError, match="same number of points; got 5 and 4"):
        nf.odr_solve(decay_vector, np.arange(5.0), np.ones(4), BETA0)


@pytest.mark.parametrize("method", ["trf", "lm"])  # (driven step by step / compiled)
def test_odr_of_a_model_not_finite_at_the_start_is_named(method):
    def root(x, a, b):
        return jnp.sqrt(a) * x + b

    with pytest.raises(ValueError, match="NaN or inf at p0"):
        nf.odr(root, np.arange(5.0), np.arange(5.0), [-1.0, 0.0], method=method)


@pytest.mark.extended  # (~15 s: a batch, separate fits, gradients, finite differences)
def test_odr_solve_batch_and_gradients():
    """A vmapped batch of ODR fits (with a bound on ``c``) = separate `nf.odr` fits, and
    ``d b / d (x, y, sigma_x, sigma_y)`` = central finite differences of `nf.odr`."""
    problems = [points(seed) for seed in (1, 2, 3)]
    x, ys, sx, sy = (
        problems[0][0],
        np.stack([p[1] for p in problems]),
        problems[0][2],
        problems[0][3],
    )
    solver = nf.Solver(bounds=([-np.inf, -np.inf, -1.0], [np.inf, np.inf, 1.0]), **TIGHT)

    def fit(x, y, sx, sy):
        return nf.odr_solve(decay_vector, x, y, BETA0, solver, sigma_x=sx, sigma_y=sy)

    batch = jax.jit(jax.vmap(fit, in_axes=(None, 0, None, None)))(x, ys, sx, sy)
    assert batch.beta.shape == (3, 3) and batch.delta.shape == (3, x.size)
    bounds = {"c": (-1.0, 1.0)}
    for i, y in enumerate(ys):
        alone = nf.odr(decay, x, y, BETA0, sigma_x=sx, sigma_y=sy, bounds=bounds, **TIGHT)
        assert bool(batch.success[i])
        assert_close(batch.beta[i], alone.beta)
        assert_close(batch.sd_beta[i], alone.sd_beta)
        assert_close(batch.delta[i], alone.delta, atol=1e-12)

    y = ys[0]
    gradients = jax.grad(lambda *args: fit(*args).beta[1], argnums=(0, 1, 2, 3))(x, y, sx, sy)
    h = 1e-6

    def moved(which, point, sign):
        args = [a.copy() for a in (x, y, sx, sy)]
        args[which][point] += sign * h
        x_, y_, sx_, sy_ = args
        return nf.odr(decay, x_, y_, BETA0, sigma_x=sx_, sigma_y=sy_, bounds=bounds, **TIGHT).beta[
            1
        ]

    for which, point in [(0, 3), (1, 3), (1, 15), (2, 7), (3, 11)]:
        difference = (moved(which, point, 1) - moved(which, point, -1)) / (2 * h)
        assert abs(difference) > 1e-4  # (a derivative worth comparing)
        assert_close(gradients[which][point], difference, rtol=1e-5, atol=1e-9)
