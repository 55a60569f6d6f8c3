"""`nf.odr` on `scipy.odr`'s own test problems (`scipy/odr/tests/test_odr.py`: Pearson's
line with errors in both axes, forwards and reversed, and the Lorentz peak), against
`scipy.odr` run on the same data: `beta`, `sd_beta`, `cov_beta` and `delta`."""

import warnings

import numpy as np
import pytest

import nlsq_fn as nf

P_X = np.array([0.0, 0.9, 1.8, 2.6, 3.3, 4.4, 5.2, 6.1, 6.5, 7.4])
P_Y = np.array([5.9, 5.4, 4.4, 4.6, 3.5, 3.7, 2.8, 2.8, 2.4, 1.5])
P_SX = np.array([0.03, 0.03, 0.04, 0.035, 0.07, 0.11, 0.13, 0.22, 0.74, 1.0])
P_SY = np.array([1.0, 0.74, 0.5, 0.35, 0.22, 0.22, 0.12, 0.12, 0.1, 0.04])

L_X = np.array(
    [3.9094, 3.85945, 3.84976, 3.84716, 3.84551, 3.83964, 3.82608, 3.78847, 3.78163]
    + [3.72558, 3.70274, 3.6973, 3.67373, 3.65982, 3.6562, 3.62498, 3.55525, 3.41886]
)
L_Y = np.array(
    [652, 910.5, 984, 1000, 1007.5, 1053, 1160.5, 1409.5, 1430, 1122, 957.5, 920, 777.5]
    + [709.5, 698, 578.5, 418.5, 275.5]
)
L_SX = np.array(
    [0.000972971, 0.000948268, 0.000707632, 0.000706679, 0.000706074, 0.000703918]
    + [0.000698955, 0.000456856, 0.000455207, 0.000662717, 0.000654619, 0.000652694]
    + [0.000000859202, 0.00106589, 0.00106378, 0.00125483, 0.00140818, 0.00241839]
)
L_SY = np.full(18, 0.29)


def line(x, beta):
    return beta[0] + beta[1] * x


def lorentz(x, beta):  # (operators only: NumPy for scipy.odr, JAX for nf.odr)
    return beta[0] * beta[1] * beta[2] / ((x * x - beta[2] ** 2) ** 2 + (beta[1] * x) ** 2) ** 0.5


PROBLEMS = {
    "pearson": (line, P_X, P_Y, P_SX, P_SY, [1.0, 1.0]),
    "pearson reversed": (line, P_Y, P_X, P_SY, P_SX, [1.0, 1.0]),
    "lorentz": (lorentz, L_X, L_Y, L_SX, L_SY, [1000.0, 0.1, 3.8]),
}


@pytest.mark.parametrize("name", PROBLEMS)
def test_odr_on_scipys_test_problems(name):
    model, x, y, sx, sy, beta0 = PROBLEMS[name]
    with warnings.catch_warnings():  # scipy.odr is deprecated since SciPy 1.17
        warnings.simplefilter("ignore", DeprecationWarning)
        import scipy.odr

        expected = scipy.odr.ODR(
            scipy.odr.RealData(x, y, sx=sx, sy=sy),
            scipy.odr.Model(lambda beta, x: model(x, beta)),
            beta0=beta0,
            sstol=1e-14,
            partol=1e-14,
        ).run()
    result = nf.odr(model, x, y, beta0, sigma_x=sx, sigma_y=sy)
    assert result.success
    np.testing.assert_allclose(result.beta, expected.beta, rtol=1e-5)
    np.testing.assert_allclose(result.sd_beta, expected.sd_beta, rtol=1e-5)
    np.testing.assert_allclose(result.cov_beta, expected.cov_beta, rtol=1e-5, atol=0)
    scale = np.abs(expected.delta).max()
    np.testing.assert_allclose(result.delta, expected.delta, rtol=1e-5, atol=1e-5 * scale)
