"""Finite-difference Jacobians and NumPy models, against SciPy on the same input."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.special
from helpers import CASES
from jax.flatten_util import ravel_pytree
from scipy.optimize._numdiff import approx_derivative

import nlsq_fn as nf
from nlsq_fn._evaluation.finite_difference import finite_difference_jacobian

TOLERANCES = dict(ftol=1e-10, xtol=1e-10, gtol=1e-10)


def _smooth(p):
    return jnp.stack([p[0] * jnp.exp(p[1]), jnp.sin(p[0] * p[2]), p[1] ** 3 + p[2]])


@pytest.mark.parametrize("method", ["2-point", "3-point", "cs"])
def test_jacobian_equals_scipys_approx_derivative_near_bounds(method):
    # Each variable sits where SciPy adjusts its scheme: one just under its upper bound
    # (the forward step would leave the box), one on its lower bound, one at 0 (the
    # default step), with and without relative steps.
    x = jnp.array([0.9999999999, 2.0, 0.0])
    lower, upper = jnp.array([0.0, 2.0, -1.0]), jnp.array([1.0, 3.0, 1.0])
    f0 = _smooth(x)
    _, unravel = ravel_pytree(x)
    evaluate = jax.jit(_smooth)

    def fun(p):
        return np.asarray(jax.jit(_smooth)(p)) if np.iscomplexobj(p) else np.asarray(evaluate(p))

    for diff_step in (None, 1e-6):
        ours = finite_difference_jacobian(
            _smooth, x, unravel, f0, method, diff_step, lower, upper, bounded=True
        )
        reference = approx_derivative(
            fun,
            np.asarray(x),
            method=method,
            rel_step=diff_step,
            f0=np.asarray(f0),
            bounds=(np.asarray(lower), np.asarray(upper)),
        )
        exact = np.asarray(jax.jacfwd(_smooth)(x))
        # The same differences of the same values: equal up to rounding amplified by
        # 1/step, far below the differences' own truncation error.
        np.testing.assert_allclose(np.asarray(ours), reference, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(np.asarray(ours), exact, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "method", "jac"),
    [
        pytest.param("exp_decay", "trf", "3-point", marks=pytest.mark.slow),
        ("exp_decay_upper_bound_active", "dogbox", "2-point"),
        pytest.param("logistic4_bounded", "trf", "cs", marks=pytest.mark.slow),
    ],
)
def test_least_squares_with_finite_differences_matches_scipy(name, method, jac):
    case = next(c for c in CASES if c.name == name)

    def fun(p, x, y):
        return case.model(x, p) - y

    ours = nf.least_squares(
        fun,
        case.p0,
        jac=jac,
        bounds=case.bounds,
        method=method,
        args=(case.x, case.y),
        **TOLERANCES,
    )
    evaluate = jax.jit(lambda p: fun(p, case.x, case.y))
    reference = scipy.optimize.least_squares(
        lambda p: np.asarray(evaluate(p)),
        case.p0,
        jac=jac,
        bounds=case.bounds,
        method=method,
        **TOLERANCES,
    )
    np.testing.assert_allclose(np.asarray(ours.x), reference.x, rtol=1e-6)
    np.testing.assert_allclose(float(ours.cost), reference.cost, rtol=1e-6)
    # SciPy counts the evaluations of the differences in njev (one per Jacobian), not nfev.
    assert (int(ours.nfev), int(ours.njev)) == (reference.nfev, reference.njev)
    np.testing.assert_allclose(np.asarray(ours.jac), reference.jac, rtol=1e-5, atol=1e-8)


def bessel_decay(x, a, b, c):
    """A model JAX cannot trace: scipy.special on NumPy arrays."""
    return a * scipy.special.j0(b * x) * np.exp(-0.1 * x) + c


X_BESSEL = np.linspace(0.5, 10.0, 50)
NOISE = 0.01 * np.random.default_rng(0).standard_normal(50)
Y_BESSEL = bessel_decay(X_BESSEL, 2.0, 0.8, 0.3) + NOISE
P0_BESSEL = [1.5, 0.7, 0.0]


def test_numpy_model_through_curve_fit_matches_scipy():
    bounds = ([0.0, 0.0, -1.0], [5.0, 2.0, 1.0])
    with pytest.warns(nf._problem.host_model.HostModelWarning, match="SciPy's speed"):
        popt, pcov = nf.curve_fit(
            bessel_decay,
            X_BESSEL,
            Y_BESSEL,
            p0=P0_BESSEL,
            bounds=bounds,
            method="dogbox",
            **TOLERANCES,
        )
    ref_popt, ref_pcov = scipy.optimize.curve_fit(
        bessel_decay,
        X_BESSEL,
        Y_BESSEL,
        p0=P0_BESSEL,
        bounds=bounds,
        method="dogbox",
        **TOLERANCES,
    )
    np.testing.assert_allclose(popt, ref_popt, rtol=1e-6)
    np.testing.assert_allclose(pcov, ref_pcov, rtol=1e-4)


def test_numpy_model_through_least_squares_matches_scipy():
    calls = []

    def fun(p, x, y):
        calls.append(isinstance(p, jax.core.Tracer))
        residual = bessel_decay(x, *p) - y
        residual[np.abs(residual) > 1e6] = 1e6  # NumPy style: writes into an array
        return residual

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nf._problem.host_model.HostModelWarning)
        ours = nf.least_squares(fun, P0_BESSEL, args=(X_BESSEL, Y_BESSEL), **TOLERANCES)
    ours_calls = len(calls)
    calls.clear()
    reference = scipy.optimize.least_squares(
        fun, P0_BESSEL, args=(X_BESSEL, Y_BESSEL), **TOLERANCES
    )
    np.testing.assert_allclose(np.asarray(ours.x), reference.x, rtol=1e-6)
    np.testing.assert_allclose(float(ours.cost), reference.cost, rtol=1e-6)
    # Counted as SciPy counts: one per call of `fun` (JAX's trace, which found that it
    # needs the host, was one; SciPy's fit makes the same evaluations without it), one
    # Jacobian (n calls of `fun`, not counted in nfev) per accepted step.
    assert (int(ours.nfev) - 1, int(ours.njev)) == (reference.nfev, reference.njev)
    assert ours_calls == len(calls) + 1 == int(ours.nfev) + len(P0_BESSEL) * int(ours.njev)


@pytest.mark.parametrize("method", ["trf", "lm"])
@pytest.mark.parametrize("max_nfev", [1, 2, None])
def test_numpy_fun_called_nfev_times(method, max_nfev):
    # SciPy's test_nfev: `nfev` is the number of calls of `fun` (with a `jac`): the
    # input checks' call at the start is the fit's first evaluation, and the result's
    # values at the start and at the solution are reused, never computed again.
    calls = []

    def fun(p):
        calls.append(p)
        return np.array([10 * (p[1] - p[0] ** 2), 1 - p[0]])

    def jac(p):
        return np.array([[-20 * p[0], 10], [-1, 0]])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nf._problem.host_model.HostModelWarning)
        ours = nf.least_squares(fun, [3.8, 6.6], jac=jac, method=method, max_nfev=max_nfev)
    assert ours.nfev == len(calls)
    assert isinstance(calls[0], jax.core.Tracer)  # JAX's trace, which fails
    assert sum(np.array_equal(p, [3.8, 6.6]) for p in calls[1:]) == 1  # once at the start
    if max_nfev is None:
        np.testing.assert_allclose(ours.x, [1.0, 1.0], rtol=1e-7)


@pytest.mark.slow
def test_numpy_model_with_numpy_jacobian_matches_scipy():
    """`fun` and `jac` both written with NumPy (in-place assignment included): both run
    on the host; the analytic Jacobian is used, not differences."""

    def fun(p, x, y):
        return bessel_decay(x, *p) - y

    def jac(p, x, y):
        out = np.empty((x.size, 3))
        decay = np.exp(-0.1 * x)
        out[:, 0] = scipy.special.j0(p[1] * x) * decay
        out[:, 1] = -p[0] * scipy.special.j1(p[1] * x) * x * decay
        out[:, 2] = 1.0
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nf._problem.host_model.HostModelWarning)
        ours = nf.least_squares(
            fun, P0_BESSEL, jac=jac, method="dogbox", args=(X_BESSEL, Y_BESSEL), **TOLERANCES
        )
    reference = scipy.optimize.least_squares(
        fun, P0_BESSEL, jac=jac, method="dogbox", args=(X_BESSEL, Y_BESSEL), **TOLERANCES
    )
    np.testing.assert_allclose(np.asarray(ours.x), reference.x, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ours.jac), reference.jac, rtol=1e-6, atol=1e-10)
    assert (int(ours.nfev), int(ours.njev)) == (reference.nfev, reference.njev)
