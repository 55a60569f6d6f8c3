"""`curve_fit` and `CurveFit` give SciPy's `popt` and `pcov` (relative 1e-6 in float64; in
float32, x64 off, to what float32 determines)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from helpers import assert_matches_scipy_fit, decay, decay_np, tolerance, x64_params

import nlsq_fn as nf

TOLERANCES = dict(ftol=1e-12, xtol=1e-12, gtol=1e-12)


_decay_jac = jax.jit(jax.jacfwd(lambda p, x: decay(x, *p)))


def decay_jac(x, *p):
    return np.asarray(_decay_jac(jnp.asarray(p), x))


RNG = np.random.default_rng(0)
X = np.linspace(0, 4, 60)
Y = decay_np(X, 2.5, 1.3, 0.5) + 0.05 * RNG.standard_normal(60)
Y_OUTLIERS = Y.copy()
Y_OUTLIERS[::9] += 0.8
SIGMA = 0.03 + 0.05 * RNG.random(60)
P0 = [1.0, 0.5, 0.0]


def _scipy(y, **kwargs):
    with jax.enable_x64(True):  # SciPy's float64 answer, also under x64=False
        return scipy.optimize.curve_fit(decay_np, X, y, p0=P0, jac=decay_jac, **kwargs)


def _compare(ours, reference):
    """SciPy's answer, in float32 (x64 off) to what float32 determines."""
    assert_matches_scipy_fit(ours[0], ours[1], reference, X.size)


# Each weighting once by default (the covariance does not depend on the strategy); the
# other three rows in CI's extended step.
@pytest.mark.parametrize(
    "method, weights",
    [
        ("lm", "none"),
        ("trf", "relative"),
        ("trf", "absolute"),
        pytest.param("trf", "none", marks=pytest.mark.extended),
        pytest.param("lm", "relative", marks=pytest.mark.extended),
        pytest.param("lm", "absolute", marks=pytest.mark.extended),
    ],
)
def test_covariance_with_and_without_sigma(method, weights, x64):
    options = dict(method=method, **TOLERANCES)
    if weights != "none":
        options.update(sigma=SIGMA, absolute_sigma=weights == "absolute")
    reference = _scipy(Y, **options)
    _compare(nf.curve_fit(decay, X, Y, p0=P0, **options), reference)
    result = nf.CurveFit(decay, X, Y, p0=P0, **options).fit()
    _compare((result.popt, result.pcov), reference)
    np.testing.assert_allclose(result.perr, np.sqrt(np.diag(result.pcov)), rtol=1e-6)


@pytest.mark.parametrize("absolute_sigma", [False, True])
def test_covariance_with_bounds(absolute_sigma, x64):
    # The upper bound on `a` is active at the solution.
    bounds = ([0.0, 0.0, -1.0], [2.3, 5.0, 1.0])
    options = dict(bounds=bounds, sigma=SIGMA, absolute_sigma=absolute_sigma, **TOLERANCES)
    reference = _scipy(Y, **options)
    ours = nf.curve_fit(decay, X, Y, p0=P0, **options)
    _compare(ours, reference)
    assert ours[0][0] == pytest.approx(2.3, rel=1e-6 if x64 else 1e-5)


def test_bounds_by_name():
    bounds = {"a": (0.0, 2.3), "b": (0.0, 5.0)}
    result = nf.CurveFit(decay, X, Y, p0=P0, bounds=bounds, **TOLERANCES).fit()
    reference = _scipy(Y, bounds=([0.0, 0.0, -np.inf], [2.3, 5.0, np.inf]), **TOLERANCES)
    _compare((result.popt, result.pcov), reference)
    assert result.active_mask.tolist() == [1, 0, 0]


# The covariance's loss weighting is one formula; each loss's own terms are checked
# against SciPy in test_scipy_agreement.py. Huber and arctan here in CI's extended step.
@pytest.mark.parametrize(
    "loss",
    [
        "soft_l1",
        "cauchy",
        pytest.param("huber", marks=pytest.mark.extended),
        pytest.param("arctan", marks=pytest.mark.extended),
    ],
)
@pytest.mark.parametrize("x64", x64_params(float32_default=False), indirect=True)
def test_covariance_with_robust_loss(loss, x64):
    # SciPy's pcov with a robust loss uses the loss-scaled Jacobian and 2 * cost.
    options = dict(method="trf", loss=loss, f_scale=0.2, **TOLERANCES)
    reference = _scipy(Y_OUTLIERS, **options)
    _compare(nf.curve_fit(decay, X, Y_OUTLIERS, p0=P0, **options), reference)


