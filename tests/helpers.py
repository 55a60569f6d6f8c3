"""Shared test problems, each run against every strategy and checked against SciPy."""

import dataclasses
import os
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import nlsq_fn as nf


@dataclasses.dataclass(frozen=True)
class Case:
    """A curve-fitting problem ``model(x, p) ≈ y`` with SciPy-style options."""

    name: str
    model: object
    x: np.ndarray
    y: np.ndarray
    p0: np.ndarray
    bounds: tuple = (-np.inf, np.inf)
    loss: str = "linear"
    f_scale: float = 1.0
    x_scale: object = None
    sigma: np.ndarray | None = None

    @property
    def bounded(self):
        return any(np.any(np.isfinite(b)) for b in self.bounds)

    def residual(self, p):
        r = self.model(self.x, p) - self.y
        return r if self.sigma is None else r / self.sigma

    def scipy(self, method, **tolerances):
        """`scipy.optimize.least_squares` on the same problem, exact Jacobian, in
        float64 (also under the `x64` fixture's float32)."""
        with jax.enable_x64(True):
            fun = jax.jit(self.residual)
            jac = jax.jit(jax.jacfwd(self.residual))
            return scipy.optimize.least_squares(
                lambda p: np.asarray(fun(p)),
                self.p0,
                jac=lambda p: np.asarray(jac(p)),
                bounds=self.bounds,
                method=method,
                loss=self.loss,
                f_scale=self.f_scale,
                x_scale=self.x_scale,
                **tolerances,
            )


class FnModel(eqx.Module):
    """A plain function ``fn(x, p)`` as the core's model: an Equinox module whose
    function is static, so that two wrappers of one function are equal and share the
    compiled fits of `solve`."""

    fn: object = eqx.field(static=True)

    def __call__(self, x, p):
        return self.fn(x, p)


# The strategies by SciPy's `method` names: the columns of the solver × problem tables.
STRATEGIES = {"trf": nf.TRF, "lm": nf.LevenbergMarquardt, "dogbox": nf.Dogbox}


# One compiled `nf.solve` for every test module: a fit of the same model, shapes and
# options compiles once per worker, whichever module asks for it first.
solve = eqx.filter_jit(nf.solve)


def _rng(seed):
    return np.random.default_rng(seed)


def exp_decay(x, p):
    return p[0] * jnp.exp(-p[1] * x) + p[2]


def decay(x, a, b, c):
    """`exp_decay` as SciPy's ``f(x, a, b, c)``."""
    return a * jnp.exp(-b * x) + c


def decay_np(x, a, b, c):
    """`decay` in NumPy (SciPy's side of a comparison; a host model for ours)."""
    return a * np.exp(-b * x) + c


def decay_jac_np(x, a, b, c):
    """The Jacobian of `decay_np`, one row per point (SciPy's ``jac(x, *p)``)."""
    e = np.exp(-b * np.asarray(x))
    return np.stack([e, -a * x * e, np.ones_like(e)], axis=1)


# The decay of the front-end tests (`curve_fit`, `CurveFit`, `least_squares`): 40 points
# with a deterministic ripple for noise, a start, and tolerances tight enough that SciPy's
# fit and ours stop at the same optimum.
DECAY_X = np.linspace(0, 4, 40)
DECAY_Y = 2.5 * np.exp(-1.3 * DECAY_X) + 0.5 + 0.03 * np.sin(11 * DECAY_X)
DECAY_P0 = [1.0, 0.5, 0.0]
TIGHT = dict(ftol=1e-12, xtol=1e-12, gtol=1e-12)

# An exact decay on 30 points (the tests of input checks and of the user's host code:
# their messages name its sizes).
EXACT_X = np.linspace(0, 4, 30)
EXACT_Y = 2.0 * np.exp(-1.1 * EXACT_X) + 0.3

# A line on 10 points with a ripple (the regression tests of issue 9's front-end defects).
LINE_X = np.linspace(0, 1, 10)
LINE_Y = 3 * LINE_X - 1 + 0.05 * np.sin(7 * LINE_X)


def line(x, a, b):
    return a * x + b


def two_parameter_decay(x, p):
    """A decay to zero, ``p[0] exp(-p[1] x)``, in the core's ``model(x, p)`` form."""
    return p[0] * jnp.exp(-p[1] * x)


_decay_residual_jac = jax.jit(jax.jacfwd(lambda p, x, y: decay(x, *p) - y))


def decay_residual_np(p, x=DECAY_X, y=DECAY_Y):
    """`decay`'s residual as SciPy's ``least_squares`` takes it, NumPy in and out."""
    return np.asarray(decay(x, *p)) - y


