"""Fixed and tied parameters (`curve_fit(..., fixed=, ties=)`, `CurveFit`) against
SciPy's fit of the model reduced by hand and the delta method; global fits
(`global_fit`) against `scipy.optimize.least_squares` on the stacked problem."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import nlsq_fn as nf


def decay(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def decay_np(x, a, b, c):
    return a * np.exp(-b * x) + c


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 4.0, 60)
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + 0.02 * rng.normal(size=x.size)
    sigma = 0.02 * (1.0 + 0.5 * rng.random(x.size))
    return x, y, sigma


# Both fits converged well below the tolerances compared (SciPy's use finite differences).
TIGHT = dict(ftol=1e-12, xtol=1e-12, gtol=1e-12)


def assert_close(actual, expected, rtol=1e-6, atol=1e-12):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


# --- fixed and tied parameters ------------------------------------------------------


@pytest.mark.parametrize("method", ["lm", "trf"])
def test_fixed_equals_scipy_on_the_reduced_model(data, method):
    x, y, sigma = data
    result = nf.curve_fit(
        decay, x, y, p0=[1.0, 1.0, 0.1], sigma=sigma, method=method, fixed={"b": 1.25},
        **TIGHT,
    )
    popt, pcov = scipy.optimize.curve_fit(
        lambda x, a, c: decay_np(x, a, 1.25, c), x, y, p0=[1.0, 0.1], sigma=sigma,
        method=method, **TIGHT,
    )
    assert_close(result.popt[[0, 2]], popt)
    assert result.popt[1] == 1.25
    assert_close(result.pcov[np.ix_([0, 2], [0, 2])], pcov)
    assert np.all(result.pcov[1] == 0) and np.all(result.pcov[:, 1] == 0)
    assert result.fixed == ("b",) and result.n_params == 2 and result.dof == x.size - 2
    assert "(fixed)" in result.summary()


def test_fixed_with_bounds_for_all_parameters(data):
    x, y, _ = data
    lower, upper = [0.0, 0.0, 0.6], [10.0, 5.0, 2.0]  # c is held at its lower bound
    result = nf.curve_fit(
        decay, x, y, p0=[1.0, 1.0, 1.0], bounds=(lower, upper), fixed={"a": 2.4}
    )
    popt, pcov = scipy.optimize.curve_fit(
        lambda x, b, c: decay_np(x, 2.4, b, c), x, y, p0=[1.0, 1.0],
        bounds=([0.0, 0.6], [5.0, 2.0]),
    )
    assert_close(result.popt[1:], popt, rtol=1e-5)
    assert_close(result.pcov[1:, 1:], pcov, rtol=1e-4)
    assert result.lower[0] == result.upper[0] == 2.4


def test_tie_equals_scipy_and_the_delta_method(data):
    x, y, sigma = data
    # c = 0.2 a²: var(c) = (0.4 a)² var(a), cov(a, c) = 0.4 a var(a).
    result = nf.curve_fit(
        decay, x, y, p0={"a": 1.0, "b": 1.0, "c": 0.0}, sigma=sigma, absolute_sigma=True,
        ties={"c": lambda p: 0.2 * p["a"] ** 2}, **TIGHT,
    )
    popt, pcov = scipy.optimize.curve_fit(
        lambda x, a, b: decay_np(x, a, b, 0.2 * a**2), x, y, p0=[1.0, 1.0], sigma=sigma,
        absolute_sigma=True, **TIGHT,
    )
    a = popt[0]
    assert_close(result.popt, [a, popt[1], 0.2 * a**2])
    assert_close(result.pcov[:2, :2], pcov)
    assert_close(result.pcov[2, 2], (0.4 * a) ** 2 * pcov[0, 0])
    assert_close(result.pcov[0, 2], 0.4 * a * pcov[0, 0])
    assert_close(result.pcov[1, 2], 0.4 * a * pcov[0, 1])
    assert result.tied == ("c",) and "(tied)" in result.summary()


def test_tie_reading_a_fixed_parameter(data):
    x, y, _ = data
    result = nf.curve_fit(
        decay, x, y, p0=[1.0, 1.0, 0.0], fixed={"b": 1.3},
        ties={"c": lambda p: p["a"] / (1.0 + p["b"])}, **TIGHT,
    )
    popt, pcov = scipy.optimize.curve_fit(
        lambda x, a: decay_np(x, a, 1.3, a / 2.3), x, y, p0=[1.0], **TIGHT
    )
    assert_close(result.popt, [popt[0], 1.3, popt[0] / 2.3])
    assert_close(result.perr, np.sqrt([pcov[0, 0], 0.0, pcov[0, 0] / 2.3**2]))


def test_named_model_and_p0_for_free_parameters_only(data):
    x, y, _ = data
    model = nf.models.ExponentialDecay()  # amplitude * exp(-x / decay) + offset
    result = nf.curve_fit(model, x, y, fixed={"offset": 0.5})  # p0 from model.guess
    popt, pcov = scipy.optimize.curve_fit(
        lambda x, amplitude, decay: amplitude * np.exp(-x / decay) + 0.5, x, y,
        p0=[2.0, 1.0],
    )
    assert result.names == ("amplitude", "decay", "offset")
    assert result.params["offset"] == 0.5
    assert_close(result.popt[:2], popt, rtol=1e-5)
    assert_close(result.pcov[:2, :2], pcov, rtol=1e-4)
    again = nf.curve_fit(model, x, y, p0=[2.0, 1.0], fixed={"offset": 0.5})  # free only
    assert_close(again.popt, result.popt, rtol=1e-6)


def test_curve_fit_class_refits_with_new_fixed_data(data):
    x, y, _ = data
    fitter = nf.CurveFit(decay, x, y, p0=[1.0, 1.0, 0.1], fixed={"c": 0.5})
    first = fitter.fit()
    second = fitter.fit(x, 2.0 * y - 0.5)  # a -> 2a, c stays 0.5
    popt, _ = scipy.optimize.curve_fit(
        lambda x, a, b: decay_np(x, a, b, 0.5), x, 2.0 * y - 0.5, p0=[1.0, 1.0]
    )
    assert_close(second.popt[:2], popt)
    assert first.popt[2] == second.popt[2] == 0.5


def test_fixed_under_jit_gives_the_host_result(data):
    x, y, _ = data
    host = nf.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.1], fixed={"b": 1.25})

    @jax.jit
    def fit(y):
        return nf.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.1], fixed={"b": 1.25})

    popt, pcov = fit(jnp.asarray(y))
    assert_close(popt, host.popt)
    assert_close(pcov, host.pcov, rtol=1e-5)


@pytest.mark.parametrize(
    "options, words",
    [
        (dict(fixed={"d": 1.0}), "'d'"),
        (dict(ties={"q": lambda p: p["a"]}), "'q'"),
        (dict(fixed={"b": 1.0}, ties={"b": lambda p: p["a"]}), "'b' is both fixed and tied"),
        (dict(fixed={"b": 9.0}, bounds=([0, 0, 0], [5, 5, 5])), "'b' is outside its bounds"),
        (dict(ties={"c": lambda p: p["b"], "b": lambda p: p["a"]}), "reads 'b'"),
        (dict(ties={"c": lambda p: p["a"]}, bounds=([0, 0, 0], [5, 5, 5])), "'c' is tied"),
        (dict(fixed={"a": 1.0, "b": 1.0, "c": 1.0}), "nothing is left to fit"),
        (dict(fixed={"a": [1.0, 2.0]}), "'a' must be one number"),
        (dict(p0=[1.0] * 4, fixed={"a": 1.0}), "`p0` has 4 values"),
    ],
)
def test_bad_structure_is_named(data, options, words):
    x, y, _ = data
    options = dict(p0=[1.0, 1.0, 1.0]) | options
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        nf.curve_fit(decay, x, y, **options)
