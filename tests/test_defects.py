"""Front-end defects that once gave wrong answers or confusing errors (issue 9): each
test reproduces one and compares with SciPy's behaviour on the same input."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import nlsq_fn as nf

X40 = np.linspace(0, 4, 40)


def _centred_line(x, a, b):
    return a * (x - x.mean()) + b


# --- 1. padding must never change the data the model sees -------------------------------


def test_model_using_x_as_a_whole_gets_scipys_answer():
    y = 2 * X40 + 1
    expected, _ = scipy.optimize.curve_fit(_centred_line, X40, y, p0=[1, 1])
    popt, pcov = nf.curve_fit(_centred_line, X40, y, p0=[1, 1])
    np.testing.assert_allclose(popt, expected, rtol=1e-8)  # b = 5, not 6.5
    np.testing.assert_allclose(popt, [2.0, 5.0], rtol=1e-8)
    result = nf.CurveFit(_centred_line, X40, y, p0=[1, 1]).fit()
    np.testing.assert_allclose(result.popt, expected, rtol=1e-8)


def test_padding_refuses_a_model_that_is_not_pointwise():
    y = 2 * X40 + 1
    with pytest.raises(ValueError, match="pointwise"):
        nf.curve_fit(_centred_line, X40, y, p0=[1, 1], pad=True)
    with pytest.raises(ValueError, match="pointwise"):
        nf.CurveFit(_centred_line, X40, y, p0=[1, 1], pad=True).fit()


def _plane(x, a, b, c):  # x has one row per point: (M, 2), as a DataFrame's values
    return a * x[:, 0] + b * x[:, 1] + c


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
