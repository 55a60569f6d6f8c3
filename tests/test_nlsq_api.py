"""NLSQ's calling forms (issue 21): the reusable `CurveFit()`, `LeastSquares`, the
result object's NLSQ names, the function library, the large-data names and the guide's
three-argument callback, each checked against SciPy or a closed form."""

import math

import numpy as np
import pytest
import scipy.optimize
import scipy.stats
from helpers import decay

import nlsq_fn as nf


@pytest.fixture(scope="module")
def data():
    x = np.linspace(0, 4, 40)
    noise = 0.02 * np.cos(5.3 * x)  # deterministic, not a model term
    return x, 2.0 * np.exp(-0.7 * x) + 0.3 + noise


@pytest.fixture(scope="module")
def scipy_fit(data):
    x, y = data
    return scipy.optimize.curve_fit(lambda x, a, b, c: a * np.exp(-b * x) + c, x, y, p0=[1, 1, 0])


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


def test_memory_requirements_and_chunking():
    stats = nf.estimate_memory_requirements(20_000_000, 4)
    per_point = 8 * (2 + 4 * 4)  # x, y; Jacobian row and 3 intermediates (float64)
    assert stats.n_points == 20_000_000 and stats.n_params == 4
    np.testing.assert_allclose(stats.total_memory_estimate_gb, 20e6 * per_point / 1e9)
    assert stats.recommended_chunk_size == 1_000_000 and stats.n_chunks == 20
    assert nf.estimate_memory_requirements(100_000, 3).n_chunks == 1
    fitter = nf.LargeDatasetFitter(memory_limit_gb=2.0)
    assert fitter.get_memory_recommendations(100_000, 3)["processing_strategy"] == "single_chunk"


@pytest.mark.extended
def test_large_dataset_fitter_chunked_fit_is_the_exact_fit(data, scipy_fit):
    config = nf.LDMemoryConfig(memory_limit_gb=1e-6, min_chunk_size=16, max_chunk_size=16)
    result = nf.LargeDatasetFitter(config=config).fit(decay, *data, p0=[1, 1, 0])
    assert result.n_chunks == math.ceil(40 / 16)
    np.testing.assert_allclose(result.popt, scipy_fit[0], rtol=1e-6)
    popt, pcov = nf.curve_fit_large(decay, *data, p0=[1, 1, 0])  # one chunk: curve_fit
    np.testing.assert_allclose(pcov, scipy_fit[1], rtol=1e-4)
    with pytest.raises(ValueError, match="has 2 points"):
        nf.curve_fit_large(decay, [1.0, 2.0, 3.0], [1.0, 2.0], p0=[1, 1, 0])
    with pytest.raises(ValueError, match="sigma length"):
        nf.curve_fit_large(decay, *data, p0=[1, 1, 0], sigma=np.ones(41))
