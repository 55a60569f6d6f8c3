"""Uncertainties and statistics against independent references: SciPy's t quantiles,
a finite-difference delta method, and hand-computed AIC / BIC / R²."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from helpers import tolerance

import nlsq_fn as nf


def peak(x, height, center, width, offset):
    return height * jnp.exp(-0.5 * ((x - center) / width) ** 2) + offset


RNG = np.random.default_rng(3)
X = np.linspace(-3, 5, 70)
Y = np.asarray(peak(X, 2.0, 1.0, 0.8, 0.3)) + 0.1 * RNG.standard_normal(70)
SIGMA = 0.08 + 0.04 * RNG.random(70)
P0 = [1.5, 0.5, 1.0, 0.0]


@pytest.fixture(
    scope="module",
    params=[(False, True), (True, True), (False, False), (True, False)],
    ids=["relative-x64", "absolute-x64", "relative-x32", "absolute-x32"],
)
def result(request):
    """A fit in float64, and one in float32 (x64 off): the tests below then use the
    float32 result with x64 on, computing their references in float64."""
    absolute_sigma, x64 = request.param
    with jax.enable_x64(x64):
        return nf.CurveFit(
            peak, X, Y, p0=P0, sigma=SIGMA, absolute_sigma=absolute_sigma, method="trf"
        ).fit()


@pytest.fixture(autouse=True)
def _result_precision(request):
    """A test of a float32 result runs with x64 off, as its user would."""
    if "result" not in request.fixturenames:
        yield
        return
    with jax.enable_x64(request.getfixturevalue("result").popt.dtype == np.float64):
        yield


def _rtol(result, rtol):
    """`rtol` for float64 results, `tolerance(rtol)` of the result's type otherwise."""
    return tolerance(rtol, result.popt.dtype)


def _model_np(x, p):
    with jax.enable_x64(True):  # the references are float64
        return np.asarray(peak(np.asarray(x, float), *np.asarray(p, float)))


def test_student_t_quantiles_match_scipy():
    q = np.array([1e-9, 0.025, 0.3, 0.8, 0.975, 0.995, 1 - 1e-9])
    for df in (1, 2, 5.5, 30, 1000):
        np.testing.assert_allclose(nf.student_t_ppf(q, df), scipy.stats.t.ppf(q, df), rtol=1e-9)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        nf.student_t_ppf(1.0, 3)


def test_parameter_intervals_use_scipys_t_quantile(result):
    for level in (0.68, 0.95, 0.99):
        t = scipy.stats.t.ppf(0.5 * (1 + level), result.n_points - 4)
        intervals = result.conf_intervals(level)
        for i, name in enumerate(result.names):
            expected = (result.popt[i] - t * result.perr[i], result.popt[i] + t * result.perr[i])
            np.testing.assert_allclose(intervals[name], expected, rtol=_rtol(result, 1e-10))
    assert list(result.conf_intervals()) == ["height", "center", "width", "offset"]


def test_correlation_and_standard_errors(result):
    perr = np.sqrt(np.diag(result.pcov))
    rtol = _rtol(result, 1e-7)
    np.testing.assert_allclose(result.perr, perr, rtol=rtol)
    np.testing.assert_allclose(result.correlation, result.pcov / np.outer(perr, perr), rtol=rtol)
    np.testing.assert_allclose(np.diag(result.correlation), 1.0, rtol=rtol)


