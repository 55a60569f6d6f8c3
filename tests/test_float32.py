"""float32 (x64 off, JAX's default) as a first-class configuration: covariances of
well-conditioned float32 fits are finite and agree with SciPy's float64 ones.

(The SciPy-agreement, covariance and front-end tests also run with x64 off, through the
`x64` fixture; these are the covariances of issue 25, item 4.)"""

import json
import os
import subprocess
import sys

import jax
import jax.extend
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


# ----- matrix products in full float32 (JAX's default rounds them to TF32 on recent GPUs) ---


def _dot_precisions(jaxpr) -> list:
    """The `precision` of every matrix product in `jaxpr`, its sub-programs included."""
    found = []
    for equation in jaxpr.eqns:
        if equation.primitive.name == "dot_general":
            found.append(equation.params["precision"])
        for value in equation.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    sub = sub.jaxpr
                if isinstance(sub, jax.extend.core.Jaxpr):
                    found += _dot_precisions(sub)
    return found


def _solve_jaxpr(model, differentiated=False):
    x = np.linspace(0, 4, 30, dtype=np.float32)
    data = nf.Data(x, np.exp(-x).astype(np.float32))
    state = nf.init(model, data, jnp.ones(2, jnp.float32))
    if differentiated:  # the user's `jit` inside `grad`: the implicit rule traces later
        fit = jax.jit(nf.solve, static_argnums=0)
        gradient = jax.grad(lambda y: fit(model, nf.Data(x, y), state).x.sum())
        return jax.make_jaxpr(gradient)(data.y).jaxpr
    return jax.make_jaxpr(lambda data, state: nf.solve(model, data, state).x)(data, state).jaxpr


def _matrix_model(x, p):
    # A model with a matrix product of its own: it follows the fit's setting too.
    return jnp.exp(-p[0] * x) @ jnp.eye(x.size, dtype=x.dtype) + p[1]


@pytest.mark.parametrize("differentiated", [False, True])
def test_a_fits_matrix_products_run_in_full_float32(differentiated):
    precisions = _dot_precisions(_solve_jaxpr(_matrix_model, differentiated))
    assert len(precisions) > 5  # the strategy's products, the model's, the covariance's
    highest = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
    assert all(p == highest for p in precisions), set(map(str, precisions))


def test_a_precision_the_user_chose_is_kept():
    with jax.default_matmul_precision("tensorfloat32"):
        precisions = _dot_precisions(_solve_jaxpr(_matrix_model))
    assert precisions and jax.lax.Precision.HIGHEST not in {q for p in precisions for q in p or ()}


# Run in a process of its own: the emulation replaces a JAX function, and every program
# must be traced afresh under it (no stored or already compiled program).
_TF32_FIT = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
from jax._src.lax import lax as lax_internal  # the function `jax.numpy` calls

original = lax_internal.dot_general


def to_tf32(a):
    bits = jax.lax.bitcast_convert_type(a, jnp.uint32)
    bits = (bits + jnp.uint32(0xFFF) + ((bits >> 13) & jnp.uint32(1))) & jnp.uint32(0xFFFFE000)
    return jax.lax.bitcast_convert_type(bits, jnp.float32)


def tf32_dot_general(lhs, rhs, dimension_numbers, precision=None, *args, **kwargs):
    if precision is None and jax.config.jax_default_matmul_precision is None:
        if lhs.dtype == jnp.float32 and rhs.dtype == jnp.float32:
            lhs, rhs = to_tf32(lhs), to_tf32(rhs)
    return original(lhs, rhs, dimension_numbers, precision, *args, **kwargs)


lax_internal.dot_general = tf32_dot_general
near_one, one = jnp.full((1, 1), 1.0001, jnp.float32), jnp.ones((1, 1), jnp.float32)
rounds = float(jnp.dot(near_one, one)[0, 0]) == 1.0
import nlsq_fn as nf

x, y = (np.asarray(v, np.float32) for v in json.loads(sys.stdin.read()))
popt, pcov = nf.curve_fit(lambda x, a, k, c: a * jnp.exp(-k * x) + c, x, y, p0=[1.0, 1.0, 0.0])
print(json.dumps([rounds, np.asarray(popt, float).tolist(), np.asarray(pcov, float).tolist()]))
"""


@pytest.mark.extended
def test_curve_fits_errors_survive_tf32_products():
    """The CPU has no TF32: products at JAX's default precision are emulated here as a
    recent GPU computes them (inputs rounded to 10 bits of mantissa). Emulated, the
    standard errors below were 2.4e-4 from SciPy's before the fit set full precision
    (1.7e-7 in float32)."""
    x = np.linspace(0, 5, 2000)
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + 0.05 * np.random.default_rng(0).standard_normal(x.size)
    y = y.astype(np.float32).astype(float)
    environment = {**os.environ, "NLSQ_FN_PROGRAM_CACHE": "off", "JAX_ENABLE_X64": "0"}
    run = subprocess.run(
        [sys.executable, "-c", _TF32_FIT],
        input=json.dumps([x.tolist(), y.tolist()]),
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    rounds, popt, pcov = json.loads(run.stdout.strip().splitlines()[-1])
    assert rounds  # the emulation is in effect
    reference = scipy.optimize.curve_fit(
        lambda x, a, k, c: a * np.exp(-k * x) + c, x, y, p0=[1, 1, 0]
    )
    se, se_reference = np.sqrt(np.diag(pcov)), np.sqrt(np.diag(reference[1]))
    np.testing.assert_allclose(se, se_reference, rtol=1e-5)
    np.testing.assert_allclose(popt, reference[0], rtol=3e-5)
