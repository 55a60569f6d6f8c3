"""Batched fitting: ragged datasets padded into one call, and multi-start."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from helpers import assert_same_optimum, exp_decay

import nlsq_fn as nf

TOLERANCES = dict(ftol=1e-10, xtol=1e-10, gtol=1e-10)
P0 = jnp.array([1.0, 0.5, 0.0])


def _ragged(n_datasets, seed=0):
    """Datasets of 50 to 500 points with their own true parameters and noise."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(50, 501, n_datasets)
    datasets = []
    for length in lengths:
        x = np.sort(rng.uniform(0, 5, length))
        truth = np.array([rng.uniform(1, 4), rng.uniform(0.5, 2), rng.uniform(-0.5, 0.5)])
        y = truth[0] * np.exp(-truth[1] * x) + truth[2] + 0.05 * rng.standard_normal(length)
        datasets.append((x, y))
    return datasets


def _scipy_fit(x, y):
    """SciPy's TRF on one unpadded dataset, numpy only (no compilation per length)."""

    def jac(p):
        e = np.exp(-p[1] * x)
        return np.stack([e, -p[0] * x * e, np.ones_like(x)], axis=1)

    return scipy.optimize.least_squares(
        lambda p: p[0] * np.exp(-p[1] * x) + p[2] - y, np.asarray(P0), jac=jac, **TOLERANCES
    )


solve_batch = eqx.filter_jit(nf.solve_batch)
solve = eqx.filter_jit(nf.solve)


def _fit_alone(x, y):
    data = nf.Data(x, y)
    return solve(exp_decay, data, nf.init(exp_decay, data, P0, nf.Solver(**TOLERANCES)))


def test_pad_datasets_masks_the_padding():
    batch = nf.pad_datasets([(np.arange(3.0), np.ones(3)), nf.Data(np.arange(5.0), np.ones(5))])
    assert batch.y.shape == batch.mask.shape == batch.x.shape == (2, 5)
    np.testing.assert_array_equal(batch.mask.sum(axis=1), [3, 5])
    np.testing.assert_array_equal(batch.x[0], [0, 1, 2, 2, 2])  # edge padding: finite model
    with_sigma = nf.pad_datasets([(np.arange(2.0), np.ones(2), 0.5), (np.arange(3.0), np.ones(3))])
    np.testing.assert_array_equal(with_sigma.sigma, [[0.5, 0.5, 1.0], [1.0, 1.0, 1.0]])


def test_pad_datasets_rejects_inconsistent_inputs():
    with pytest.raises(ValueError, match="one row per point"):
        nf.pad_datasets([(np.arange(4.0), np.ones(3))])
    with pytest.raises(ValueError, match="only the number of points"):
        nf.pad_datasets([(np.arange(3.0), np.ones(3)), ({"t": np.arange(3.0)}, np.ones(3))])
    with pytest.raises(ValueError, match="shorter"):
        nf.pad_datasets([(np.arange(3.0), np.ones(3))], length=2)
    with pytest.raises(ValueError, match="NaN"):
        nf.pad_datasets([(np.arange(3.0), np.ones(3)), (np.arange(2.0), [1.0, np.nan])])
    with pytest.raises(TypeError, match="nlsq_fn.Data"):
        nf.pad_datasets([np.ones(3)])


def _check_ragged_batch(datasets, n_alone):
    batch = nf.pad_datasets(datasets)
    state = nf.init_batch(exp_decay, batch, P0, nf.Solver(**TOLERANCES))
    solutions = solve_batch(exp_decay, batch, state)
    assert solutions.x.shape == (len(datasets), 3)
    assert np.all(np.asarray(solutions.success)), "every member converges"
    assert len(solutions.message) == len(datasets)
    # Each member stopped on its own criteria: the evaluation counts differ.
    assert len(set(np.asarray(solutions.nfev).tolist())) > 1
    # Against SciPy on every unpadded dataset (independent implementation).
    reference = np.stack([_scipy_fit(x, y).x for x, y in datasets])
    np.testing.assert_allclose(solutions.x, reference, rtol=1e-6, atol=1e-9)
    # Against our own fit of each unpadded dataset alone: the same optimum. Padding
    # reorders floating-point sums, so a termination test sitting at its threshold can flip
    # and end a member a step earlier or later (13 of 1,000 members on one CPU, fewer on
    # another); the optimum, not the path, is what padding must not change.
    for count, index in enumerate(np.linspace(0, len(datasets) - 1, n_alone).astype(int)):
        if count % 50 == 49:
            jax.clear_caches()  # one executable per length: hundreds of them otherwise
        alone = _fit_alone(*datasets[index])
        assert bool(alone.success)
        assert_same_optimum(
            solutions.x[index],
            alone.x,
            solutions.cost[index],
            alone.cost,
            jac=alone.jac,
            err_msg=f"dataset {index}",
        )


