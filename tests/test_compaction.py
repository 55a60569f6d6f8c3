"""Batches whose finished members leave the working batch (`solve_batch` on concrete
inputs): each member's fit is its own, whatever company it keeps."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from helpers import assert_same_optimum

import nlsq_fn as nf
from nlsq_fn._drivers import compaction as _compaction
from nlsq_fn._drivers.batch import can_compact

LANES = 8  # a small working batch, so that a batch of tens is refilled many times


def line(x, p):
    """A Gaussian line on a background: iterations vary a lot from start to start."""
    amplitude, center, width, background = p
    return amplitude * jnp.exp(-0.5 * ((x - center) / width) ** 2) + background


def _spectra(size, seed=0):
    """`size` noisy lines of 40 channels, with starts from the data (as a pixel map's)."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-10.0, 10.0, 40)
    truth = np.stack(
        [
            rng.uniform(2, 10, size),
            rng.uniform(-4, 4, size),
            rng.uniform(0.8, 2.5, size),
            np.ones(size),
        ],
        axis=1,
    )
    y = np.asarray(jax.vmap(line, in_axes=(None, 0))(x, truth))
    y = y + 0.5 * rng.standard_normal(y.shape)
    edges = np.median(np.concatenate([y[:, :5], y[:, -5:]], axis=1), axis=1)
    starts = np.stack(
        [y.max(axis=1) - edges, x[y.argmax(axis=1)], np.full(size, 2.0), edges], axis=1
    )
    return nf.Data(np.broadcast_to(x, y.shape), y), starts


def _state(data, starts, solver=nf.Solver()):
    return nf.with_starts(
        nf.init_batch(line, data, jnp.asarray(starts[0]), solver), jnp.asarray(starts)
    )


@pytest.fixture
def small_working_batch(monkeypatch):
    monkeypatch.setattr(_compaction, "working_size", lambda size, *_: min(size, LANES))


def _member(tree, index):
    return jax.tree.map(lambda leaf: leaf[index] if eqx.is_array(leaf) else leaf, tree)


def _repeated(tree, index):
    """Member `index` alone, in every lane of a working batch (the same program)."""
    return _member(tree, np.full(LANES, index))


@pytest.fixture(scope="module")
def pixels():
    """40 lines fitted as one batch through working batches of 8 lanes."""
    data, starts = _spectra(40)
    state = _state(data, starts)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_compaction, "working_size", lambda size, *_: min(size, LANES))
        batch = nf.solve_batch(line, data, state)
    return data, starts, state, batch


def test_a_member_fits_the_same_in_any_company(pixels, small_working_batch):
    """The working batch's lanes are independent: a member refilled into working batches
    with others, at other stages of their fits, computes exactly what it computes in a
    batch of its own copies (the same compiled program, lane by lane): bit for bit."""
    data, _, state, batch = pixels
    nit = np.asarray(batch.nit)
    assert nit.max() >= nit.min() + 4, "members stop at different passes"
    for index in [int(np.argmax(nit)), int(np.argmin(nit)), 17]:
        alone = nf.solve_batch(line, _repeated(data, index), _repeated(state, index))
        for field in ["x", "cost", "nfev", "njev", "nit", "status", "optimality", "jac"]:
            np.testing.assert_array_equal(
                getattr(alone, field)[0],
                getattr(batch, field)[index],
                err_msg=f"member {index}: {field}",
            )


def test_compacted_batch_matches_separate_fits(pixels):
    """Per member: the optimum of `solve` alone, its status and (but for terminations
    decided at rounding level, which another program may decide a step apart) its
    evaluation count."""
    data, starts, _, batch = pixels
    assert batch.x.shape == (40, 4) and len(batch.message) == 40
    solve = eqx.filter_jit(nf.solve)
    same_nfev = 0
    for index in range(40):
        member = _member(data, index)
        alone = solve(line, member, nf.init(line, member, jnp.asarray(starts[index])))
        assert bool(alone.success) and int(batch.status[index]) == int(alone.status)
        assert_same_optimum(
            batch.x[index],
            alone.x,
            batch.cost[index],
            alone.cost,
            jac=alone.jac,
            err_msg=f"member {index}",
        )
        same_nfev += int(batch.nfev[index]) == int(alone.nfev)
    assert same_nfev >= 36, f"{same_nfev} of 40 members took their own number of steps"


def test_the_slowest_members_finish_in_the_tails_small_working_batch(pixels, monkeypatch):
    """Once the pool is empty and few members are going, they finish in the tail's
    working batch (4 lanes here, its own programs): every member's fit is the one it
    gets in working batches of 8 alone (status, counts; the optimum, as another program
    may round differently)."""
    data, _, state, reference = pixels
    widths = []
    lanes = _compaction._lanes
    monkeypatch.setattr(_compaction, "working_size", lambda size, *_: min(size, LANES))
    monkeypatch.setattr(_compaction, "tail_size", lambda lanes, *_: 4)
    monkeypatch.setattr(
        _compaction,
        "_lanes",
        lambda members, size, *rest: widths.append(size) or lanes(members, size, *rest),
    )
    batch = nf.solve_batch(line, data, state)
    assert 4 in widths and widths[0] == LANES, "the tail ran in its own working batch"
    for field in ["status", "nfev", "njev", "nit"]:
        np.testing.assert_array_equal(getattr(batch, field), getattr(reference, field), field)
    for index in range(40):
        assert_same_optimum(
            batch.x[index],
            reference.x[index],
            batch.cost[index],
            reference.cost[index],
            jac=reference.jac[index],
            err_msg=f"member {index}",
        )