def decay_residual_jac_np(p, x=DECAY_X, y=DECAY_Y):
    """The exact Jacobian of `decay_residual_np` (by JAX), for SciPy's side."""
    return np.asarray(_decay_residual_jac(jnp.asarray(p), x, y))


def peak(x, amp, center, width, offset):
    """One Gaussian peak on a constant, in SciPy's ``f(x, *params)`` form (named
    parameters for `global_fit`, `fixed` and `ties`)."""
    return amp * jnp.exp(-0.5 * ((x - center) / width) ** 2) + offset


def peak_np(x, amp, center, width, offset):
    """`peak` in NumPy."""
    return amp * np.exp(-0.5 * ((x - center) / width) ** 2) + offset


def gaussians_baseline(x, p):
    peaks = [p[i] * jnp.exp(-0.5 * ((x - p[i + 1]) / p[i + 2]) ** 2) for i in (0, 3, 6)]
    return sum(peaks) + p[9]


def two_gaussians_baseline(x, p):
    peaks = [p[i] * jnp.exp(-0.5 * ((x - p[i + 1]) / p[i + 2]) ** 2) for i in (0, 3)]
    return sum(peaks) + p[6] + p[7] * x


def logistic4(x, p):
    bottom, top, ec50, hill = p
    return bottom + (top - bottom) / (1 + (x / ec50) ** hill)


def damped_oscillation(x, p):
    return p[0] * jnp.exp(-x / p[1]) * jnp.cos(p[2] * x + p[3]) + p[4] * x + p[5]


def rational(x, p):
    return (p[0] + p[1] * x + p[2] * x**2) / (1 + p[3] * x + p[4] * x**2)


def misra(x, p):
    return p[0] * (1 - jnp.exp(-p[1] * x))


# NIST's Misra1a data (badly scaled: Jacobian columns about 1e6 apart).
MISRA1A_X = np.array(
    [
        77.6,
        114.9,
        141.1,
        190.8,
        239.9,
        289.0,
        332.8,
        378.4,
        434.8,
        477.3,
        536.8,
        593.1,
        689.1,
        760.0,
    ]
)
MISRA1A_Y = np.array(
    [
        10.07,
        14.73,
        17.94,
        23.93,
        29.61,
        35.18,
        40.02,
        44.82,
        50.76,
        55.05,
        61.01,
        66.40,
        75.47,
        81.78,
    ]
)


def _make_cases():
    cases = []
    x = np.linspace(0, 5, 80)
    y = np.asarray(exp_decay(x, np.array([3.0, 1.2, 0.4]))) + 0.05 * _rng(0).standard_normal(80)
    cases.append(Case("exp_decay", exp_decay, x, y, np.array([1.0, 0.5, 0.0])))
    sigma = 0.03 + 0.04 * _rng(1).random(80)
    cases.append(Case("exp_decay_sigma", exp_decay, x, y, np.array([1.0, 0.5, 0.0]), sigma=sigma))

    x = np.linspace(0, 10, 300)
    truth = np.array([4.0, 2.5, 0.4, 2.5, 5.0, 0.6, 3.0, 7.2, 0.5, 0.3])
    y = np.asarray(gaussians_baseline(x, truth)) + 0.05 * _rng(2).standard_normal(300)
    p0 = np.array([3.5, 2.4, 0.5, 2.0, 5.1, 0.5, 3.3, 7.0, 0.6, 0.0])
    cases.append(Case("three_gaussians_baseline", gaussians_baseline, x, y, p0))

    x = np.logspace(-3, 2, 40)
    truth = np.array([5.0, 95.0, 0.8, 1.3])
    y = np.asarray(logistic4(x, truth)) + 1.5 * _rng(3).standard_normal(40)
    cases.append(Case("logistic4", logistic4, x, y, np.array([0.0, 100.0, 1.0, 1.0])))
    cases.append(
        Case(
            "logistic4_bounded",
            logistic4,
            x,
            y,
            np.array([1.0, 100.0, 1.0, 1.0]),
            bounds=(np.array([0.0, 0.0, 1e-3, 0.1]), np.array([4.0, 200.0, 50.0, 5.0])),
        )
    )

    x = np.linspace(0, 12, 200)
    truth = np.array([2.0, 4.0, 2.1, 0.3, 0.05, 1.0])
    y = np.asarray(damped_oscillation(x, truth)) + 0.05 * _rng(4).standard_normal(200)
    p0 = np.array([1.5, 3.0, 2.0, 0.0, 0.0, 0.5])
    cases.append(Case("damped_oscillation_trend", damped_oscillation, x, y, p0))

    x = np.linspace(0, 4, 60)
    truth = np.array([1.0, 2.0, 0.5, 0.3, 0.1])
    y = np.asarray(rational(x, truth)) + 0.01 * _rng(5).standard_normal(60)
    cases.append(Case("rational", rational, x, y, np.array([1.0, 1.0, 1.0, 0.1, 0.1])))

    x = np.linspace(0, 5, 80)
    y = np.asarray(exp_decay(x, np.array([3.0, 1.2, 0.4]))) + 0.05 * _rng(6).standard_normal(80)
    cases.append(
        Case(
            "exp_decay_upper_bound_active",
            exp_decay,
            x,
            y,
            np.array([1.0, 0.5, 0.0]),
            bounds=(np.array([0.0, 0.0, -1.0]), np.array([2.5, 10.0, 1.0])),
        )
    )
    cases.append(
        Case(
            "exp_decay_lower_bound_active",
            exp_decay,
            x,
            y,
            np.array([1.0, 2.0, 0.6]),
            bounds=(np.array([0.0, 1.5, 0.5]), np.array([10.0, 10.0, 1.0])),
        )
    )

    x = np.linspace(0, 10, 120)
    truth = np.array([3.0, 3.0, 0.8, 2.0, 6.5, 1.2, 0.2, 0.01])
    clean = np.asarray(two_gaussians_baseline(x, truth))
    y = clean + 0.05 * _rng(7).standard_normal(120)
    outliers = _rng(8).choice(120, 12, replace=False)
    y[outliers] += 2.0 * _rng(9).standard_normal(12)
    p0 = np.array([2.5, 3.2, 1.0, 2.5, 6.3, 1.0, 0.0, 0.0])
    for loss in ("linear", "soft_l1", "huber", "cauchy", "arctan"):
        cases.append(
            Case(f"outliers_{loss}", two_gaussians_baseline, x, y, p0, loss=loss, f_scale=0.1)
        )

    x, y = MISRA1A_X, MISRA1A_Y
    cases.append(Case("misra1a_xscale_jac", misra, x, y, np.array([500.0, 1e-4]), x_scale="jac"))
    cases.append(
        Case(
            "misra1a_bounded_xscale_jac",
            misra,
            x,
            y,
            np.array([500.0, 1e-4]),
            bounds=(np.array([0.0, 0.0]), np.array([1000.0, 1.0])),
            x_scale="jac",
        )
    )
    return cases