@pytest.mark.extended
def test_ragged_batch_of_300_matches_fits_alone():
    _check_ragged_batch(_ragged(300), n_alone=4)


@pytest.mark.slow
def test_ragged_batch_of_1000_matches_every_fit_alone():
    _check_ragged_batch(_ragged(1000), n_alone=1000)


def test_batched_starts_per_member():
    datasets = _ragged(6, seed=1)
    batch = nf.pad_datasets(datasets)
    state = nf.init_batch(exp_decay, batch, P0, nf.Solver(**TOLERANCES))
    starts = jnp.tile(P0, (6, 1)) + jnp.linspace(0, 1, 6)[:, None]
    batched_state = nf.with_starts(state, starts)
    solutions = solve_batch(exp_decay, batch, batched_state)
    reference = np.stack([_scipy_fit(x, y).x for x, y in datasets])
    np.testing.assert_allclose(solutions.x, reference, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(batched_state.params, starts)


# --- multi-start on a sinusoid of unknown frequency (many local minima) ---


def sinusoid(x, p):
    return p["amplitude"] * jnp.sin(p["frequency"] * x + p["phase"]) + p["offset"]


X_SINE = np.linspace(0, 10, 200)
TRUTH = {"amplitude": 1.5, "frequency": 3.7, "phase": 0.4, "offset": 0.2}
Y_SINE = np.asarray(sinusoid(X_SINE, TRUTH)) + 0.1 * np.random.default_rng(5).standard_normal(200)
BAD_P0 = {"amplitude": 1.0, "frequency": 1.0, "phase": 0.0, "offset": 0.0}
LOWER = {"amplitude": 0.0, "frequency": 0.1, "phase": -np.pi, "offset": -2.0}
UPPER = {"amplitude": 5.0, "frequency": 6.0, "phase": np.pi, "offset": 2.0}
multistart = eqx.filter_jit(nf.multistart)


def _global_minimum_cost():
    """SciPy started at the truth: the global minimum's cost."""
    names = list(TRUTH)
    result = scipy.optimize.least_squares(
        lambda v: np.asarray(sinusoid(X_SINE, dict(zip(names, v, strict=True)))) - Y_SINE,
        np.array(list(TRUTH.values())),
        **TOLERANCES,
    )
    return result.cost


@pytest.mark.slow
def test_multistart_finds_the_global_minimum():
    data = nf.Data(X_SINE, Y_SINE)
    solver = nf.Solver(bounds=(LOWER, UPPER), **TOLERANCES)
    single = solve(sinusoid, data, nf.init(sinusoid, data, BAD_P0, solver))
    global_cost = _global_minimum_cost()
    assert float(single.cost) > 2 * global_cost  # stuck in a local minimum
    result = multistart(sinusoid, data, BAD_P0, solver, n_starts=64, method="latin")
    assert result.candidates.cost.shape == (64,)
    assert float(result.best.cost) == pytest.approx(global_cost, rel=1e-8)
    assert float(result.best.x["frequency"]) == pytest.approx(3.7, abs=0.02)
    assert float(result.best.cost) == float(jnp.min(result.candidates.cost))
    starts = result.starts["frequency"]
    assert float(starts[0]) == BAD_P0["frequency"]  # p0 is the first candidate
    assert np.all((starts > LOWER["frequency"]) & (starts < UPPER["frequency"]))


def test_latin_hypercube_fills_every_stratum():
    samples = np.asarray(nf.latin_hypercube(jax.random.key(1), 16, 3))
    assert samples.shape == (16, 3)
    for column in samples.T:
        np.testing.assert_array_equal(np.sort(np.floor(column * 16)), np.arange(16))


@pytest.mark.parametrize("method", ["random", "latin", "sobol"])
def test_sample_box_stays_inside_and_spreads_out(method):
    lower, upper = jnp.array([-1.0, 10.0]), jnp.array([1.0, 20.0])
    samples = np.asarray(nf.sample_box(jax.random.key(2), 64, lower, upper, method))
    assert samples.shape == (64, 2)
    assert np.all((samples >= lower) & (samples <= upper))
    # Each half of each axis holds a fair share of the points.
    share = np.mean(samples < (lower + upper) / 2, axis=0)
    assert np.all((share > 0.3) & (share < 0.7))
    with pytest.raises(ValueError, match="method"):
        nf.sample_box(jax.random.key(2), 4, lower, upper, "grid")


def test_multistart_needs_a_finite_box():
    data = nf.Data(X_SINE, Y_SINE)
    with pytest.raises(ValueError, match="finite box"):
        nf.multistart(sinusoid, data, BAD_P0, nf.Solver(), n_starts=4)
