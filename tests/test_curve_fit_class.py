"""`CurveFit`, the reusable fit: it compiles once per size bucket and reuses that code for
new data and refits (compile counts), takes a model's parameters either way (SciPy's
unpacked or an array) and runs under `jax.vmap`; NLSQ's calling forms of it."""

import contextlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from helpers import DECAY_P0, DECAY_X, DECAY_Y, TIGHT, assert_matches_scipy_fit, decay

import nlsq_fn as nf
from nlsq_fn._drivers import (
    evaluators as _evaluators,
    refit as _refit,
    stepwise as _stepwise,
    whole_fit as _whole_fit,
)
from nlsq_fn._evaluation import chunking as _chunking, compiled as _compiled
from nlsq_fn._problem.conventions import model_convention

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def counting_compiles():
    """A list that gets one entry for each XLA compilation inside the block (after the
    background compilations of earlier fits' op-by-op kernels have finished)."""
    _evaluators.wait_for_kernels()
    _refit.wait_for_background_compilations()
    compiles = []

    def listener(event, duration, **kwargs):
        if event == BACKEND_COMPILE:
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _dataset(m, seed, stretch=1.0):
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 4 * stretch, m)
    truth = np.array([2.0 + rng.random(), 1.0 + rng.random(), rng.random()])
    clean = truth[0] * np.exp(-truth[1] * x) + truth[2]  # NumPy: no JAX compilation here
    return x, clean + 0.02 * rng.standard_normal(m), truth


@pytest.mark.extended
def test_same_shape_and_new_lengths_compile_once_per_bucket():
    def decay(x, a, b, c):  # defined here: no other test has compiled it
        return a * jnp.exp(-b * x) + c

    # Start with no programs kept, so that `_evaluation.compiled`'s bound cannot clear them midway.
    _compiled.clear()
    with counting_compiles() as compiles:
        fitter = nf.CurveFit(decay, p0=[1.0, 1.0, 0.0], method="trf", pad=True)
        traces = _whole_fit.trace_count
        results = []
        # Five datasets of one shape, with new values of x, y, p0 and bounds.
        for seed in range(5):
            x, y, truth = _dataset(50, seed, stretch=1 + 0.1 * seed)
            if seed == 1:
                compiles.clear()  # the first fit compiles; none of the others may
            bounds = ([0.0, 0.0, -1.0 - seed], [10.0 + seed, np.inf, 5.0])
            results.append((fitter.fit(x, y, p0=[1.0 + seed, 1.0, 0.0], bounds=bounds), truth))
        assert _whole_fit.trace_count - traces == 1
        assert compiles == []
        # Five new lengths: 40, 60 share the 64-point bucket of 50; 70, 100, 128 the
        # 128-point bucket, which compiles once. (Bounds stay finite: a fit without any
        # finite bound compiles the simpler unbounded TRF step, a second variant.)
        bounds = ([0.0, 0.0, -10.0], [100.0, np.inf, 10.0])
        for seed, m in enumerate([40, 60, 70, 100, 128]):
            x, y, truth = _dataset(m, 10 + seed)
            results.append((fitter.fit(x, y, bounds=bounds), truth))
            if m == 40:
                compiles.clear()  # (eager conversions of the new bounds happen once)
            if m == 60:
                assert compiles == []  # not even a small eager op for a new length
        assert _whole_fit.trace_count - traces == 2
    for result, truth in results:
        assert result.success
        np.testing.assert_allclose(result.popt, truth, rtol=0.1, atol=0.05)


@pytest.mark.extended
def test_padding_does_not_change_the_result():
    def decay(x, a, b, c):
        return a * jnp.exp(-b * x) + c

    x, y, _ = _dataset(37, 0)
    sigma = 0.02 + 0.01 * np.random.default_rng(5).random(37)
    options = dict(p0=[1.0, 1.0, 0.0], sigma=sigma, method="trf", ftol=1e-12, xtol=1e-12)
    padded = nf.CurveFit(decay, x, y, pad=True, **options).fit()
    exact = nf.CurveFit(decay, x, y, pad=False, **options).fit()
    np.testing.assert_allclose(padded.popt, exact.popt, rtol=1e-10)
    np.testing.assert_allclose(padded.pcov, exact.pcov, rtol=1e-8)
    np.testing.assert_allclose(padded.fun, exact.fun, rtol=1e-8, atol=1e-12)
    assert padded.fun.shape == (37,) and padded.jac.shape == (37, 3)
    assert padded.nfev == exact.nfev
    assert abs(padded.cost - exact.cost) < 1e-10 * exact.cost


