"""The functional core, `init` / `solve` / `Solver` / `Data`: pytrees, batching, masks,
Jacobian modes, losses, float32; bad input gets a clear error before any compilation,
and inside `jit` a status code."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from helpers import (
    EXACT_X,
    EXACT_Y,
    LINE_X,
    LINE_Y,
    TIGHT,
    assert_same_optimum,
    exp_decay,
    line,
    solve,
    two_parameter_decay,
)

import nlsq_fn as nf


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


# --- bad input: a clear error before any compilation; inside jit, a status --------------

P0_30 = jnp.array([1.0, 0.5, 0.0])


def _init(data=None, p0=P0_30, model=exp_decay, **solver_options):
    data = nf.Data(EXACT_X, EXACT_Y) if data is None else data
    return nf.init(model, data, p0, nf.Solver(**solver_options))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: _init(nf.Data(EXACT_X, EXACT_Y[:-1])), "30 points but `y` has 29"),
        (lambda: _init(nf.Data(EXACT_X, EXACT_Y, sigma=np.ones(29))), "`sigma` has shape"),
        (lambda: _init(nf.Data(EXACT_X, EXACT_Y, mask=np.ones(29, bool))), "`mask` has shape"),
        (
            lambda: _init(nf.Data(EXACT_X, np.where(EXACT_X > 2, np.nan, EXACT_Y))),
            "`y` contains NaN or inf",
        ),
        (
            lambda: _init(nf.Data(EXACT_X, np.where(EXACT_X > 2, np.inf, EXACT_Y))),
            "`y` contains NaN or inf",
        ),
        (
            lambda: _init(nf.Data(np.where(EXACT_X > 2, np.nan, EXACT_X), EXACT_Y)),
            "`x` contains NaN or inf",
        ),
        (
            lambda: _init(nf.Data(EXACT_X, EXACT_Y, sigma=np.where(EXACT_X > 2, 0.0, 1.0))),
            "`sigma` must be",
        ),
        (lambda: _init(nf.Data(EXACT_X, EXACT_Y, sigma=-np.ones(30))), "`sigma` must be"),
        (
            lambda: _init(bounds=([0, 0, 0], [10, 10, 10]), p0=jnp.array([1.0, 0.5, -1.0])),
            "`p0` is outside the bounds for p[2]",
        ),
        (
            lambda: _init(bounds=([0, 2, 0], [10, 1, 10])),
            "lower bound must be strictly less than its upper bound (violated for p[1])",
        ),
        (lambda: _init(bounds=([0, 0], [10, 10])), "`lower bound` has shape (2,)"),
        (lambda: _init(p0=jnp.array([1.0, np.nan, 0.0])), "`p0` contains NaN or inf"),
        (
            lambda: _init(model=lambda x, p: exp_decay(x, p)[:-1]),
            "The model returns shape (29,) but `y` has shape (30,)",
        ),
        (lambda: _init(model=lambda x, p: (exp_decay(x, p), x)), "must return one array"),
        (
            lambda: _init(model=lambda x, p: jnp.log(p[2]) + exp_decay(x, p)),
            "The model returns NaN or inf at p0",
        ),
        (lambda: _init(model=lambda x, p: p["a"] * x), "Calling the model"),
        (
            lambda: nf.init(
                exp_decay,
                nf.Data(EXACT_X, EXACT_Y),
                P0_30,
                nf.Solver(strategy=nf.LevenbergMarquardt(), bounds=(0, 10)),
            ),
            "does not support bounds",
        ),
        (lambda: _init(x_scale=-1.0), "`x_scale` must be"),
        (lambda: _init(x_scale="auto"), "`x_scale` must be"),
        (lambda: _init(ftol=0, xtol=0, gtol=0), "At least one of"),
        (lambda: _init(max_nfev=0), "`max_nfev` must be positive"),
        (lambda: _init(jac="4-point"), "`jac` must be a callable, 'fwd', 'rev', '2-point'"),
        (
            lambda: _init(jac="2-point", diff_step=[1e-6, 1e-6]),
            "`diff_step` has shape (2,); give a scalar or one step for each of the 3",
        ),
        (lambda: nf.init(exp_decay, (EXACT_X, EXACT_Y), P0_30), "must be an nlsq_fn.Data"),
        (lambda: _init(nf.Data(EXACT_X[:0], EXACT_Y[:0])), "`y` is empty"),
    ],
)
def test_bad_input_raises_a_clear_error(make, message):
    with pytest.raises((ValueError, TypeError)) as error:
        make()
    assert message in str(error.value)


def test_wrong_parameter_structure_is_named():
    def model(x, p):
        return p["a"] * jnp.exp(-p["b"] * x)

    with pytest.raises(ValueError, match="Calling the model"):
        nf.init(model, nf.Data(EXACT_X, EXACT_Y), {"a": 1.0}, nf.Solver())
    with pytest.raises(ValueError, match="lower bound"):
        nf.init(
            model,
            nf.Data(EXACT_X, EXACT_Y),
            {"a": 1.0, "b": 1.0},
            nf.Solver(bounds=({"a": 0.0}, {"a": 2.0, "b": 2.0})),
        )


def test_bad_data_inside_jit_gives_a_status_not_garbage():
    @jax.jit
    def fit(y):
        data = nf.Data(EXACT_X, y)
        return nf.solve(exp_decay, data, nf.init(exp_decay, data, P0_30, nf.Solver()))

    good = fit(jnp.asarray(EXACT_Y))
    bad = fit(jnp.asarray(np.where(EXACT_X > 2, np.nan, EXACT_Y)))
    assert int(good.status) > 0
    assert int(bad.status) == -1
    assert not bool(bad.success)
    assert "NaN or inf" in bad.message
    assert int(bad.nfev) == 1


def test_model_that_is_not_finite_at_p0_inside_vmap_is_flagged_per_member():
    def model(x, p):
        return jnp.sqrt(p[2]) + exp_decay(x, p)

    @eqx.filter_jit
    def fit(p0s):
        data = nf.Data(EXACT_X, EXACT_Y)
        return jax.vmap(lambda p0: nf.solve(model, data, nf.init(model, data, p0)))(p0s)

    out = fit(jnp.array([[1.0, 0.5, 0.1], [1.0, 0.5, -1.0]]))
    np.testing.assert_array_equal(out.status[1], -1)
    assert int(out.status[0]) > 0
    assert np.all(np.isfinite(out.x[0]))


# --- regressions of issue 9's defects 6-8: validation gaps, inputs once refused, bad input
# under jit, masked points where the model is not finite ------------------------------------

Y_EXP = 2 * np.exp(-1.3 * LINE_X)


def _nf_init(data=None, p0=(1.0, 1.0), **solver):
    data = nf.Data(LINE_X, Y_EXP) if data is None else data
    return nf.init(two_parameter_decay, data, jnp.asarray(p0), nf.Solver(**solver))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: nf.curve_fit(line, LINE_X, LINE_Y, bounds=([0, np.nan], [10, 10])),
            "`bounds` contain NaN",
        ),
        (
            lambda: nf.least_squares(lambda p: p - 1, [1.0], bounds=(np.nan, 5)),
            "`bounds` contain NaN",
        ),
        (lambda: _nf_init(bounds=([0.0, np.nan], [5.0, 5.0])), "`bounds` contain NaN (for p[1])"),
        (lambda: _nf_init(loss=nf.Huber(f_scale=0.0)), "`f_scale` must be positive"),
        (lambda: _nf_init(loss=nf.Huber(f_scale=np.nan)), "`f_scale` must be positive"),
        (lambda: _nf_init(loss=nf.Huber(f_scale=np.inf)), "`f_scale` must be positive"),
        (lambda: _nf_init(loss=nf.Huber(f_scale=1e-300)), "`f_scale` must be positive"),
        (lambda: _nf_init(loss=nf.Huber(f_scale=-2.0)), "`f_scale` must be positive"),
        (
            lambda: nf.least_squares(lambda p: p - 1, [1.0], loss="huber", f_scale=np.inf),
            "`f_scale` must be positive",
        ),
        (
            lambda: nf.curve_fit(line, LINE_X, LINE_Y, p0={"a": 1.0, "c": 2.0}),
            "unknown: ['c'], missing: ['b']",
        ),
        (lambda: nf.least_squares(lambda p: p - 1, [1.0 + 1j]), "`x0` must be real"),
        (lambda: nf.curve_fit(line, LINE_X, LINE_Y, p0=[1.0, 1j]), "`p0` must be real"),
        (lambda: nf.curve_fit(line, LINE_X, LINE_Y + 0j, p0=[1.0, 1.0]), "`ydata` must be real"),
        (
            lambda: nf.curve_fit(lambda x, a, b: a * x + b * 1j, LINE_X, LINE_Y, p0=[1.0, 1.0]),
            "The model returns complex values; they must be real",
        ),
        (lambda: _nf_init(nf.Data(LINE_X, Y_EXP + 0j)), "`y` must be real"),
        (lambda: nf.least_squares(lambda p: 1e200 * (p - 1), [3.0]), "overflows"),
        (
            lambda: _nf_init(nf.Data(LINE_X, Y_EXP, mask=np.zeros(10, bool))),
            "Every point is masked",
        ),
        (lambda: nf.least_squares(lambda p: jnp.ones(3), np.zeros(0)), "`p0` has no parameters"),
        (lambda: nf.Solver(strategy="newton"), "`strategy` must be"),
        (lambda: nf.Solver(loss="l7"), "`loss` must be one of"),
        (
            lambda: nf.pad_datasets([(LINE_X, LINE_Y), (LINE_X[:0], LINE_Y[:0])]),
            "Dataset 1 has no points",
        ),
        (
            lambda: nf.pad_datasets([(LINE_X, LINE_Y), (LINE_X, LINE_Y, np.ones(9))]),
            "Dataset 1: `sigma` has shape (9,)",
        ),
        (
            lambda: nf.pad_datasets(
                [(LINE_X, LINE_Y), (LINE_X, np.where(LINE_X > 0.5, np.nan, LINE_Y))]
            ),
            "Dataset 1: `y` contains NaN",
        ),
        (
            lambda: nf.multistart(
                two_parameter_decay,
                nf.Data(LINE_X, Y_EXP),
                jnp.ones(2),
                nf.Solver(bounds=(0.0, 5.0)),
                n_starts=2.5,
            ),
            "`n_starts` must",
        ),
        (
            lambda: nf.multistart(
                two_parameter_decay,
                nf.Data(LINE_X, Y_EXP),
                jnp.ones(2),
                nf.Solver(bounds=(0.0, 5.0)),
                key="seed",
            ),
            "`key` must",
        ),
    ],
)
def test_validation_gaps_raise_clear_errors(make, message):
    with pytest.raises((ValueError, TypeError)) as error:
        make()
    assert message in str(error.value)
    assert len(str(error.value)) < 400


@pytest.mark.extended
def test_inputs_that_used_to_be_refused_now_fit():
    # A single-leaf pytree p0 with bounds of the same structure.
    model = lambda x, p: p["a"] * x  # noqa: E731
    state = nf.init(
        model, nf.Data(LINE_X, 3 * LINE_X), {"a": 1.0}, nf.Solver(bounds=({"a": 0.0}, {"a": 5.0}))
    )
    np.testing.assert_allclose(nf.solve(model, nf.Data(LINE_X, 3 * LINE_X), state).x["a"], 3.0)
    # A p0 dict for a plain f(x, a, b): mapped to the signature, as a `bounds` dict.
    expected, _ = scipy.optimize.curve_fit(line, LINE_X, LINE_Y, p0=[1.0, 2.0])
    popt, _ = nf.curve_fit(line, LINE_X, LINE_Y, p0={"b": 2.0, "a": 1.0})
    np.testing.assert_allclose(popt, expected, rtol=1e-7)
    # Loss and strategy by SciPy's names; max_nfev=inf (no limit) as SciPy.
    solver = nf.Solver(loss="huber", strategy="trf", max_nfev=np.inf)
    data = nf.Data(LINE_X, Y_EXP)
    result = nf.solve(
        two_parameter_decay, data, nf.init(two_parameter_decay, data, jnp.ones(2), solver)
    )
    assert result.success
    np.testing.assert_allclose(result.x, [2.0, 1.3], rtol=1e-6)
    # A list is an array for Data (not a pytree of scalars), for eval, for pad_datasets.
    assert nf.Data(list(LINE_X), LINE_Y).x.shape == (10,)
    batch = nf.pad_datasets([[list(LINE_X), LINE_Y], (LINE_X[:7], LINE_Y[:7])])
    assert batch.y.shape == (2, 10) and batch.mask.sum() == 17
    fit = nf.CurveFit(line, LINE_X, LINE_Y, p0=[1, 1]).fit()
    np.testing.assert_allclose(fit.eval([0, 1]), line(np.array([0.0, 1.0]), *fit.popt))
    # An integer key is a seed.
    best = nf.multistart(
        two_parameter_decay, data, jnp.ones(2), nf.Solver(bounds=(0.0, 5.0)), n_starts=3, key=1
    ).best
    np.testing.assert_allclose(best.x, [2.0, 1.3], rtol=1e-6)


def test_bad_input_under_jit_gives_status_minus_one():
    """One compiled fit, fed good and bad values (all traced): sigma < 0, p0 outside the
    bounds, lower > upper, NaN bounds, x_scale <= 0 or NaN, every point masked."""

    @jax.jit
    def fit(sigma, p0, lower, upper, x_scale, mask):
        data = nf.Data(LINE_X, Y_EXP, sigma=sigma, mask=mask)
        solver = nf.Solver(bounds=(lower, upper), x_scale=x_scale)
        return nf.solve(
            two_parameter_decay, data, nf.init(two_parameter_decay, data, p0, solver)
        ).status

    good = dict(
        sigma=jnp.ones(10),
        p0=jnp.ones(2),
        lower=jnp.zeros(2),
        upper=jnp.full(2, 5.0),
        x_scale=jnp.ones(2),
        mask=jnp.ones(10, bool),
    )
    assert fit(**good) > 0
    bad = [
        dict(sigma=-jnp.ones(10)),
        dict(p0=jnp.array([1.0, 7.0])),
        dict(lower=jnp.array([0.0, 6.0])),
        dict(upper=jnp.array([5.0, jnp.nan])),
        dict(x_scale=jnp.array([1.0, 0.0])),
        dict(x_scale=jnp.array([jnp.nan, 1.0])),
        dict(mask=jnp.zeros(10, bool)),
    ]
    statuses = [int(fit(**{**good, **change})) for change in bad]
    assert statuses == [-1] * len(bad)
    message = nf.STATUS_MESSAGES[-1]  # what `Solution.message` says for status -1
    for reason in (
        "sigma <= 0",
        "p0 outside the bounds",
        "lower >= upper",
        "NaN bounds",
        "x_scale <= 0",
        "every point masked",
    ):
        assert reason in message


@pytest.mark.extended
def test_masked_points_where_the_model_is_not_finite_count_for_nothing():
    model = lambda x, p: p[0] * jnp.sqrt(x) + p[1]  # noqa: E731  (NaN for x < 0)
    x = np.linspace(0.5, 3, 12)
    y = 1.7 * np.sqrt(x) - 0.4 + 0.01 * np.cos(5 * x)
    x[3], x[8] = -1.0, np.nan  # masked: the model is NaN there, in value and derivative
    mask = np.isfinite(x) & (x > 0)
    kept = mask.nonzero()[0]
    expected, _ = scipy.optimize.curve_fit(
        lambda x, a, b: a * np.sqrt(x) + b, x[kept], y[kept], p0=[1.0, 0.0]
    )

    def fitted(y_values, data_x, data_mask, jac):
        data = nf.Data(data_x, y_values, mask=data_mask)
        state = nf.init(model, data, jnp.array([1.0, 0.0]), nf.Solver(jac=jac))
        return nf.solve(model, data, state)

    for jac in ("rev", "fwd"):
        result = fitted(jnp.asarray(y), x, mask, jac)
        assert result.success, result.message
        np.testing.assert_allclose(result.x, expected, rtol=1e-7)
    # Differentiating through the fit: finite, and equal to the fit of the kept points.
    grad = jax.grad(lambda v: fitted(v, x, mask, "rev").x[0])(jnp.asarray(y))
    grad_kept = jax.grad(lambda v: fitted(v, x[kept], None, "rev").x[0])(jnp.asarray(y[kept]))
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[~mask] == 0)
    np.testing.assert_allclose(np.asarray(grad)[kept], grad_kept, rtol=1e-8, atol=1e-12)
