"""Each library model recovers known parameters from noisy data, starting from its
own guess; prefixes and sums behave like lmfit's."""

import jax
import numpy as np
import pytest
import scipy.special

import nlsq_fn as nf

M = nf.models
X = np.linspace(0.1, 10, 120)
X_LOG = np.logspace(-2, 2, 120)

CASES = [
    (M.Constant(), dict(c=2.5), X),
    (M.Linear(), dict(slope=-0.7, intercept=3.0), X),
    (M.Polynomial(degree=3), dict(c0=1.0, c1=-2.0, c2=0.5, c3=-0.03), X),
    (M.ExponentialDecay(), dict(amplitude=4.0, decay=2.2, offset=0.7), X),
    (M.PowerLaw(), dict(amplitude=2.0, exponent=-1.3), X),
    (M.Gaussian(), dict(amplitude=6.0, center=4.3, sigma=0.8), X),
    (M.Lorentzian(), dict(amplitude=6.0, center=5.3, sigma=0.6), X),
    (M.Voigt(), dict(amplitude=6.0, center=5.0, sigma=0.5, gamma=0.4), X),
    (M.PseudoVoigt(), dict(amplitude=6.0, center=5.0, sigma=0.7, fraction=0.3), X),
    (M.Logistic4(), dict(bottom=5.0, top=95.0, ec50=0.8, hill=1.3), X_LOG),
    (
        M.DampedOscillation(),
        dict(amplitude=2.0, decay=4.0, frequency=0.35, phase=0.3, offset=1.0),
        X,
    ),
    (
        M.sum_of_peaks(2, baseline=M.Constant()),
        dict(
            p0_amplitude=3.0,
            p0_center=3.0,
            p0_sigma=0.5,
            p1_amplitude=2.0,
            p1_center=6.5,
            p1_sigma=0.7,
            c=0.3,
        ),
        X,
    ),
]


@pytest.mark.parametrize(
    "model, truth, x",
    [
        # (Voigt, the slowest, in CI's extended step: its guess is `Gaussian`'s and
        # `Lorentzian`'s, both here by default)
        pytest.param(*case, marks=pytest.mark.extended)
        if type(case[0]).__name__ == "Voigt"
        else case
        for case in CASES
    ],
    ids=[type(c[0]).__name__ for c in CASES],
)
def test_model_recovers_parameters_from_its_guess(model, truth, x):
    assert model.param_names == tuple(truth)
    clean = np.asarray(model(x, truth))
    noise = 0.01 * np.ptp(clean) if np.ptp(clean) > 0 else 0.01
    y = clean + noise * np.random.default_rng(1).standard_normal(x.size)
    guess = model.guess(x, y)
    assert list(guess) == list(truth)
    result = nf.CurveFit(model, x, y).fit()  # p0 defaults to model.guess(x, y)
    assert result.success, result.message
    np.testing.assert_allclose(result.p0, [guess[k] for k in truth])
    for i, (name, value) in enumerate(truth.items()):
        error = abs(result.params[name] - value)
        assert error < 4 * result.perr[i], (name, result.params[name], value, result.perr[i])
        assert error < 0.1 * abs(value) + 1e-3, (name, result.params[name], value)


def test_peak_shapes_have_the_documented_area_and_width():
    x = np.linspace(-60, 60, 240001)
    dx = x[1] - x[0]
    for model in (M.Gaussian(), M.Lorentzian(), M.Voigt(), M.PseudoVoigt()):
        params = dict(amplitude=3.0, center=0.5, sigma=0.7, gamma=0.3, fraction=0.4)
        y = np.asarray(model(x, {k: params[k] for k in model.param_names}))
        # Lorentzian tails beyond |x| = 60 hold about 1% of the area.
        tolerance = 1e-6 if isinstance(model, M.Gaussian) else 0.015
        assert np.sum(y) * dx == pytest.approx(3.0, rel=tolerance)
        # Full width at half maximum is 2 * sigma (2.3548 sigma for the Gaussian).
        above = x[y >= 0.5 * y.max()]
        fwhm = 2 * np.sqrt(2 * np.log(2)) * 0.7 if isinstance(model, M.Gaussian) else 1.4
        if not isinstance(model, M.Voigt):
            assert above[-1] - above[0] == pytest.approx(fwhm, abs=2 * dx)
    # Voigt against SciPy's voigt_profile.
    y = np.asarray(M.Voigt()(x[::1000], dict(amplitude=2.0, center=0.5, sigma=0.7, gamma=0.3)))
    reference = 2.0 * scipy.special.voigt_profile(x[::1000] - 0.5, 0.7, 0.3)
    np.testing.assert_allclose(y, reference, rtol=1e-10, atol=1e-15)


def test_prefix_and_sum_name_and_evaluate_like_lmfit():
    model = M.Gaussian(prefix="g1_") + M.Gaussian(prefix="g2_") + M.Linear()
    assert model.param_names == (
        "g1_amplitude",
        "g1_center",
        "g1_sigma",
        "g2_amplitude",
        "g2_center",
        "g2_sigma",
        "slope",
        "intercept",
    )
    params = dict(
        g1_amplitude=1.0,
        g1_center=2.0,
        g1_sigma=0.5,
        g2_amplitude=2.0,
        g2_center=7.0,
        g2_sigma=1.0,
        slope=0.1,
        intercept=0.2,
    )
    expected = (
        np.asarray(M.Gaussian()(X, dict(amplitude=1.0, center=2.0, sigma=0.5)))
        + np.asarray(M.Gaussian()(X, dict(amplitude=2.0, center=7.0, sigma=1.0)))
        + 0.1 * X
        + 0.2
    )
    np.testing.assert_allclose(np.asarray(model(X, params)), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="different `prefix`es"):
        M.Gaussian() + M.Lorentzian()
    # Equal models compare and hash equal, so fits of them share compiled code.
    assert M.Gaussian(prefix="a_") == M.Gaussian(prefix="a_")
    assert hash(M.Polynomial(degree=2)) == hash(M.Polynomial(degree=2))


