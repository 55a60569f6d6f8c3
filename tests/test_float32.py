"""float32 (x64 off, JAX's default) as a first-class configuration: covariances of
well-conditioned float32 fits are finite and agree with SciPy's float64 ones.

(The SciPy-agreement, covariance and front-end tests also run with x64 off, through the
`x64` fixture; these are the covariances of issue 25, item 4.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from helpers import MISRA1A_X, MISRA1A_Y, optimum_fraction, tolerance

import nlsq_fn as nf

X = np.linspace(0, 4, 60)

# Well-conditioned problems (condition numbers of the column-scaled Jacobian 2 to 16):
# (model, true parameters, p0). With the rank test at 1e-9, seven of the ten (all but
# logistic, line and lorentzian) returned an infinite pcov in float32.
PROBLEMS = {
    "exp_decay": (lambda x, a, b, c: a * jnp.exp(-b * x) + c, [2.5, 1.3, 0.5], [1, 1, 0]),
    "quadratic": (lambda x, a, b, c: a * x**2 + b * x + c, [0.3, -1, 2], [1, 1, 1]),
    "sine": (lambda x, a, w, p: a * jnp.sin(w * x + p), [1.2, 2.0, 0.3], [1, 2.1, 0.1]),
    "michaelis_menten": (lambda x, v, k: v * x / (k + x), [2, 0.8], [1, 1]),
    "logistic": (lambda x, top, k, x0: top / (1 + jnp.exp(-k * (x - x0))), [2, 3, 2], [1, 1, 1.5]),
    "two_exponentials": (
        lambda x, a, b, c, d: a * jnp.exp(-b * x) + c * jnp.exp(-d * x),
        [2, 3, 1, 0.3],
        [1, 2, 1, 0.1],
    ),
    "gaussian": (
        lambda x, a, m, s: a * jnp.exp(-((x - m) ** 2) / (2 * s**2)),
        [3, 2, 0.5],
        [2, 1.8, 0.7],
    ),
    "line": (lambda x, a, b: a * x + b, [1.5, -0.3], [1, 0]),
    "power": (lambda x, a, b: a * (x + 1) ** b, [1.5, 0.7], [1, 1]),
    "lorentzian": (lambda x, a, m, g: a * g**2 / ((x - m) ** 2 + g**2), [2, 2.2, 0.4], [1, 2, 0.5]),
}
DEFAULT = ("exp_decay", "sine")  # the rest are slow (compile time)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=[] if n in DEFAULT else [pytest.mark.slow]) for n in PROBLEMS],
)
def test_float32_covariance_is_finite_and_matches_scipys_float64(name):
    model, truth, p0 = PROBLEMS[name]
    y = np.asarray(jax.jit(model)(X, *truth), float)
    y = y + 0.05 * np.random.default_rng(0).standard_normal(X.size)
    reference = scipy.optimize.curve_fit(
        lambda x, *p: np.asarray(model(x, *p), float), X, y, p0=p0, method="trf"
    )
    with jax.enable_x64(False):
        result = nf.CurveFit(model, X, y, p0=p0, method="trf").fit()
    assert result.popt.dtype == np.float32 and result.rank == len(p0)
    assert np.all(np.isfinite(result.pcov)), result.pcov
    se = np.sqrt(np.diag(reference[1]))
    # Parameters to what float32 determines; the covariance (a smooth function of the
    # optimum, from a Jacobian with these condition numbers) to sqrt(eps), relative to
    # sqrt(pcov_ii pcov_jj) so that near-zero covariances are judged on their scale.
    fraction = optimum_fraction(X.size, np.float32)
    assert np.all(np.abs(result.popt - reference[0]) <= fraction * se)
    difference = np.abs(result.pcov - reference[1]) / np.outer(se, se)
    assert np.max(difference) <= tolerance(1e-6, np.float32), difference


def test_exact_float32_fit_has_no_diagnostics():
    """Noise-free data: residuals at float32's rounding have no direction, so the
    gradient and residual checks must judge them by float32's eps (they reported a
    'large gradient' when judged by float64's)."""
    model, truth, p0 = PROBLEMS["exp_decay"]
    y = np.asarray(jax.jit(model)(X, *truth), float)
    with jax.enable_x64(False):
        result = nf.CurveFit(model, X, y, p0=p0, method="trf").fit()
    assert result.fun.dtype == np.float32
    assert [d.name for d in result.diagnostics] == []


def test_float32_covariance_does_not_depend_on_the_parameters_units():
    """NIST's Misra1a: Jacobian columns about 1e6 apart (a ~ 240, b ~ 5e-4). The rank
    test on the unscaled Jacobian dropped `a` in float32 (eps * 14 * s_max is above its
    share) and returned an infinite variance the data determine to 1%."""
    x, y = MISRA1A_X, MISRA1A_Y
    reference = scipy.optimize.curve_fit(
        lambda x, a, b: a * (1 - np.exp(-b * x)), x, y, p0=[500, 1e-4]
    )
    with jax.enable_x64(False):
        popt, pcov = nf.curve_fit(lambda x, a, b: a * (1 - jnp.exp(-b * x)), x, y, p0=[500, 1e-4])
    assert popt.dtype == np.float32
    se = np.sqrt(np.diag(reference[1]))
    assert np.all(np.abs(popt - reference[0]) <= optimum_fraction(x.size, np.float32) * se)
    difference = np.abs(pcov - reference[1]) / np.outer(se, se)
    assert np.max(difference) <= tolerance(1e-6, np.float32), pcov
