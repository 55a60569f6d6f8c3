"""`curve_fit`, the function: SciPy's behaviours (sigma, bounds, methods, full_output,
nan_policy, input types, its errors), each against `scipy.optimize.curve_fit` on the same
input: `popt` and `pcov` to relative 1e-6 in float64 (in float32, x64 off, to what float32
determines)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from helpers import (
    DECAY_P0,
    DECAY_X,
    DECAY_Y,
    LINE_X,
    LINE_Y,
    TIGHT,
    assert_matches_scipy_fit,
    decay,
    decay_jac_np,
    decay_np,
    decay_residual_jac_np,
    decay_residual_np,
    line,
    tolerance,
    x64_params,
)

import nlsq_fn as nf

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
    options = dict(method=method, **TIGHT)
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
    options = dict(bounds=bounds, sigma=SIGMA, absolute_sigma=absolute_sigma, **TIGHT)
    reference = _scipy(Y, **options)
    ours = nf.curve_fit(decay, X, Y, p0=P0, **options)
    _compare(ours, reference)
    assert ours[0][0] == pytest.approx(2.3, rel=1e-6 if x64 else 1e-5)


def test_bounds_by_name():
    bounds = {"a": (0.0, 2.3), "b": (0.0, 5.0)}
    result = nf.CurveFit(decay, X, Y, p0=P0, bounds=bounds, **TIGHT).fit()
    reference = _scipy(Y, bounds=([0.0, 0.0, -np.inf], [2.3, 5.0, np.inf]), **TIGHT)
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
    options = dict(method="trf", loss=loss, f_scale=0.2, **TIGHT)
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
            **TIGHT,
        )
    with pytest.warns(nf.OptimizeWarning, match="rank 2 < 3"):
        popt, pcov = nf.curve_fit(degenerate, X, y, p0=P0, method="trf", **TIGHT)
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
    reference = _scipy(y, nan_policy="omit", **TIGHT)
    result = nf.CurveFit(decay, X, y, p0=P0, nan_policy="omit", **TIGHT).fit()
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
    options = dict(method="lm", **TIGHT)
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
        **TIGHT,
    )
    _compare(nf.curve_fit(surface, xy, y, p0=P0, nan_policy="omit", **TIGHT), reference)


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
            decay_np, X, y, p0=P0, sigma=sigma, nan_policy="omit", method="trf"
        )
    expected, expected_cov = scipy.optimize.curve_fit(
        decay_np, X, y, p0=P0, sigma=sigma, nan_policy="omit", method="trf"
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
                decay_np,
                X,
                Y,
                p0=P0,
                sigma=sigma,
                jac=decay_jac_np,
                absolute_sigma=absolute_sigma,
            )
            by_covariance = nf.curve_fit(
                decay_np,
                X,
                Y,
                p0=P0,
                sigma=np.diag(sigma**2),
                jac=decay_jac_np,
                absolute_sigma=absolute_sigma,
            )
        np.testing.assert_allclose(by_covariance[0], by_sigma[0], rtol=1e-10)
        np.testing.assert_allclose(by_covariance[1], by_sigma[1], rtol=1e-8)


# --- SciPy's interface items -----------------------------------------------------------


def test_curve_fit_covariance_sigma_matches_scipy(x64):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((DECAY_X.size, DECAY_X.size))
    cov = 1e-3 * (a @ a.T / DECAY_X.size + np.eye(DECAY_X.size))
    ours = nf.curve_fit(decay, DECAY_X, DECAY_Y, p0=DECAY_P0, sigma=cov, **TIGHT)
    with jax.enable_x64(True):  # SciPy's float64 answer, also under x64=False
        reference = scipy.optimize.curve_fit(
            lambda x, *p: np.asarray(decay(x, *p)),
            DECAY_X,
            DECAY_Y,
            p0=DECAY_P0,
            sigma=cov,
            **TIGHT,
        )
    assert_matches_scipy_fit(ours[0], ours[1], reference, DECAY_X.size)
    # A diagonal covariance is the same fit as its standard deviations.
    std = 0.02 + 0.01 * DECAY_X
    diagonal = nf.curve_fit(decay, DECAY_X, DECAY_Y, p0=DECAY_P0, sigma=np.diag(std**2), **TIGHT)
    vector = nf.curve_fit(decay, DECAY_X, DECAY_Y, p0=DECAY_P0, sigma=std, **TIGHT)
    np.testing.assert_allclose(diagonal[0], vector[0], rtol=tolerance(1e-8))
    np.testing.assert_allclose(diagonal[1], vector[1], rtol=tolerance(1e-6))
    with pytest.raises(ValueError, match="positive definite"):
        nf.curve_fit(decay, DECAY_X, DECAY_Y, p0=DECAY_P0, sigma=-np.eye(DECAY_X.size))


@pytest.mark.extended
def test_curve_fit_scipy_keywords():
    # maxfev (leastsq's name) limits the evaluations for lm and trf alike.
    for method in ("lm", "trf"):
        with pytest.raises(RuntimeError, match="Optimal parameters not found"):
            nf.curve_fit(decay, DECAY_X, DECAY_Y, p0=DECAY_P0, method=method, maxfev=2)
    with pytest.raises(ValueError, match="'args' is not a supported"):
        nf.curve_fit(decay, DECAY_X, DECAY_Y, p0=DECAY_P0, args=(1,))
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        nf.curve_fit(decay, DECAY_X, DECAY_Y, p0=DECAY_P0, bogus=1)
    bounds = scipy.optimize.Bounds([0.0, 0.0, -1.0], [2.3, 5.0, 1.0])
    ours = nf.curve_fit(decay, DECAY_X, DECAY_Y, p0=DECAY_P0, bounds=bounds, **TIGHT)
    as_pair = nf.curve_fit(
        decay, DECAY_X, DECAY_Y, p0=DECAY_P0, bounds=(bounds.lb, bounds.ub), **TIGHT
    )
    np.testing.assert_array_equal(ours[0], as_pair[0])


def test_curve_fit_full_output_keys_and_minpack_factors():
    f_np = lambda x, *p: np.asarray(decay(x, *p))  # noqa: E731
    for method in ("trf", "lm"):
        popt, pcov, info, message, ier = nf.curve_fit(
            decay, DECAY_X, DECAY_Y, p0=DECAY_P0, method=method, full_output=True, **TIGHT
        )
        ref = scipy.optimize.curve_fit(
            f_np, DECAY_X, DECAY_Y, p0=DECAY_P0, method=method, full_output=True
        )
        assert set(ref[2]) <= set(info)
        assert ier in (1, 2, 3, 4) and isinstance(message, str)
        np.testing.assert_allclose(info["fvec"], ref[2]["fvec"], rtol=1e-5, atol=1e-9)
    # MINPACK's factors: J P = Q R with R = fjac.T[:n] (upper), ipvt 0-based pivots.
    n = len(DECAY_P0)
    jac = decay_residual_jac_np(popt)
    r = np.triu(info["fjac"].T[:n])
    permuted = jac[:, info["ipvt"]]
    np.testing.assert_allclose(r.T @ r, permuted.T @ permuted, rtol=1e-10, atol=1e-12)
    # (J P)ᵀ fvec = Rᵀ Qᵀ fvec = Rᵀ qtf.
    np.testing.assert_allclose(r.T @ info["qtf"], permuted.T @ info["fvec"], atol=1e-12)
    assert sorted(info["ipvt"]) == list(range(n))


def _leastsq_covariance(info):
    """SciPy's own recipe (`leastsq`, full_output) for ``inv(JᵀJ)`` from MINPACK's
    `fjac` and `ipvt`."""
    perm = info["ipvt"]
    n = len(perm)
    r = np.triu(np.transpose(info["fjac"])[:n, :])
    inv_r = scipy.linalg.solve_triangular(r, np.eye(n))
    inv_r[perm] = inv_r.copy()
    return inv_r @ inv_r.T


def test_curve_fit_lm_full_output_is_scipys():
    # A decay whose columns differ in norm, so that MINPACK pivots them ([2 0 1]).
    x = np.linspace(0, 3, 40)
    y = 1 + 30 * np.exp(-1.3 * x) + 0.05 * np.sin(7 * x)

    def f_np(x, a, b, c):
        return a + b * np.exp(-c * x)

    def jac(x, a, b, c, xp=jnp):
        e = xp.exp(-c * x)
        return xp.stack([xp.ones_like(x), e, -b * x * e], axis=1)

    for given in (False, True):
        _, _, info, _, _ = nf.curve_fit(
            lambda x, a, b, c: a + b * jnp.exp(-c * x),
            x,
            y,
            p0=[1.0, 20.0, 1.0],
            jac=jac if given else None,
            full_output=True,
        )
        _, _, reference, _, _ = scipy.optimize.curve_fit(
            f_np,
            x,
            y,
            p0=[1.0, 20.0, 1.0],
            full_output=True,
            jac=(lambda *args: jac(*args, xp=np)) if given else None,
        )
        # SciPy's keys (`njev` only for a given `jac`), nothing missing.
        assert set(info) - {"result"} == set(reference)
        assert info["ipvt"].dtype == reference["ipvt"].dtype
        np.testing.assert_array_equal(info["ipvt"], reference["ipvt"])
        assert sorted(info["ipvt"]) == [0, 1, 2]
        if given:
            assert int(info["njev"]) >= 1
        # SciPy's covariance recipe works on ours and gives the same inv(JᵀJ), to the
        # agreement of the two optima.
        ours, scipys = _leastsq_covariance(info), _leastsq_covariance(reference)
        np.testing.assert_allclose(ours, scipys, rtol=1e-6)
        jac_at_optimum = np.asarray(info["result"].jac)
        np.testing.assert_allclose(
            ours, np.linalg.inv(jac_at_optimum.T @ jac_at_optimum), rtol=1e-10
        )


def test_curve_fit_xdata_none_and_scipys_warning_class():
    y = np.array([1.0, 2.9, 5.1, 7.0, 9.1])

    def line(x, a, b):
        assert x is None  # passed on unchanged, as SciPy does
        return a + b * jnp.arange(5.0)

    popt, _ = nf.curve_fit(line, None, y, **TIGHT)
    np.testing.assert_allclose(popt, np.polyfit(np.arange(5.0), y, 1)[::-1], rtol=1e-10)
    # Two points, two parameters: no degrees of freedom, pcov is inf with SciPy's warning.
    with pytest.warns(scipy.optimize.OptimizeWarning):
        _, pcov = nf.curve_fit(
            lambda x, a, b: a + b * x, np.array([0.0, 1.0]), np.array([1.0, 3.0])
        )
    assert np.all(np.isinf(pcov))


@pytest.mark.extended
def test_zero_tolerances_follow_scipys_rules_for_lm():
    f_np = lambda x, *p: np.asarray(decay(x, *p))  # noqa: E731
    for name in ("ftol", "xtol", "gtol"):
        # curve_fit's 'lm' is leastsq's MINPACK: any tolerance >= 0, without a warning.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ours = nf.curve_fit(decay, DECAY_X, DECAY_Y, p0=DECAY_P0, method="lm", **{name: 0})[0]
        reference = scipy.optimize.curve_fit(
            f_np, DECAY_X, DECAY_Y, p0=DECAY_P0, method="lm", **{name: 0}
        )[0]
        np.testing.assert_allclose(ours, reference, rtol=1e-6)
    # least_squares' 'lm' wants every tolerance above machine epsilon, as SciPy's.
    with pytest.raises(ValueError, match="higher than machine epsilon") as scipys:
        scipy.optimize.least_squares(decay_residual_np, DECAY_P0, method="lm", ftol=0)
    with pytest.raises(ValueError, match="higher than machine epsilon") as ours:
        nf.least_squares(lambda p: decay(DECAY_X, *p) - DECAY_Y, DECAY_P0, method="lm", ftol=0)
    assert str(ours.value) == str(scipys.value)
    with pytest.raises(ValueError, match="`ftol` must be non-negative"):
        nf.curve_fit(decay, DECAY_X, DECAY_Y, p0=DECAY_P0, method="lm", ftol=-1.0)


# --- a scalar ydata, as SciPy takes it: broadcast against the model's values at p0 ---------

X30 = np.linspace(0.0, 2.0, 30)


def line_jax(x, a, b):
    return a + b * jnp.sin(x)


def line_numpy(x, a, b):
    return a + b * np.sin(np.asarray(x))  # NumPy: not traceable, run on the host


@pytest.mark.parametrize("model", [line_jax, line_numpy])
def test_scalar_ydata_is_fitted_as_scipy_fits_it(model):
    expected, _ = scipy.optimize.curve_fit(line_numpy, X30, 3.0, p0=[1.0, 1.0], method="trf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the host model's speed warning
        popt, _ = nf.curve_fit(model, X30, 3.0, p0=[1.0, 1.0])
    np.testing.assert_allclose(popt, expected, atol=1e-6)
    np.testing.assert_allclose(popt, [3.0, 0.0], atol=1e-6)  # the constant 3 exactly


def test_scalar_ydata_keeps_the_models_own_error():
    def broken(x, a, b):
        raise KeyError("the model's own error")

    with pytest.raises(KeyError, match="the model's own error"):
        nf.curve_fit(broken, X30, 3.0, p0=[1.0, 1.0])


# --- regressions of issue 9's front-end defects, each against SciPy on the same input ----
# Defect 1: padding must never change the data the model sees.


def _centred_line(x, a, b):
    return a * (x - x.mean()) + b


def test_model_using_x_as_a_whole_gets_scipys_answer():
    y = 2 * DECAY_X + 1
    expected, _ = scipy.optimize.curve_fit(_centred_line, DECAY_X, y, p0=[1, 1])
    popt, pcov = nf.curve_fit(_centred_line, DECAY_X, y, p0=[1, 1])
    np.testing.assert_allclose(popt, expected, rtol=1e-8)  # b = 5, not 6.5
    np.testing.assert_allclose(popt, [2.0, 5.0], rtol=1e-8)
    result = nf.CurveFit(_centred_line, DECAY_X, y, p0=[1, 1]).fit()
    np.testing.assert_allclose(result.popt, expected, rtol=1e-8)


def test_padding_refuses_a_model_that_is_not_pointwise():
    y = 2 * DECAY_X + 1
    with pytest.raises(ValueError, match="pointwise"):
        nf.curve_fit(_centred_line, DECAY_X, y, p0=[1, 1], pad=True)
    with pytest.raises(ValueError, match="pointwise"):
        nf.CurveFit(_centred_line, DECAY_X, y, p0=[1, 1], pad=True).fit()


@pytest.mark.extended
def test_padding_is_checked_on_every_fits_own_data():
    """A first fit of 32 points needs no padding (nothing to check); a later fit of 40
    points is padded to 64 and must be refused, not fitted with b = 3.5 (SciPy: 5)."""
    x32 = np.linspace(0, 4, 32)
    fitter = nf.CurveFit(_centred_line, p0=[1, 1], pad=True)
    expected, _ = scipy.optimize.curve_fit(_centred_line, x32, 2 * x32 + 1, p0=[1, 1])
    np.testing.assert_allclose(fitter.fit(x32, 2 * x32 + 1).popt, expected, rtol=1e-8)
    with pytest.raises(ValueError, match="pointwise"):
        fitter.fit(DECAY_X, 2 * DECAY_X + 1)
    # A pointwise model keeps padding on every length.
    line = nf.CurveFit(lambda x, a, b: a * x + b, p0=[1, 1], pad=True)
    for x in (x32, DECAY_X, np.linspace(0, 4, 100)):
        np.testing.assert_allclose(line.fit(x, 2 * x + 1).popt, [2, 1], rtol=1e-8)


def _plane(x, a, b, c):  # x has one row per point: (M, 2), as a DataFrame's values
    return a * x[:, 0] + b * x[:, 1] + c


@pytest.mark.extended
@pytest.mark.parametrize("pad", [False, True])
def test_xdata_with_one_row_per_point_works_as_in_scipy(pad):
    rng = np.random.default_rng(0)
    x = rng.random((40, 2))
    y = 1.5 * x[:, 0] - 2 * x[:, 1] + 0.5 + 0.01 * rng.standard_normal(40)
    expected, expected_cov = scipy.optimize.curve_fit(_plane, x, y, p0=[1, 1, 1])
    popt, pcov = nf.curve_fit(_plane, x, y, p0=[1, 1, 1], pad=pad)
    np.testing.assert_allclose(popt, expected, rtol=1e-6)
    np.testing.assert_allclose(pcov, expected_cov, rtol=1e-5)


def test_shape_errors_name_the_users_sizes():
    x = np.random.default_rng(0).random((40, 2))
    for pad in (False, True):
        with pytest.raises(ValueError) as error:
            nf.curve_fit(lambda x, a: a * x[:-1, 0], x, np.ones(40), p0=[1.0], pad=pad)
        assert "(39,)" in str(error.value) and "(40,)" in str(error.value)
        assert "64" not in str(error.value)


# Defect 3: ordinary inputs SciPy accepts: NumPy scalars, ints, lists, Bounds, pandas.


def test_numpy_scalars_lists_bounds_and_pandas_as_in_scipy():
    pd = pytest.importorskip("pandas")
    sigma = 0.1 + 0.01 * np.arange(10)
    odd_inputs = dict(
        sigma=list(sigma),
        absolute_sigma=np.True_,
        ftol=np.float32(1e-10),
        max_nfev=np.int64(50),
    )
    expected, expected_cov = scipy.optimize.curve_fit(
        line,
        LINE_X,
        pd.Series(LINE_Y),
        p0=np.array([1, 1]),
        bounds=[[-10, -10], [10, 10]],
        **odd_inputs,
    )
    for bounds in ([[-10, -10], [10, 10]], scipy.optimize.Bounds([-10, -10], [10, 10])):
        popt, pcov, _, _, ier = nf.curve_fit(
            line,
            pd.Series(LINE_X),
            pd.Series(LINE_Y),
            p0=np.array([1, 1]),
            bounds=bounds,
            verbose=np.int64(0),
            full_output=1,
            **odd_inputs,
        )
        assert ier > 0
        np.testing.assert_allclose(popt, expected, rtol=1e-7)
        np.testing.assert_allclose(pcov, expected_cov, rtol=1e-6)
    # A DataFrame as x: one row per point (SciPy hands it to the model as it is, so it
    # is compared with SciPy's fit of the same values as an array).
    frame = pd.DataFrame({"u": LINE_X, "v": LINE_X**2})
    plane = lambda x, a, b: a * x[:, 0] + b * x[:, 1]  # noqa: E731
    expected, _ = scipy.optimize.curve_fit(plane, frame.to_numpy(), LINE_Y, p0=[1, 1])
    np.testing.assert_allclose(
        nf.curve_fit(plane, frame, LINE_Y, p0=[1, 1])[0], expected, rtol=1e-7
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(ftol="tight"), "`ftol` must be a real number, got str."),
        (dict(max_nfev=2.5), "`max_nfev` must be None or a positive integer"),
        (dict(verbose=3), "`verbose` must be 0, 1 or 2, got 3."),
        (dict(absolute_sigma="yes"), "`absolute_sigma` must be True or False, got str."),
        (dict(bounds=(0, 1, 2)), "`bounds` must be a pair (lower, upper)"),
    ],
)
def test_bad_scalar_arguments_get_one_short_line(options, message):
    with pytest.raises((TypeError, ValueError)) as error:
        nf.curve_fit(line, LINE_X, LINE_Y, p0=[1, 1], **options)
    assert message in str(error.value)
    assert len(str(error.value)) < 200


# Defect 4: undetermined parameters have infinite variance; integer models are refused.


def test_undetermined_parameter_gets_infinite_variance_as_in_scipy():
    model = lambda x, a, b: a * x  # noqa: E731  (b does not enter the model)
    y = 2 * LINE_X + 0.01 * np.cos(9 * LINE_X)
    with pytest.warns(scipy.optimize.OptimizeWarning):
        _, scipy_default = scipy.optimize.curve_fit(model, LINE_X, y)  # lm: all inf
    _, scipy_trf = scipy.optimize.curve_fit(model, LINE_X, y, method="trf")  # pinv: b +/- 0
    assert np.isinf(scipy_default[1, 1]) and scipy_trf[1, 1] == 0
    with pytest.warns(nf.OptimizeWarning, match=r"could not be estimated for \['b'\]"):
        popt, pcov = nf.curve_fit(model, LINE_X, y)
    assert np.isinf(pcov[1, 1]) and np.isinf(pcov[0, 1]) and np.isinf(pcov[1, 0])
    np.testing.assert_allclose(pcov[0, 0], scipy_trf[0, 0], rtol=1e-6)  # a stays known


def test_model_returning_integers_is_refused():
    with pytest.raises(ValueError, match="must return floating-point values"):
        nf.curve_fit(lambda x, a: (a * x).astype(jnp.int32), LINE_X, LINE_Y, p0=[1.0])


# Defect 5: bounds without p0 give a feasible start, as SciPy picks; NaN bounds refused (7).


@pytest.mark.extended
def test_bounds_without_p0_start_inside_as_in_scipy():
    model = lambda x, a, b: a * jnp.exp(-b * x)  # noqa: E731
    numpy_model = lambda x, a, b: a * np.exp(-b * x)  # noqa: E731
    y = 3 * np.exp(-2.5 * LINE_X)
    bounds = ([2, 2], [5, np.inf])  # 1 is outside for both parameters
    expected, _ = scipy.optimize.curve_fit(numpy_model, LINE_X, y, bounds=bounds)
    popt, _ = nf.curve_fit(model, LINE_X, y, bounds=bounds)
    np.testing.assert_allclose(popt, expected, rtol=1e-6)
    np.testing.assert_allclose(popt, [3, 2.5], rtol=1e-6)
    start = nf.CurveFit(model, LINE_X, y, bounds=bounds).fit().p0
    np.testing.assert_array_equal(start, [3.5, 3.0])  # SciPy's _initialize_feasible


def test_nan_bounds_are_refused_as_by_scipy():
    with pytest.raises(ValueError):
        scipy.optimize.curve_fit(line, LINE_X, LINE_Y, bounds=([0, np.nan], [10, 10]))
    with pytest.raises(ValueError, match="NaN"):
        nf.curve_fit(line, LINE_X, LINE_Y, bounds=([0, np.nan], [10, 10]))
