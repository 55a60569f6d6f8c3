"""The fit as a building block of larger JAX programs: jit, lax.scan, an Optax loop."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize
from helpers import TIGHT, assert_same_optimum

import nlsq_fn as nf

X = np.linspace(0.1, 4.0, 60)
P0 = jnp.array([1.0, 0.5, 0.0])


class StretchedDecay(eqx.Module):
    """``a exp(-b x**h) + c`` with the stretch `h` a (differentiable) hyperparameter."""

    h: jax.Array

    def __call__(self, x, p):
        return p[0] * jnp.exp(-p[1] * x**self.h) + p[2]


def _noisy(h, seed, x=X):
    clean = StretchedDecay(jnp.asarray(h))(x, jnp.array([2.0, 1.3, 0.3]))
    return np.asarray(clean) + 0.02 * np.random.default_rng(seed).standard_normal(np.shape(x))


def _fit(h, y, x=X):
    model = StretchedDecay(h)
    data = nf.Data(x, y)
    return nf.solve(model, data, nf.init(model, data, P0, nf.Solver(**TIGHT)))


def test_inside_another_jit_with_pre_and_post_processing():
    y = _noisy(1.0, 0)

    @jax.jit
    def pipeline(y, scale):
        solution = _fit(jnp.asarray(1.0), y * scale)  # data made inside the program
        return solution.x / scale, solution.success

    params, success = pipeline(jnp.asarray(y), 2.0)
    eager = _fit(jnp.asarray(1.0), jnp.asarray(y) * 2.0)
    assert bool(success)
    assert_same_optimum(params * 2.0, eager.x, eager.cost, eager.cost, jac=eager.jac)


def test_inside_lax_scan_tracking_with_warm_starts():
    """Fit a sequence of datasets, each fit starting from the previous answer."""
    ys = jnp.asarray(np.stack([_noisy(1.0, seed) * (1 + 0.1 * seed) for seed in range(5)]))
    model = StretchedDecay(jnp.asarray(1.0))
    state = nf.init(model, nf.Data(X, ys[0]), P0, nf.Solver(**TIGHT))

    def step(params, y):
        start = eqx.tree_at(lambda s: s.params, state, params)
        solution = nf.solve(model, nf.Data(X, y), start)
        return solution.x, (solution.x, solution.nfev)

    _, (tracked, nfev) = jax.jit(lambda ys: jax.lax.scan(step, P0, ys))(ys)
    solve = eqx.filter_jit(nf.solve)
    params = P0
    for index, y in enumerate(ys):
        alone = solve(model, nf.Data(X, y), eqx.tree_at(lambda s: s.params, state, params))
        # The same optimum, not necessarily the same path: a termination test at its
        # threshold may flip with rounding.
        assert_same_optimum(tracked[index], alone.x, alone.cost, alone.cost, jac=alone.jac)
        params = alone.x
    assert int(nfev[-1]) < int(nfev[0])  # warm starts converge faster than the cold one


# --- bilevel: choose the hyperparameter h whose fit to training data best predicts
# held-out data. Inner problem: the nonlinear fit; outer: Adam on h through the fit. ---

Y_TRAIN = jnp.asarray(_noisy(1.3, 10))
X_VALID = np.linspace(0.15, 4.05, 40)
Y_VALID = jnp.asarray(_noisy(1.3, 11, X_VALID))


def validation_loss(h):
    solution = _fit(h, Y_TRAIN)
    prediction = StretchedDecay(h)(X_VALID, solution.x)
    return jnp.mean((prediction - Y_VALID) ** 2)


def test_bilevel_optax_loop_reaches_the_outer_minimum():
    optimizer = optax.adam(0.05)
    value_and_grad = jax.value_and_grad(validation_loss)

    @jax.jit
    def train(h):
        def step(carry, _):
            h, opt_state = carry
            loss, grad = value_and_grad(h)
            updates, opt_state = optimizer.update(grad, opt_state)
            return (optax.apply_updates(h, updates), opt_state), loss

        (h, _), losses = jax.lax.scan(step, (h, optimizer.init(h)), None, length=150)
        return h, losses

    h, losses = train(jnp.asarray(0.8))
    assert float(losses[-1]) < 0.5 * float(losses[0])
    # Reference: the outer objective minimised by derivative-free Brent on its values.
    loss = jax.jit(validation_loss)
    reference = scipy.optimize.minimize_scalar(
        lambda h: float(loss(h)), bounds=(0.8, 2.0), method="bounded", options={"xatol": 1e-8}
    )
    assert float(h) == pytest.approx(reference.x, abs=2e-3)
