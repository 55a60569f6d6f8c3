"""The front ends' conventions: which way a model takes its parameters, and SciPy's
interface items of `least_squares` and `curve_fit`, each against SciPy or a closed
form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
from helpers import assert_matches_scipy_fit, decay

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