@pytest.mark.extended
def test_members_stopped_by_their_budget_or_their_input(small_working_batch):
    """A member that runs out of evaluations stops with status 0 at its budget, one with
    improper input (a NaN start) with -1, and the others are not disturbed."""
    data, starts = _spectra(12, seed=2)
    starts[3] = np.nan
    state = _state(data, np.where(np.isnan(starts), 1.0, starts), nf.Solver(max_nfev=6))
    state = eqx.tree_at(lambda s: s.params, state, jnp.asarray(starts))
    batch = nf.solve_batch(line, data, state)
    status, nfev = np.asarray(batch.status), np.asarray(batch.nfev)
    assert status[3] == -1 and nfev[3] == 1
    assert np.sum(status == 0) >= 6, "most lines need more than 6 evaluations"
    assert np.all(nfev[status == 0] == 6) and np.all(nfev <= 6)
    assert np.all(np.isfinite(np.delete(np.asarray(batch.x), 3, axis=0)))


@pytest.mark.slow
def test_ragged_datasets_and_bounds(small_working_batch):
    """Padded ragged datasets (masks) and bounds go through the working batch too."""
    rng = np.random.default_rng(3)
    datasets = []
    for length in rng.integers(20, 60, 20):
        x = np.sort(rng.uniform(0, 5, length))
        y = 2.0 * np.exp(-1.3 * x) + 0.1 + 0.02 * rng.standard_normal(length)
        datasets.append((x, y))
    batch = nf.pad_datasets(datasets)

    def decay(x, p):
        return p[0] * jnp.exp(-p[1] * x) + p[2]

    solver = nf.Solver(bounds=([0.0, 0.0, -1.0], [5.0, 1.2, 1.0]))
    state = nf.init_batch(decay, batch, jnp.array([1.0, 0.5, 0.0]), solver)
    compacted = nf.solve_batch(decay, batch, state)
    one_program = nf.solve_batch(decay, batch, state, compact=False)
    np.testing.assert_array_equal(compacted.status, one_program.status)
    np.testing.assert_array_equal(compacted.active_mask, one_program.active_mask)
    assert np.all(np.asarray(compacted.active_mask)[:, 1] == 1), "the rate sits on its bound"
    assert_same_optimum(
        compacted.x, one_program.x, compacted.cost, one_program.cost, jac=one_program.jac
    )


def test_under_jit_the_batch_is_one_program():
    data, starts = _spectra(4)
    state = _state(data, starts)
    assert _compaction_used(data, state) is False
    with pytest.raises(ValueError, match="compact=True"):
        eqx.filter_jit(lambda d, s: nf.solve_batch(line, d, s, compact=True))(data, state)


def _compaction_used(data, state):
    traced = []
    eqx.filter_jit(lambda d, s: traced.append(can_compact(line, d, s)))(data, state)
    return traced[0]


def test_a_model_closing_over_traced_arrays_is_fitted_in_one_program():
    """Inside the user's `jax.jit`, data and state may be concrete while the model
    closes over traced arrays: that fit cannot leave the trace."""
    data, starts = _spectra(4)
    state = _state(data, starts)
    flags = []

    @jax.jit
    def trace(scale):
        flags.append(can_compact(lambda x, p: scale * line(x, p), data, state))
        return scale

    trace(1.0)
    assert flags == [False] and can_compact(line, data, state)


def test_curve_fit_batch_gives_each_member_scipys_fit(capsys):
    """The front end over a stack of datasets: each member's `popt` and `pcov` are
    SciPy's `curve_fit` of that member alone (two implementations, each stopping within
    its tolerances of the optimum: to 1e-3 of a standard error, and of
    ``sqrt(pcov_ii pcov_jj)``)."""
    data, starts = _spectra(6, seed=4)
    x, y = np.asarray(data.x[0]), np.asarray(data.y)
    sigma = np.linspace(0.4, 0.6, x.size)

    def f(x, amplitude, center, width, background):
        return line(x, (amplitude, center, width, background))

    popt, pcov, solution = nf.curve_fit_batch(f, x, y, starts, sigma=sigma, progress=True)
    assert popt.shape == (6, 4) and pcov.shape == (6, 4, 4)
    assert "6/6" in capsys.readouterr().err, "the bar counted every member"
    assert np.all(np.asarray(solution.success))

    def f_np(x, amplitude, center, width, background):
        return amplitude * np.exp(-0.5 * ((x - center) / width) ** 2) + background

    for index in range(6):
        reference = scipy.optimize.curve_fit(f_np, x, y[index], p0=starts[index], sigma=sigma)
        errors = np.sqrt(np.diag(reference[1]))
        np.testing.assert_array_less(np.abs(popt[index] - reference[0]), 1e-3 * errors)
        scale = np.outer(errors, errors)
        np.testing.assert_array_less(np.abs(pcov[index] - reference[1]), 1e-3 * scale)