def test_rank_deficient_jacobian_gives_inf_for_undetermined_parameters_and_warns(x64):
    def degenerate(x, a, b, c):  # only a + b is determined
        return (a + b) * jnp.exp(-c * x)

    jac = jax.jit(jax.jacfwd(lambda p, x: degenerate(x, *p)))
    with jax.enable_x64(True):
        y = decay_np(X, 2.5, 1.3, 0.0) + 0.05 * np.random.default_rng(0).standard_normal(60)
        reference = scipy.optimize.curve_fit(
            lambda x, *p: np.asarray(degenerate(x, *p)),
            X,
            y,
            p0=P0,
            method="trf",
            jac=lambda x, *p: np.asarray(jac(jnp.asarray(p), x)),
            **TOLERANCES,
        )
    with pytest.warns(nf.OptimizeWarning, match="rank 2 < 3"):
        popt, pcov = nf.curve_fit(degenerate, X, y, p0=P0, method="trf", **TOLERANCES)
    np.testing.assert_allclose(
        popt[0] + popt[1], reference[0][0] + reference[0][1], rtol=tolerance(1e-6)
    )
    # a and b are not determined: infinite (co)variances, as SciPy's default method gives
    # (its 'trf' pseudo-inverse would show them with a finite error); c keeps SciPy's value.
    assert np.all(np.isinf(pcov[:2])) and np.all(np.isinf(pcov[:, :2]))
    np.testing.assert_allclose(pcov[2, 2], reference[1][2, 2], rtol=tolerance(1e-6))


def test_too_few_points_give_infinite_covariance_with_a_warning():
    with pytest.warns(nf.OptimizeWarning, match="could not be estimated"):
        _, pcov = nf.curve_fit(decay, X[:3], Y[:3], p0=P0, method="trf")
    assert np.all(np.isinf(pcov))


def test_nan_policy_omit_matches_scipy():
    y = Y.copy()
    y[[5, 17]] = np.nan
    reference = _scipy(y, nan_policy="omit", **TOLERANCES)
    result = nf.CurveFit(decay, X, y, p0=P0, nan_policy="omit", **TOLERANCES).fit()
    _compare((result.popt, result.pcov), reference)
    assert result.n_points == 58


def test_bad_input_names_the_users_arguments():
    y = Y.copy()
    y[3] = np.nan
    # SciPy's messages, with the argument's name.
    with pytest.raises(ValueError, match=r"must not contain infs or NaNs \(`ydata`\)"):
        nf.curve_fit(decay, X, y, p0=P0)
    with pytest.raises(ValueError, match=r"nan values \(`ydata`\)"):
        nf.curve_fit(decay, X, y, p0=P0, nan_policy="raise")
    with pytest.raises(ValueError, match="nan_policy='propagate'` is not supported"):
        nf.curve_fit(decay, X, Y, p0=P0, nan_policy="propagate")
    with pytest.raises(ValueError, match="`sigma`"):
        nf.curve_fit(decay, X, Y, p0=P0, sigma=np.ones(5))
    with pytest.raises(ValueError, match="`sigma` must be finite and strictly positive"):
        nf.curve_fit(decay, X, Y, p0=P0, sigma=np.zeros(60))
    with pytest.raises(ValueError, match="`p0` has 2 values but the model has 3"):
        nf.curve_fit(decay, X, Y, p0=[1.0, 2.0])
    with pytest.raises(ValueError, match="`p0` is outside the bounds for 'a'"):
        nf.curve_fit(decay, X, Y, p0=P0, bounds=([2.0, 0, -1], [3.0, 5, 1]))
    with pytest.raises(ValueError, match="unknown parameters"):
        nf.CurveFit(decay, X, Y, p0=P0, bounds={"d": (0, 1)}).fit()
    with pytest.raises(ValueError, match="'lm' supports only the 'linear' loss"):
        nf.CurveFit(decay, X, Y, p0=P0, method="lm", loss="huber")
    with pytest.raises(RuntimeError, match="Optimal parameters not found"):
        nf.curve_fit(decay, X, Y, p0=P0, max_nfev=2)