CASES = _make_cases()
CASE_IDS = [case.name for case in CASES]


def standard_errors(jac, cost):
    """Standard errors of the parameters of a least-squares fit from its (scaled) Jacobian
    and cost, as `curve_fit` computes them: ``sqrt(diag(pinv(JᵀJ)) * 2 cost / (m - n))``."""
    jac = np.asarray(jac, float)
    m, n = jac.shape
    covariance = np.linalg.pinv(jac.T @ jac) * 2.0 * float(cost) / max(m - n, 1)
    return np.sqrt(np.clip(np.diag(covariance), 0.0, None))


def x64_params(float32_default: bool = True):
    """`x64` fixture values for an indirect parametrization: float64, and float32 (x64
    off) as a slow test unless `float32_default` (compile time: a float32 fit compiles
    its own programs, so the default suite runs float32 on a representative subset)."""
    return [
        pytest.param(True, id="x64"),
        pytest.param(False, id="x32", marks=[] if float32_default else [pytest.mark.slow]),
    ]


def working_dtype():
    """The floating type JAX computes in now: float64 with x64 on, float32 with it off."""
    return jnp.result_type(float)


def tolerance(rtol: float, dtype=None) -> float:
    """A relative tolerance chosen for float64, for quantities computed in `dtype`
    (default: `working_dtype()`) that are stationary at an optimum or follow from it
    smoothly (a cost, a covariance, a standard error): at least ``sqrt(eps)`` of the
    type. A fit stops once its cost reductions reach ``eps * cost``, and the data,
    Jacobian and pseudo-inverse are rounded to ``eps`` times the (modest) condition
    number of the shared problems: ``sqrt(eps)`` (1.5e-8 in float64, 3.5e-4 in
    float32) stays well above both and far below any real difference. In float64 the
    tests' own tolerances are larger and stand unchanged."""
    eps = float(np.finfo(working_dtype() if dtype is None else dtype).eps)
    return max(rtol, eps**0.5)


def optimum_fraction(m: int, dtype=None) -> float:
    """The fraction of a standard error to which a fit in `dtype` (default:
    `working_dtype()`) with `m` points determines its parameters: costs within
    ``eps * cost`` of the optimum leave each parameter free over about ``sqrt(eps * m)``
    of its standard error (`assert_same_optimum`), so ten times that, and never below
    the float64 tests' 1e-4 (float32: 0.01 to 0.06 for the shared problems' 14 to 300
    points)."""
    eps = float(np.finfo(working_dtype() if dtype is None else dtype).eps)
    return max(1e-4, 10 * (eps * m) ** 0.5)


