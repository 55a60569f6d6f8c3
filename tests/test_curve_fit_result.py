"""`CurveFitResult`, what a fit returns: its uncertainties and statistics against
independent references (SciPy's t quantiles, a finite-difference delta method,
hand-computed AIC / BIC / R²), SciPy's tuples, the summary and diagnostics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats
from helpers import LINE_X, LINE_Y, decay, line, peak, tolerance

import nlsq_fn as nf

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
    assert list(result.conf_intervals()) == ["amp", "center", "width", "offset"]


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


# --- NLSQ's names for it (issue 21): SciPy's tuples, closed-form statistics ----------------


def test_curve_fit_result_unpacks_as_scipys_tuples(guide_data, guide_scipy_fit):
    result = nf.curve_fit(decay, *guide_data, p0=[1, 1, 0])
    popt, pcov = result
    assert len(result) == 2 and result[0] is popt and result["pcov"] is pcov
    np.testing.assert_allclose(popt, guide_scipy_fit[0], rtol=1e-6)
    full = nf.curve_fit(decay, *guide_data, p0=[1, 1, 0], full_output=True)
    popt5, pcov5, infodict, mesg, ier = full
    assert len(full) == 5 and full[4] == ier and ier in (1, 2, 3, 4)
    np.testing.assert_allclose(infodict["fvec"], full.fun)
    assert isinstance(mesg, str) and full.r_squared == result.r_squared


def test_result_statistics_match_closed_forms(guide_data, guide_scipy_fit):
    x, y = guide_data
    result = nf.curve_fit(decay, x, y, p0=[1, 1, 0])
    popt, pcov = guide_scipy_fit
    prediction = popt[0] * np.exp(-popt[1] * x) + popt[2]
    residuals = y - prediction
    n, k = y.size, 3
    r2 = 1 - np.sum(residuals**2) / np.sum((y - y.mean()) ** 2)
    np.testing.assert_allclose(result.predictions, prediction, rtol=1e-6)
    np.testing.assert_allclose(result.residuals, residuals, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(result.mae, np.mean(np.abs(residuals)), rtol=1e-4)
    np.testing.assert_allclose(
        result.adj_r_squared, 1 - (1 - r2) * (n - 1) / (n - k - 1), rtol=1e-6
    )
    t = scipy.stats.t.ppf(0.975, n - k)
    half = t * np.sqrt(np.diag(pcov))
    np.testing.assert_allclose(
        result.confidence_intervals(alpha=0.95),
        np.column_stack([popt - half, popt + half]),
        rtol=1e-4,
    )
    interval = result.prediction_interval(x=[1.0, 2.0], alpha=0.9)
    assert interval.shape == (2, 2) and np.all(interval[:, 0] < interval[:, 1])
    lower, upper = result.confidence_band(x=[1.0, 2.0], alpha=0.9)
    assert np.all(interval[:, 0] < lower) and np.all(upper < interval[:, 1])


def test_result_record_filled_in_by_hand_raises_for_what_it_lacks():
    result = nf.CurveFitResult(nf.OptimizeResult())
    result["popt"] = np.array([1.0, 2.0])
    result["ydata"] = np.array([2.0, 4.0, 6.0])
    np.testing.assert_array_equal(result.popt, [1.0, 2.0])
    with pytest.raises(AttributeError):
        result.confidence_intervals()  # no pcov


# --- regressions of issue 9's defect 9: no diagnostic on exact data; p0 shown as given ---


def test_exact_data_raise_no_diagnostic():
    model = lambda x, a, b, c: a * jnp.exp(-b * x) + c  # noqa: E731
    x = np.linspace(0, 4, 40)
    y = 2.0 * np.exp(-1.3 * x) + 0.5  # exact: residuals at the rounding level
    result = nf.CurveFit(model, x, y, p0=[1.0, 1.0, 0.0]).fit()
    assert result.success and np.linalg.norm(result.fun) < 1e-12
    assert result.diagnostics == []


def test_p0_on_a_bound_is_reported_as_given():
    result = nf.CurveFit(line, LINE_X, LINE_Y, p0=[0.0, 1.0], bounds=([0, -5], [10, 5])).fit()
    np.testing.assert_array_equal(result.p0, [0.0, 1.0])
    assert "init = 0)" in result.summary() and "1e-10" not in result.summary()
    np.testing.assert_allclose(
        result.popt,
        scipy.optimize.curve_fit(line, LINE_X, LINE_Y, p0=[0.0, 1.0], bounds=([0, -5], [10, 5]))[0],
        rtol=1e-7,
    )