def test_full_output_matches_scipy():
    options = dict(method="lm", **TOLERANCES)
    popt, pcov, infodict, message, ier = nf.curve_fit(
        decay, X, Y, p0=P0, full_output=True, **options
    )
    reference = _scipy(Y, full_output=True, **options)
    _compare((popt, pcov), reference)
    np.testing.assert_allclose(infodict["fvec"], reference[2]["fvec"], rtol=1e-6, atol=1e-10)
    # SciPy's `ier` (MINPACK's info code) and `mesg` (leastsq's text), not our own.
    assert ier == reference[4] and message == reference[3]
    assert ier in (1, 2, 3, 4)


def test_two_input_columns_with_nan_omit_match_scipy():
    def surface(xy, a, b, c):
        return a * xy[0] + b * xy[1] ** 2 + c

    jac = jax.jit(jax.jacfwd(lambda p, xy: surface(xy, *p)))
    rng = np.random.default_rng(4)
    xy = rng.random((2, 50))
    y = 1.5 * xy[0] + 0.7 * xy[1] ** 2 + 0.2 + 0.01 * rng.standard_normal(50)
    xy[1, 3] = np.nan
    y[7] = np.nan
    reference = scipy.optimize.curve_fit(
        lambda xy, *p: np.asarray(surface(xy, *p)),
        xy,
        y,
        p0=P0,
        nan_policy="omit",
        jac=lambda xy, *p: np.asarray(jac(jnp.asarray(p), xy)),
        **TOLERANCES,
    )
    _compare(nf.curve_fit(surface, xy, y, p0=P0, nan_policy="omit", **TOLERANCES), reference)


def _numpy_decay(x, a, b, c):
    return a * np.exp(-b * x) + c


def _numpy_decay_jac(x, a, b, c):
    e = np.exp(-b * x)
    return np.stack([e, -a * x * e, np.ones_like(x)], axis=-1)


def _covariance(n, seed=3):
    a = np.random.default_rng(seed).normal(0, 0.05, (n, n))
    return a @ a.T + 0.01 * np.eye(n)


def test_numpy_model_with_a_covariance_and_omitted_nans_matches_scipy():
    """A NumPy model runs on the host while the whitening by the covariance's Cholesky
    factor stays in the compiled fit (the factor once leaked from its trace)."""
    sigma = _covariance(X.size)
    y = Y.copy()
    y[[4, 30]] = np.nan
    with pytest.warns(UserWarning, match="host"):
        popt, pcov = nf.curve_fit(
            _numpy_decay, X, y, p0=P0, sigma=sigma, nan_policy="omit", method="trf"
        )
    expected, expected_cov = scipy.optimize.curve_fit(
        _numpy_decay, X, y, p0=P0, sigma=sigma, nan_policy="omit", method="trf"
    )
    np.testing.assert_allclose(popt, expected, rtol=1e-6)
    np.testing.assert_allclose(pcov, expected_cov, rtol=1e-4)


@pytest.mark.extended
def test_jacobian_function_with_a_covariance_equals_the_diagonal_sigma_fit():
    """A diagonal covariance is the 1-D `sigma` of its square roots (SciPy's
    test_curvefit_simplecovariance, with `jac`): same parameters and covariance."""
    sigma = np.full(X.size, 0.05)
    for absolute_sigma in (False, True):
        with pytest.warns(UserWarning, match="host"):
            by_sigma = nf.curve_fit(
                _numpy_decay,
                X,
                Y,
                p0=P0,
                sigma=sigma,
                jac=_numpy_decay_jac,
                absolute_sigma=absolute_sigma,
            )
            by_covariance = nf.curve_fit(
                _numpy_decay,
                X,
                Y,
                p0=P0,
                sigma=np.diag(sigma**2),
                jac=_numpy_decay_jac,
                absolute_sigma=absolute_sigma,
            )
        np.testing.assert_allclose(by_covariance[0], by_sigma[0], rtol=1e-10)
        np.testing.assert_allclose(by_covariance[1], by_sigma[1], rtol=1e-8)