def test_statistics_match_hand_computation(result):
    y_fit = _model_np(X, result.popt)
    n, k = X.size, 4
    rtol = _rtol(result, 1e-10)
    chisqr = np.sum(((Y - y_fit) / SIGMA) ** 2)
    assert result.chisqr == pytest.approx(chisqr, rel=rtol)
    assert result.redchi == pytest.approx(chisqr / (n - k), rel=rtol)
    assert result.rmse == pytest.approx(np.sqrt(np.mean((Y - y_fit) ** 2)), rel=rtol)
    r2 = 1 - np.sum((Y - y_fit) ** 2) / np.sum((Y - Y.mean()) ** 2)
    assert result.r_squared == pytest.approx(r2, rel=rtol)
    assert result.aic == pytest.approx(n * np.log(chisqr / n) + 2 * k, rel=rtol)
    assert result.bic == pytest.approx(n * np.log(chisqr / n) + np.log(n) * k, rel=rtol)
    float32 = result.popt.dtype == np.float32  # near-zero values: rounding of the peak
    np.testing.assert_allclose(
        result.best_fit, y_fit, rtol=rtol, atol=rtol * np.max(np.abs(y_fit)) if float32 else 0
    )
    # The residual variance estimate behind pcov (absolute_sigma=False) is redchi.
    if not result.absolute_sigma:
        jac = np.asarray(result.jac, float)
        unscaled = np.linalg.inv(jac.T @ jac)
        # Relative to each entry's scale sqrt(C_ii C_jj): a small correlation is small
        # in float32's rounding too (0.05% of 2.4e-7 is well inside it).
        expected = unscaled * result.redchi
        scale = np.sqrt(np.outer(np.diag(expected), np.diag(expected)))
        excess = np.abs(result.pcov - expected) / (_rtol(result, 1e-8) * scale)
        assert np.all(excess <= 1), f"pcov off by {excess.max():.3g} tolerances"


def _finite_difference_gradient(x, p, step=1e-6):
    p = np.asarray(p, float)  # float64 steps, also from a float32 result
    columns = []
    for i in range(p.size):
        h = step * max(1.0, abs(p[i]))
        up, down = p.copy(), p.copy()
        up[i] += h
        down[i] -= h
        columns.append((_model_np(x, up) - _model_np(x, down)) / (2 * h))
    return np.stack(columns, axis=1)


def test_confidence_and_prediction_bands_match_finite_difference_delta_method(result):
    grid = np.linspace(-4, 6, 33)
    g = _finite_difference_gradient(grid, result.popt)
    variance = np.einsum("ij,jk,ik->i", g, result.pcov, g)
    rtol = _rtol(result, 1e-6)
    np.testing.assert_allclose(result.curve_std(grid), np.sqrt(variance), rtol=rtol)
    t = scipy.stats.t.ppf(0.975, X.size - 4)
    y = _model_np(grid, result.popt)
    lower, upper = result.confidence_band(grid)
    np.testing.assert_allclose(lower, y - t * np.sqrt(variance), rtol=rtol, atol=1e-9)
    np.testing.assert_allclose(upper, y + t * np.sqrt(variance), rtol=rtol, atol=1e-9)
    noise = 0.1**2 * (1.0 if result.absolute_sigma else result.redchi)
    lower, upper = result.prediction_band(grid, sigma=0.1)
    np.testing.assert_allclose(upper - y, t * np.sqrt(variance + noise), rtol=_rtol(result, 1e-6))
    np.testing.assert_allclose(y - lower, t * np.sqrt(variance + noise), rtol=_rtol(result, 1e-6))
    with pytest.raises(ValueError, match="give `sigma` at the new points"):
        result.prediction_band(grid)
    # At the data, the data's own sigma is used.
    lower, upper = result.prediction_band()
    g = _finite_difference_gradient(X, result.popt)
    variance = np.einsum("ij,jk,ik->i", g, result.pcov, g)
    scale = 1.0 if result.absolute_sigma else result.redchi
    y = _model_np(X, result.popt)
    half_width = t * np.sqrt(variance + SIGMA**2 * scale)
    np.testing.assert_allclose(upper - y, half_width, rtol=_rtol(result, 1e-6))
    np.testing.assert_allclose(y - lower, half_width, rtol=_rtol(result, 1e-6))


def test_band_coverage_is_nominal():
    """Over repeated noisy datasets the 90% confidence band covers the true curve at
    about 90% of the points (a check of the band's calibration, not of the code path)."""
    # Same configuration as the fixture's fits (sigma given, trf): no new compilation.
    fitter = nf.CurveFit(peak, X, Y, p0=P0, sigma=0.1 * np.ones(X.size), method="trf")
    truth = np.asarray(peak(X, 2.0, 1.0, 0.8, 0.3))
    rng = np.random.default_rng(11)
    covered = []
    for _ in range(40):
        result = fitter.fit(ydata=truth + 0.1 * rng.standard_normal(X.size))
        lower, upper = result.confidence_band(level=0.9)
        covered.append(np.mean((lower <= truth) & (truth <= upper)))
    assert 0.8 < np.mean(covered) < 0.97