def test_bucket_sizes():
    assert [_chunking.bucket_size(m) for m in (1, 16, 17, 64, 65, 1000)] == [
        16,
        16,
        32,
        64,
        128,
        1024,
    ]


def _decay_with_slope_data():
    x = np.linspace(0.0, 4.0, 41)
    rng = np.random.default_rng(3)
    y = 2.0 * np.exp(-1.2 * x) + 0.5 + 0.1 * x + 0.01 * rng.standard_normal(41)
    return x, y


def test_a_new_model_compiles_nothing():
    """A new model's first fits run step by step: the strategy's steps are compiled
    once per number of parameters and options, the model is evaluated op by op, so a
    second fresh model of the same shapes compiles nothing at all."""
    x, y = _decay_with_slope_data()
    options = dict(p0=[1.0, 1.0, 0.0, 0.0], bounds=([0, 0, -1, -1], [10, 10, 10, 1]))
    nf.curve_fit(lambda x, a, b, c, d: a * jnp.exp(-b * x) + c + d * x, x, y, **options)
    with counting_compiles() as compiles:
        popt, pcov = nf.curve_fit(
            lambda x, a, b, c, d: a * jnp.exp(-b * x) + c + d * x, x, y, **options
        )
    assert compiles == []
    # The truth within five standard errors (the noise is 0.01).
    assert np.all(np.abs(popt - [2.0, 1.2, 0.5, 0.1]) <= 5 * np.sqrt(np.diag(pcov)))


def test_a_compiled_fit_is_one_program(monkeypatch):
    """Once a model is compiled (here at once), the fit is one program: the front end's
    checks run in NumPy, the model's checks at p0 and the covariance inside the fit's
    program (each eager `jnp` call would compile a program of its own in a fresh
    process). New shapes (a bounded 4-parameter model on 43 points), so no earlier test
    has compiled any of it."""
    monkeypatch.setattr(_stepwise, "COMPILE_SECONDS", 0.0)

    def decay_with_slope(x, a, b, c, d):
        return a * jnp.exp(-b * x) + c + d * x

    x = np.linspace(0.0, 4.0, 43)
    rng = np.random.default_rng(3)
    y = 2.0 * np.exp(-1.2 * x) + 0.5 + 0.1 * x + 0.01 * rng.standard_normal(43)
    with counting_compiles() as compiles:
        popt, pcov = nf.curve_fit(
            decay_with_slope,
            x,
            y,
            p0=[1.0, 1.0, 0.0, 0.0],
            bounds=([0, 0, -1, -1], [10, 10, 10, 1]),
        )
    assert len(compiles) == 1
    assert np.all(np.abs(popt - [2.0, 1.2, 0.5, 0.1]) <= 5 * np.sqrt(np.diag(pcov)))


def test_curve_fit_reports_a_model_not_finite_at_p0():
    """The check at p0 runs inside the compiled fit, and still raises SciPy's-style
    errors before anything is returned (with the scalar-parameter hint without p0)."""

    def logarithmic(x, a):
        return jnp.log(a - 1.0) * x

    x = np.linspace(1.0, 2.0, 11)
    with pytest.raises(ValueError, match="The model returns NaN or inf at p0") as error:
        nf.curve_fit(logarithmic, x, 2 * x)  # p0 = 1: log(0)
    assert "Without `p0` the model was called with one scalar parameter 'a'" in str(error.value)
    with pytest.raises(ValueError, match="overflows at p0"):
        nf.curve_fit(lambda x, a: 1e200 * (x - a), x, 2 * x, p0=[0.0])


