"""The functional core: pytrees, batching, masks, Jacobian modes, losses, float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from helpers import assert_same_optimum, exp_decay, solve

import nlsq_fn as nf

TIGHT = dict(ftol=1e-12, xtol=1e-12, gtol=1e-12)


def named_exp_decay(x, p):
    return p["amplitude"] * jnp.exp(-p["rate"] * x) + p["offset"]


def _decay_data(seed=0, n=60, noise=0.05):
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 4, n)
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + noise * rng.standard_normal(n)
    return x, y


@pytest.mark.extended
@pytest.mark.parametrize("strategy", [nf.TRF(), nf.LevenbergMarquardt()])
def test_pytree_parameters_match_flat(strategy):
    x, y = _decay_data()
    data = nf.Data(x, y)
    solver = nf.Solver(strategy=strategy, **TIGHT)
    flat = solve(exp_decay, data, nf.init(exp_decay, data, jnp.array([1.0, 0.5, 0.0]), solver))
    p0 = {"amplitude": 1.0, "rate": 0.5, "offset": 0.0}
    named = solve(named_exp_decay, data, nf.init(named_exp_decay, data, p0, solver))
    assert set(named.x) == set(p0)
    # Flat order is the pytree's: dict keys sorted (amplitude, offset, rate).
    assert_same_optimum(
        [named.x["amplitude"], named.x["rate"], named.x["offset"]],
        flat.x,
        named.cost,
        flat.cost,
        jac=flat.jac,
    )


def test_pytree_bounds_and_x_scale():
    x, y = _decay_data(1)
    data = nf.Data(x, y)
    p0 = {"amplitude": 1.0, "rate": 0.5, "offset": 0.7}
    lower = {"amplitude": 0.0, "rate": 0.0, "offset": 0.6}
    upper = {"amplitude": 10.0, "rate": 5.0, "offset": 2.0}
    solver = nf.Solver(
        bounds=(lower, upper), x_scale={"amplitude": 2.0, "rate": 1.0, "offset": 0.5}, **TIGHT
    )
    ours = solve(named_exp_decay, data, nf.init(named_exp_decay, data, p0, solver))
    reference = scipy.optimize.least_squares(
        lambda p: p[0] * np.exp(-p[1] * x) + p[2] - y,
        [1.0, 0.5, 0.7],
        bounds=([0, 0, 0.6], [10, 5, 2]),
        x_scale=[2.0, 1.0, 0.5],
        **TIGHT,
    )
    np.testing.assert_allclose(
        [ours.x["amplitude"], ours.x["rate"], ours.x["offset"]], reference.x, rtol=1e-6
    )
    assert ours.x["offset"] == pytest.approx(0.6)
    # Flat order is the pytree's: dict keys sorted (amplitude, offset, rate).
    np.testing.assert_array_equal(ours.active_mask, [0, -1, 0])


def _batch_of_decays(noise, count=500, seed=2):
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 4, 50)
    truth = np.stack(
        [rng.uniform(1, 4, count), rng.uniform(0.3, 3, count), rng.uniform(-1, 1, count)]
    )
    ys = truth[0][:, None] * np.exp(-truth[1][:, None] * x) + truth[2][:, None]
    return x, ys + noise * rng.standard_normal(ys.shape)


def _batched_and_separate(x, ys):
    solver = nf.Solver(ftol=1e-15, xtol=1e-15, gtol=1e-15)
    p0 = jnp.array([1.0, 1.0, 0.0])

    def fit(y):
        data = nf.Data(x, y)
        return nf.solve(exp_decay, data, nf.init(exp_decay, data, p0, solver))

    batched = jax.jit(jax.vmap(fit))(jnp.asarray(ys))
    single = jax.jit(fit)
    separate = [single(jnp.asarray(y)) for y in ys]
    return batched, jax.tree.map(lambda *leaves: np.stack(leaves), *separate)


@pytest.mark.extended
def test_vmap_over_500_datasets_equals_separate_fits():
    """Nearly noise-free data. Batched and single fits round differently, so they agree
    to what the algorithm resolves (see `assert_same_optimum`), not bit for bit. (Which
    test ends a fit at machine precision, `gtol` or `xtol`, and after how many steps, can
    differ with rounding, so status and nfev are not compared.)"""
    x, ys = _batch_of_decays(noise=1e-6)
    batched, separate = _batched_and_separate(x, ys)
    assert_same_optimum(
        batched.x, separate.x, batched.cost, separate.cost, jac=separate.jac, cost_rtol=1e-6
    )
    # Members stopped on their own criteria, not when the slowest one did.
    assert len(set(np.asarray(batched.nfev).tolist())) > 1
    assert all(batched.success)
    assert len(batched.message) == 500


def test_vmap_over_noisy_datasets_equals_separate_fits():
    """With 2% noise a trust-region method stops once cost changes reach rounding level
    (``eps * cost``), which resolves each parameter to about ``sqrt(eps * m)`` of its
    standard error; SciPy stops at the same level. Batched and single fits round
    differently (and differently on different machines), so they agree to that resolution,
    not bit for bit: parameters to 1e-4 standard errors, costs to 1e-10."""
    x, ys = _batch_of_decays(noise=0.02, count=200, seed=3)
    batched, separate = _batched_and_separate(x, ys)
    assert_same_optimum(batched.x, separate.x, batched.cost, separate.cost, jac=separate.jac)
    assert all(batched.success)


def test_mask_makes_padded_points_count_for_nothing():
    x, y = _decay_data(3, n=40)
    padded_x = np.concatenate([x, np.full(24, 7.0)])
    padded_y = np.concatenate([y, np.full(24, 1e6)])
    mask = np.arange(64) < 40
    p0 = jnp.array([1.0, 0.5, 0.0])
    plain = nf.Data(x, y)
    padded = nf.Data(padded_x, padded_y, mask=mask)
    a = solve(exp_decay, plain, nf.init(exp_decay, plain, p0, nf.Solver(**TIGHT)))
    b = solve(exp_decay, padded, nf.init(exp_decay, padded, p0, nf.Solver(**TIGHT)))
    assert_same_optimum(b.x, a.x, b.cost, a.cost, jac=a.jac)


@pytest.mark.extended
@pytest.mark.parametrize("strategy", [nf.TRF(), nf.LevenbergMarquardt()])
def test_jacobian_modes_agree(strategy):
    x, y = _decay_data(4)
    data = nf.Data(x, y, sigma=np.full(x.shape, 0.05))
    p0 = jnp.array([1.0, 0.5, 0.0])

    def analytic(x, p):
        e = jnp.exp(-p[1] * x)
        return jnp.stack([e, -p[0] * x * e, jnp.ones_like(x)], axis=1)

    results = [
        solve(
            exp_decay,
            data,
            nf.init(exp_decay, data, p0, nf.Solver(strategy=strategy, jac=jac, **TIGHT)),
        )
        for jac in ("fwd", "rev", analytic)
    ]
    for other in results[1:]:
        assert_same_optimum(other.x, results[0].x, other.cost, results[0].cost, jac=results[0].jac)
        np.testing.assert_allclose(other.jac, results[0].jac, rtol=1e-8, atol=1e-12)


class PseudoHuber(nf.AbstractLoss):
    """A user-defined loss: ``rho(z) = 2 (sqrt(1 + z) - 1)``, written out by hand."""

    f_scale: float = 1.0

    def rho_unscaled(self, z):
        root = jnp.sqrt(1 + z)
        return 2 * (root - 1), 1 / root, -0.5 / root**3


def test_user_defined_loss_matches_scipy_callable_loss():
    x, y = _decay_data(5)
    y = y.copy()
    y[::9] += 1.5
    data = nf.Data(x, y)
    solver = nf.Solver(loss=PseudoHuber(f_scale=0.2), **TIGHT)
    ours = solve(exp_decay, data, nf.init(exp_decay, data, jnp.array([1.0, 0.5, 0.0]), solver))

    def scipy_loss(z):
        root = np.sqrt(1 + z)
        return np.stack([2 * (root - 1), 1 / root, -0.5 / root**3])

    reference = scipy.optimize.least_squares(
        lambda p: p[0] * np.exp(-p[1] * x) + p[2] - y,
        [1.0, 0.5, 0.0],
        loss=scipy_loss,
        f_scale=0.2,
        **TIGHT,
    )
    np.testing.assert_allclose(ours.x, reference.x, rtol=1e-7)
    np.testing.assert_allclose(ours.cost, reference.cost, rtol=1e-7)


@pytest.mark.parametrize("strategy", [nf.TRF(), nf.LevenbergMarquardt()])
def test_non_finite_trial_points_are_rejected(strategy):
    """The model is NaN for rate > 2; from p0 the first full step lands there."""
    x = np.linspace(0, 3, 40)
    y = 2.0 * np.exp(-1.9 * x) + 0.1

    def guarded(x, p):
        return jnp.where(p[1] > 2.0, jnp.nan, exp_decay(x, p))

    data = nf.Data(x, y)
    p0 = jnp.array([1.0, 0.1, 0.0])
    solver = nf.Solver(strategy=strategy, **TIGHT)
    ours = solve(guarded, data, nf.init(guarded, data, p0, solver))
    assert bool(ours.success), ours.message
    assert np.all(np.isfinite(ours.x))
    np.testing.assert_allclose(ours.x, [2.0, 1.9, 0.1], rtol=1e-6)
    assert float(ours.cost) <= float(ours.initial_cost)


def test_float32_in_float32_out():
    x, y = _decay_data(6)
    data = nf.Data(x.astype(np.float32), y.astype(np.float32))
    p0 = jnp.array([1.0, 0.5, 0.0], dtype=jnp.float32)
    ours = solve(exp_decay, data, nf.init(exp_decay, data, p0, nf.Solver()))
    assert ours.x.dtype == jnp.float32
    assert ours.cost.dtype == jnp.float32
    assert bool(ours.success), ours.message
    reference = scipy.optimize.least_squares(
        lambda p: p[0] * np.exp(-p[1] * x) + p[2] - y, [1.0, 0.5, 0.0]
    )
    np.testing.assert_allclose(ours.x, reference.x, rtol=1e-3)


def test_status_and_message_are_scipys():
    x, y = _decay_data(7)
    data = nf.Data(x, y)
    capped = nf.init(exp_decay, data, jnp.array([1.0, 0.5, 0.0]), nf.Solver(max_nfev=3))
    ours = solve(exp_decay, data, capped)
    reference = scipy.optimize.least_squares(
        lambda p: p[0] * np.exp(-p[1] * x) + p[2] - y, [1.0, 0.5, 0.0], max_nfev=3
    )
    assert int(ours.status) == reference.status == 0
    assert ours.message == reference.message
    assert not bool(ours.success)
    assert int(ours.nfev) == reference.nfev