def test_models_work_with_the_functional_core():
    model = M.ExponentialDecay()
    y = np.asarray(model(X, dict(amplitude=4.0, decay=2.2, offset=0.7)))
    data = nf.Data(X, y)
    guess = model.guess(X, y)
    solution = jax.jit(nf.solve, static_argnums=0)(model, data, nf.init(model, data, guess))
    np.testing.assert_allclose(solution.x["decay"], 2.2, rtol=1e-8)


def test_partial_p0_is_completed_from_the_guess_and_bounds_by_name():
    model = M.Gaussian()
    y = np.asarray(model(X, dict(amplitude=6.0, center=4.3, sigma=0.8)))
    result = nf.CurveFit(model, X, y, p0={"center": 4.0}, bounds={"sigma": (0.1, 5.0)}).fit()
    assert result.p0[1] == 4.0
    np.testing.assert_allclose(result.popt, [6.0, 4.3, 0.8], rtol=1e-7)
    with pytest.raises(ValueError, match="unknown parameters"):
        nf.CurveFit(model, X, y, p0={"centre": 4.0}).fit()


def test_user_functions_join_library_models():
    def bump(x, height, center):
        return height / (1 + (x - center) ** 2)

    model = M.Function(bump, prefix="b_") + M.Linear()
    assert model.param_names == ("b_height", "b_center", "slope", "intercept")
    truth = dict(b_height=2.0, b_center=4.0, slope=0.1, intercept=0.5)
    y = np.asarray(model(X, truth))
    result = nf.CurveFit(
        model, X, y, p0=dict(b_height=1.0, b_center=3.5, slope=0.0, intercept=0.0)
    ).fit()
    np.testing.assert_allclose(result.popt, list(truth.values()), rtol=1e-7)
    with pytest.raises(ValueError, match="has no guess"):
        nf.CurveFit(model, X, y).fit()
    guessed = M.Function(bump, guesser=lambda x, y: dict(height=y.max(), center=x[y.argmax()]))
    assert guessed.guess(X, y) == dict(height=y.max(), center=X[y.argmax()])


@pytest.mark.parametrize("model", [M.Gaussian(), M.Lorentzian()], ids=["Gaussian", "Lorentzian"])
def test_peak_guesses_find_dips(model):
    truth = dict(amplitude=-6.0, center=4.3, sigma=0.8)
    y = np.asarray(model(X, truth)) + 0.05 * np.random.default_rng(4).standard_normal(X.size)
    guess = model.guess(X, y)
    assert guess["amplitude"] < 0 and abs(guess["center"] - 4.3) < 0.2
    result = nf.CurveFit(model, X, y).fit()  # same shape as above: no new compilation
    np.testing.assert_allclose(result.popt, list(truth.values()), rtol=0.05)


# --- NLSQ's function library (issue 21) ------------------------------------------------


LIBRARY = [
    ("linear", (2.5, 3.0), lambda x, a, b: a * x + b),
    ("exponential_decay", (3.0, 0.7, 0.5), lambda x, a, b, c: a * np.exp(-b * x) + c),
    ("exponential_growth", (1.0, 0.5, 1.0), lambda x, a, b, c: a * np.exp(b * x) + c),
    ("gaussian", (2.0, 2.5, 0.5), lambda x, a, m, s: a * np.exp(-((x - m) ** 2) / (2 * s**2))),
    ("lorentzian", (2.0, 2.5, 0.4), lambda x, a, m, g: a / (1 + ((x - m) / g) ** 2)),
    ("sigmoid", (3.0, 2.5, 2.0, 0.5), lambda x, L, m, k, b: L / (1 + np.exp(-k * (x - m))) + b),
    ("power_law", (2.0, 1.5), lambda x, a, b: a * x**b),
]


@pytest.mark.slow  # seven fits, each a new model
@pytest.mark.parametrize(("name", "params", "formula"), LIBRARY, ids=[e[0] for e in LIBRARY])
def test_function_library_formulas_and_auto_start(name, params, formula):
    function = getattr(nf.models, name)
    x = np.linspace(0.1, 5, 60)
    y = formula(x, *params)
    np.testing.assert_allclose(function(x, *params), y, rtol=1e-12)
    lower, upper = function.bounds()
    assert len(lower) == len(upper) == len(params)
    popt, _ = nf.curve_fit(function, x, y, p0="auto")
    np.testing.assert_allclose(popt, params, rtol=1e-5)


def test_library_function_formula_and_auto_start():
    x = np.linspace(0.1, 5, 60)
    y = 2.0 * np.exp(-((x - 2.5) ** 2) / (2 * 0.5**2))
    np.testing.assert_allclose(nf.models.gaussian(x, 2.0, 2.5, 0.5), y, rtol=1e-12)
    popt, _ = nf.curve_fit(nf.models.gaussian, x, y, p0="auto")
    np.testing.assert_allclose(popt, [2.0, 2.5, 0.5], rtol=1e-6)


def test_polynomial_is_highest_power_first():
    quadratic = nf.models.polynomial(2)
    x = np.linspace(-2, 2, 20)
    y = 1.0 * x**2 - 2.0 * x + 3.0
    np.testing.assert_allclose(quadratic.estimate_p0(x, y), [1.0, -2.0, 3.0], atol=1e-9)
    np.testing.assert_allclose(quadratic(x, 1.0, -2.0, 3.0), y)
