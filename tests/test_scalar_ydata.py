"""A scalar `ydata`, as SciPy takes it: broadcast against the model's values at `p0`,
whether JAX traces the model or it runs on the host (`traced_or_on_host`)."""

import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import nlsq_fn as nf

X = np.linspace(0.0, 2.0, 30)


def line_jax(x, a, b):
    return a + b * jnp.sin(x)


def line_numpy(x, a, b):
    return a + b * np.sin(np.asarray(x))  # NumPy: not traceable, run on the host


@pytest.mark.parametrize("model", [line_jax, line_numpy])
def test_scalar_ydata_is_fitted_as_scipy_fits_it(model):
    expected, _ = scipy.optimize.curve_fit(line_numpy, X, 3.0, p0=[1.0, 1.0], method="trf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the host model's speed warning
        popt, _ = nf.curve_fit(model, X, 3.0, p0=[1.0, 1.0])
    np.testing.assert_allclose(popt, expected, atol=1e-6)
    np.testing.assert_allclose(popt, [3.0, 0.0], atol=1e-6)  # the constant 3 exactly


def test_scalar_ydata_keeps_the_models_own_error():
    def broken(x, a, b):
        raise KeyError("the model's own error")

    with pytest.raises(KeyError, match="the model's own error"):
        nf.curve_fit(broken, X, 3.0, p0=[1.0, 1.0])