@pytest.mark.extended
@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux's /proc")
@pytest.mark.parametrize("bound", ["programs", "memory maps"])
def test_fresh_models_do_not_accumulate_compiled_programs(monkeypatch, bound):
    # Each fit program of a new model function stays compiled (JAX's cache holds the
    # model) and XLA:CPU maps its kernels into memory: a few hundred fresh lambdas
    # used to exhaust Linux's 65,530 memory maps and crash XLA. nlsq_fn now keeps at
    # most `MAX_PROGRAMS` programs compiled, and fewer once the process holds more maps
    # than `map_budget` (how many maps a program takes depends on it and on the machine).
    import gc

    monkeypatch.setattr(_compiled, "MAX_PROGRAMS", 3 if bound == "programs" else 10_000)
    monkeypatch.setattr(_compiled, "MIN_PROGRAMS", 1)
    _compiled.clear()
    # Compiled fits (a model's first fits run step by step and compile nothing).
    monkeypatch.setattr(_stepwise, "COMPILE_SECONDS", 0.0)

    def maps():
        gc.collect()
        with open("/proc/self/maps") as lines:
            return sum(1 for _ in lines)

    x = np.linspace(0.0, 1.0, 20)
    y = 2.0 * np.exp(-1.5 * x)

    def fit_a_fresh_lambda():
        popt, _ = nf.curve_fit(lambda t, a, b: a * jnp.exp(-b * t), x, y, p0=[1.0, 1.0])
        np.testing.assert_allclose(popt, [2.0, 1.5], rtol=1e-6)

    fit_a_fresh_lambda()
    before = maps()
    fit_a_fresh_lambda()
    per_model = maps() - before
    assert per_model > 10
    if bound == "memory maps":
        monkeypatch.setattr(_compiled, "map_budget", lambda: before + per_model // 2)
    for _ in range(9):
        fit_a_fresh_lambda()
        assert _compiled.programs_kept() <= 3
    assert maps() - before <= 4 * per_model


def test_a_settled_refit_reuses_the_compiled_fit_and_equals_a_fresh_build(monkeypatch):
    """Once a model's fit is compiled, `curve_fit` on new values of x, y, p0, bounds and
    sigma (same shapes) compiles nothing and returns what building the inputs anew and
    running the compiled fit gives, to the bit; a bad value still gets the same error."""
    monkeypatch.setattr(_stepwise, "COMPILE_SECONDS", 0.0)

    def decay(x, a, b, c):  # no other test compiles it
        return a * jnp.exp(-b * x) + c

    def fit(seed):
        x, y, _ = _dataset(57, seed, stretch=1 + 0.1 * seed)
        sigma = 0.02 + 0.01 * np.random.default_rng(seed).random(57)
        bounds = ([0.0, 0.0, -1.0 - seed], [10.0 + seed, 5.0, 5.0])
        options = dict(p0=[1.0 + 0.1 * seed, 1.0, 0.0], sigma=sigma, bounds=bounds)
        return nf.curve_fit(decay, x, y, **options), (x, y, options)

    fit(0)
    with counting_compiles() as compiles:
        refits = [fit(seed) for seed in (1, 2)]
    assert compiles == []
    for result, (x, y, options) in refits:
        fitter = nf.CurveFit(decay, x, y, **options)
        solution, parts, _ = _whole_fit.whole_fit(*fitter.prepare()[:3])
        assert result.success
        np.testing.assert_array_equal(result.popt, np.asarray(solution.x))
        np.testing.assert_array_equal(result.pcov, np.asarray(parts.covariance(False)))
        assert result.nfev == int(solution.nfev)
    x, y, options = refits[0][1]
    with pytest.raises(ValueError, match="outside the bounds for 'b'"):
        nf.curve_fit(decay, x, y, **(options | dict(p0=[1.0, 6.0, 0.0])))
    with pytest.raises(ValueError, match="`ydata` contains NaN or inf"):
        nf.CurveFit(decay, x, np.where(x > 1, np.inf, y), **options).fit()


def test_a_refitted_model_is_compiled_in_the_background(monkeypatch):
    """A model fitted step by step a second time on data of the same kind gets its
    compiled fit built in a background thread; later refits call it (no compilation in
    the foreground) and agree with SciPy. The model is not pointwise (it centres `x`):
    the refit hands it the user's `x` unchanged."""
    import scipy.optimize

    monkeypatch.setattr(_stepwise, "COMPILE_SECONDS", np.inf)  # never in the foreground
    _refit.wait_for_background_compilations()  # (earlier tests')
    _compiled.clear()

    def centred(x, a, b, c):  # no other test compiles it
        return a * jnp.exp(-b * (x - jnp.mean(x))) + c

    def reference(x, y):
        f = lambda x, a, b, c: a * np.exp(-b * (x - np.mean(x))) + c  # noqa: E731
        return scipy.optimize.curve_fit(f, x, y, p0=[1.0, 1.0, 0.0])

    datasets = [_dataset(61, seed)[:2] for seed in range(4)]
    for x, y in datasets[:2]:
        nf.curve_fit(centred, x, y, p0=[1.0, 1.0, 0.0])  # step by step
    _refit.wait_for_background_compilations()
    assert _refit.fit_programs.cache_size() == 1  # this model's
    with counting_compiles() as compiles:
        for x, y in datasets[2:]:
            popt, pcov = nf.curve_fit(centred, x, y, p0=[1.0, 1.0, 0.0])
            expected, expected_cov = reference(x, y)
            np.testing.assert_allclose(popt, expected, rtol=1e-6)
            np.testing.assert_allclose(pcov, expected_cov, rtol=1e-4)
    assert compiles == []


# --- which way a model takes its parameters (the front ends' conventions) --------------


def decay_array(x, params):
    a, b, c = params
    return a * jnp.exp(-b * x) + c


def test_convention_rule():
    def scipy_style(x, a, b):
        return a * x + b

    def star(x, *p):
        return p[0] * x

    def one_named(x, k):
        return k * x

    def one_vector(x, theta):
        return theta[0] * x

    assert model_convention(decay_array, [1.0, 2.0, 3.0]) == "array"
    assert model_convention(decay_array, [1.0]) == "array"  # the name says vector
    # No p0: SciPy counts one parameter (an array model could not tell its length).
    assert model_convention(decay_array) == "unpacked"
    assert model_convention(scipy_style) == "unpacked"
    assert model_convention(star, [1.0, 2.0]) == "unpacked"
    assert model_convention(one_named) == "unpacked"  # SciPy's one-parameter model
    assert model_convention(one_named, [1.0]) == "unpacked"
    assert model_convention(one_named, [1.0, 2.0]) == "array"  # several values
    assert model_convention(one_vector, [1.0]) == "array"
    assert model_convention(one_named, [1.0], param_style="array") == "array"
    assert model_convention(one_vector, [1.0], param_style="unpacked") == "unpacked"
    assert model_convention(nf.models.Gaussian()) == "named"
    with pytest.raises(ValueError, match="param_style"):
        model_convention(one_named, param_style="vector")


def test_one_parameter_models_scalar_or_array_closed_form():
    x = np.linspace(1, 3, 12)
    y = 1.7 * x + 0.01 * np.cos(5 * x)
    expected = x @ y / (x @ x)  # linear least squares in closed form
    seen = {}

    def slope(x, k):
        seen["k"] = jnp.shape(k)
        return k * x

    def slope_array(x, params):
        seen["params"] = jnp.shape(params)
        return params[0] * x

    scalar = nf.CurveFit(slope, x, y, p0=[1.0], **TIGHT).fit()
    array = nf.CurveFit(slope_array, x, y, p0=[1.0], **TIGHT).fit()
    assert seen == {"k": (), "params": (1,)}
    np.testing.assert_allclose(scalar.x, [expected], rtol=1e-10)
    np.testing.assert_allclose(array.x, [expected], rtol=1e-10)
    assert scalar.names == ("k",) and array.names == ("params[0]",)
    # Without p0 both are SciPy's one-parameter model, started at 1 (as SciPy does);
    # an array model that needs its length is told to give p0.
    np.testing.assert_allclose(nf.CurveFit(slope, x, y, **TIGHT).fit().x, [expected])
    with pytest.raises(ValueError, match="give `p0`"):
        nf.CurveFit(decay_array, x, y).fit()


def test_both_conventions_and_keyword_spellings_give_scipys_fit(x64):
    with jax.enable_x64(True):  # SciPy's float64 answer, also under x64=False
        reference = scipy.optimize.curve_fit(
            lambda x, a, b, c: np.asarray(decay(x, a, b, c)), DECAY_X, DECAY_Y, p0=DECAY_P0, **TIGHT
        )
    guide = nf.CurveFit(model=decay_array, x=DECAY_X, y=DECAY_Y, p0=DECAY_P0, **TIGHT).fit()
    scipy_names = nf.CurveFit(f=decay, xdata=DECAY_X, ydata=DECAY_Y, p0=DECAY_P0, **TIGHT).fit()
    for result in (guide, scipy_names):
        assert_matches_scipy_fit(result.popt, result.pcov, reference, DECAY_X.size)
    assert list(scipy_names.params) == ["a", "b", "c"]
    assert "params[1]" in guide.summary()
    with pytest.raises(TypeError, match="not both"):
        nf.CurveFit(decay, DECAY_X, DECAY_Y, p0=DECAY_P0, xdata=DECAY_X)


# --- vmapped over its options -------------------------------------------------------------


@pytest.mark.slow
def test_curve_fit_vmapped_over_bounds_members_equal_their_own_fits():
    uppers = jnp.array([2.3, 10.0])  # the first is active at the solution

    def fitted(upper):
        return nf.CurveFit(
            decay_array, DECAY_X, DECAY_Y, DECAY_P0, bounds=(0.0, upper), **TIGHT
        ).fit()

    batch = jax.vmap(fitted)(uppers)
    for i, upper in enumerate(uppers):
        single = fitted(float(upper))
        assert np.all(np.abs(np.asarray(batch.x[i]) - single.x) <= 1e-3 * single.perr)
        np.testing.assert_array_equal(np.asarray(batch.active_mask[i]), single.active_mask)
    assert np.asarray(batch.x)[0, 0] == pytest.approx(2.3)


# --- NLSQ's calling forms (issue 21): the reusable fitter, the guide's callbacks ----------


def test_reusable_fitter_gives_scipys_fit(guide_data, guide_scipy_fit):
    fitter = nf.CurveFit(flength=100, use_dynamic_sizing=True)
    popt, pcov = fitter.curve_fit(decay, *guide_data, p0=[1, 1, 0])
    np.testing.assert_allclose(popt, guide_scipy_fit[0], rtol=1e-6)
    np.testing.assert_allclose(pcov, guide_scipy_fit[1], rtol=1e-4)
    with pytest.raises(TypeError, match="made without a model"):
        fitter.fit()
    with pytest.raises(TypeError, match="unexpected keyword argument 'flenght'"):
        nf.CurveFit(flenght=100)


def test_guides_three_argument_callback_sees_and_stops_the_fit(guide_data):
    seen = []

    def monitor(iteration, cost, grad):
        seen.append((int(iteration), float(cost), np.shape(grad)))
        return iteration >= 2  # True stops the fit

    result = nf.CurveFit(decay, *guide_data, p0=[1, 1, 0], method="trf", callback=monitor).fit()
    assert [s[0] for s in seen] == [1, 2] and seen[0][2] == (3,)
    assert result.status == -3 and result.nit == 2  # stopped by the callback


def test_guides_convergence_monitor_runs_as_written(guide_data, capsys):
    class ConvergenceMonitor:  # the guide's "Real-Time Convergence Monitoring" block
        def __init__(self, print_every=10):
            self.costs, self.iterations, self.grads = [], [], []
            self.print_every = print_every

        def callback(self, iteration, cost, grad):
            self.iterations.append(iteration)
            self.costs.append(cost)
            self.grads.append(jnp.linalg.norm(grad))
            if iteration % self.print_every == 0:
                print(f"Iter {iteration:4d}: cost={cost:.6e}, ||grad||={self.grads[-1]:.6e}")

    def model(x, params):
        a, b, c = params
        return a * jnp.exp(-b * x) + c

    monitor = ConvergenceMonitor(print_every=1)
    result = nf.CurveFit(model, *guide_data, [1.0, 1.0, 0.0], callback=monitor.callback).fit()
    assert result.success and monitor.iterations == list(range(1, result.nit + 1))
    assert "Iter    1: cost=" in capsys.readouterr().out
