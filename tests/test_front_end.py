"""The front ends' conventions: which way a model takes its parameters, and SciPy's
interface items of `least_squares` and `curve_fit`, each against SciPy or a closed
form."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
from helpers import assert_matches_scipy_fit, decay, tolerance

import nlsq_fn as nf
from nlsq_fn._problem.conventions import model_convention

X = np.linspace(0, 4, 40)
Y = 2.5 * np.exp(-1.3 * X) + 0.5 + 0.03 * np.sin(11 * X)
P0 = [1.0, 0.5, 0.0]
TIGHT = dict(ftol=1e-12, xtol=1e-12, gtol=1e-12)


def decay_array(x, params):
    a, b, c = params
    return a * jnp.exp(-b * x) + c


_residual_jac = jax.jit(jax.jacfwd(lambda p, x, y: decay(x, *p) - y))


def _scipy_least_squares(fun_np, p0, **options):
    return scipy.optimize.least_squares(fun_np, p0, **options)


def _decay_residual_np(p, x=X, y=Y):
    return np.asarray(decay(x, *p)) - y


def _decay_jac_np(p, x=X, y=Y):
    return np.asarray(_residual_jac(jnp.asarray(p), x, y))


# --- which convention a model follows --------------------------------------------------


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
            lambda x, a, b, c: np.asarray(decay(x, a, b, c)), X, Y, p0=P0, **TIGHT
        )
    guide = nf.CurveFit(model=decay_array, x=X, y=Y, p0=P0, **TIGHT).fit()
    scipy_names = nf.CurveFit(f=decay, xdata=X, ydata=Y, p0=P0, **TIGHT).fit()
    for result in (guide, scipy_names):
        assert_matches_scipy_fit(result.popt, result.pcov, reference, X.size)
    assert list(scipy_names.params) == ["a", "b", "c"]
    assert "params[1]" in guide.summary()
    with pytest.raises(TypeError, match="not both"):
        nf.CurveFit(decay, X, Y, p0=P0, xdata=X)


# --- least_squares ----------------------------------------------------------------------


# --- curve_fit --------------------------------------------------------------------------


def test_curve_fit_covariance_sigma_matches_scipy(x64):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((X.size, X.size))
    cov = 1e-3 * (a @ a.T / X.size + np.eye(X.size))
    ours = nf.curve_fit(decay, X, Y, p0=P0, sigma=cov, **TIGHT)
    with jax.enable_x64(True):  # SciPy's float64 answer, also under x64=False
        reference = scipy.optimize.curve_fit(
            lambda x, *p: np.asarray(decay(x, *p)), X, Y, p0=P0, sigma=cov, **TIGHT
        )
    assert_matches_scipy_fit(ours[0], ours[1], reference, X.size)
    # A diagonal covariance is the same fit as its standard deviations.
    std = 0.02 + 0.01 * X
    diagonal = nf.curve_fit(decay, X, Y, p0=P0, sigma=np.diag(std**2), **TIGHT)
    vector = nf.curve_fit(decay, X, Y, p0=P0, sigma=std, **TIGHT)
    np.testing.assert_allclose(diagonal[0], vector[0], rtol=tolerance(1e-8))
    np.testing.assert_allclose(diagonal[1], vector[1], rtol=tolerance(1e-6))
    with pytest.raises(ValueError, match="positive definite"):
        nf.curve_fit(decay, X, Y, p0=P0, sigma=-np.eye(X.size))


@pytest.mark.extended
def test_curve_fit_scipy_keywords():
    # maxfev (leastsq's name) limits the evaluations for lm and trf alike.
    for method in ("lm", "trf"):
        with pytest.raises(RuntimeError, match="Optimal parameters not found"):
            nf.curve_fit(decay, X, Y, p0=P0, method=method, maxfev=2)
    with pytest.raises(ValueError, match="'args' is not a supported"):
        nf.curve_fit(decay, X, Y, p0=P0, args=(1,))
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        nf.curve_fit(decay, X, Y, p0=P0, bogus=1)
    bounds = scipy.optimize.Bounds([0.0, 0.0, -1.0], [2.3, 5.0, 1.0])
    ours = nf.curve_fit(decay, X, Y, p0=P0, bounds=bounds, **TIGHT)
    as_pair = nf.curve_fit(decay, X, Y, p0=P0, bounds=(bounds.lb, bounds.ub), **TIGHT)
    np.testing.assert_array_equal(ours[0], as_pair[0])


def test_curve_fit_full_output_keys_and_minpack_factors():
    f_np = lambda x, *p: np.asarray(decay(x, *p))  # noqa: E731
    for method in ("trf", "lm"):
        popt, pcov, info, message, ier = nf.curve_fit(
            decay, X, Y, p0=P0, method=method, full_output=True, **TIGHT
        )
        ref = scipy.optimize.curve_fit(f_np, X, Y, p0=P0, method=method, full_output=True)
        assert set(ref[2]) <= set(info)
        assert ier in (1, 2, 3, 4) and isinstance(message, str)
        np.testing.assert_allclose(info["fvec"], ref[2]["fvec"], rtol=1e-5, atol=1e-9)
    # MINPACK's factors: J P = Q R with R = fjac.T[:n] (upper), ipvt 0-based pivots.
    n = len(P0)
    jac = np.asarray(_residual_jac(jnp.asarray(popt), X, Y))
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


@pytest.mark.slow
def test_curve_fit_vmapped_over_bounds_members_equal_their_own_fits():
    uppers = jnp.array([2.3, 10.0])  # the first is active at the solution

    def fitted(upper):
        return nf.CurveFit(decay_array, X, Y, P0, bounds=(0.0, upper), **TIGHT).fit()

    batch = jax.vmap(fitted)(uppers)
    for i, upper in enumerate(uppers):
        single = fitted(float(upper))
        assert np.all(np.abs(np.asarray(batch.x[i]) - single.x) <= 1e-3 * single.perr)
        np.testing.assert_array_equal(np.asarray(batch.active_mask[i]), single.active_mask)
    assert np.asarray(batch.x)[0, 0] == pytest.approx(2.3)


@pytest.mark.extended
def test_zero_tolerances_follow_scipys_rules_for_lm():
    f_np = lambda x, *p: np.asarray(decay(x, *p))  # noqa: E731
    for name in ("ftol", "xtol", "gtol"):
        # curve_fit's 'lm' is leastsq's MINPACK: any tolerance >= 0, without a warning.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ours = nf.curve_fit(decay, X, Y, p0=P0, method="lm", **{name: 0})[0]
        reference = scipy.optimize.curve_fit(f_np, X, Y, p0=P0, method="lm", **{name: 0})[0]
        np.testing.assert_allclose(ours, reference, rtol=1e-6)
    # least_squares' 'lm' wants every tolerance above machine epsilon, as SciPy's.
    with pytest.raises(ValueError, match="higher than machine epsilon") as scipys:
        scipy.optimize.least_squares(_decay_residual_np, P0, method="lm", ftol=0)
    with pytest.raises(ValueError, match="higher than machine epsilon") as ours:
        nf.least_squares(lambda p: decay(X, *p) - Y, P0, method="lm", ftol=0)
    assert str(ours.value) == str(scipys.value)
    with pytest.raises(ValueError, match="`ftol` must be non-negative"):
        nf.curve_fit(decay, X, Y, p0=P0, method="lm", ftol=-1.0)