def assert_same_optimum(
    x, reference_x, cost, reference_cost, *, jac, fraction=1e-4, cost_rtol=1e-10, err_msg=""
):
    """Two fits of the same problem reached the same optimum, to what the algorithm
    guarantees on every machine.

    A trust-region fit stops once cost reductions reach rounding level (``~eps * cost``),
    which determines each parameter to about ``sqrt(eps * m)`` of its standard error; two
    code paths (a batched and a single fit, chunked and one-shot evaluation, ...) that round
    differently can end anywhere inside that region. So parameters are compared as a
    fraction of their standard error (1e-4: three orders of magnitude above that
    resolution, and far below any real difference), and costs, which are stationary at the
    optimum, to `cost_rtol`. Leading batch axes are allowed.
    """
    x = np.atleast_1d(np.asarray(x, float))
    reference_x = np.atleast_1d(np.asarray(reference_x, float))
    jac = np.asarray(jac, float)
    cost, reference_cost = np.asarray(cost, float), np.asarray(reference_cost, float)
    np.testing.assert_allclose(cost, reference_cost, rtol=cost_rtol, atol=1e-300, err_msg=err_msg)
    flat_x = x.reshape(-1, x.shape[-1])
    flat_reference = reference_x.reshape(-1, x.shape[-1])
    flat_jac = jac.reshape(-1, *jac.shape[-2:])
    flat_cost = np.broadcast_to(reference_cost, x.shape[:-1]).reshape(-1)
    for index, (a, b, j, c) in enumerate(
        zip(flat_x, flat_reference, flat_jac, flat_cost, strict=True)
    ):
        tolerance = fraction * standard_errors(j, c)
        # A perfect fit (zero cost) has zero standard errors: fall back to rounding level.
        tolerance = np.maximum(tolerance, 1e-12 * np.maximum(np.abs(b), 1.0))
        excess = np.abs(a - b) / tolerance
        assert np.all(excess <= 1.0), (
            f"{err_msg} member {index}: parameters differ by {np.abs(a - b)} "
            f"(> {fraction} standard errors = {tolerance})"
        )


def assert_matches_scipy(x, cost, reference, *, rtol=1e-6, atol=1e-12, err_msg=""):
    """Our fit's `x` and `cost` agree with SciPy's float64 `reference` (a
    `least_squares` result): to `rtol` when we also computed in float64; in float32 (x64
    off) to what that type determines, `optimum_fraction` of a standard error (from
    SciPy's Jacobian and cost) and `tolerance(rtol)` in the cost."""
    if np.asarray(x).dtype == np.float64:
        np.testing.assert_allclose(
            np.asarray(x), reference.x, rtol=rtol, atol=atol, err_msg=err_msg
        )
        np.testing.assert_allclose(float(cost), reference.cost, rtol=rtol, err_msg=err_msg)
        return
    dtype = np.asarray(x).dtype
    assert_same_optimum(
        x,
        reference.x,
        cost,
        reference.cost,
        jac=reference.jac,
        fraction=optimum_fraction(reference.fun.size, dtype),
        cost_rtol=tolerance(rtol, dtype),
        err_msg=err_msg,
    )


def assert_matches_scipy_fit(popt, pcov, reference, n_points, *, rtol=1e-6, atol=1e-14):
    """`popt`, `pcov` agree with SciPy's float64 `curve_fit` answer `reference`: to
    `rtol` when computed in float64; in float32 (x64 off) `popt` to `optimum_fraction`
    of SciPy's standard errors and `pcov` to `tolerance(rtol)` relative to
    ``sqrt(pcov_ii pcov_jj)`` (so near-zero covariances are judged on their scale)."""
    popt, pcov = np.asarray(popt), np.asarray(pcov)
    if popt.dtype == np.float64:
        np.testing.assert_allclose(popt, reference[0], rtol=rtol)
        np.testing.assert_allclose(pcov, reference[1], rtol=rtol, atol=atol)
        return
    se = np.sqrt(np.diag(reference[1]))
    excess = np.abs(popt - reference[0]) / (optimum_fraction(n_points, popt.dtype) * se)
    assert np.all(excess <= 1), f"popt {popt} vs SciPy's {reference[0]}: {excess}"
    difference = np.abs(pcov - reference[1]) / np.outer(se, se)
    assert np.max(difference) <= tolerance(rtol, popt.dtype), difference


def run_on_host_devices(script: str, folder, devices: int = 4) -> None:
    """Run `script` in a fresh Python with `devices` CPU devices; it must print "ok"."""
    path = folder / "script.py"
    path.write_text(script)
    # The tests' folder on the path: scripts may use these helpers.
    tests = os.path.dirname(os.path.abspath(__file__))
    python_path = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        PYTHONPATH=python_path,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
    )
    done = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=900
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
