"""Parameters and cost agree with `scipy.optimize.least_squares` on shared problems."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import (
    CASES,
    STRATEGIES,
    FnModel,
    assert_matches_scipy,
    solve,
    tolerance,
    x64_params,
)

import nlsq_fn as nf

TOLERANCES = dict(ftol=1e-10, xtol=1e-10, gtol=1e-10)


def _fit(case, method):
    strategy = STRATEGIES[method]()
    solver = nf.Solver(
        strategy=strategy,
        loss=nf._problem.loss.as_loss(case.loss, case.f_scale),
        bounds=case.bounds if case.bounded else None,
        x_scale=case.x_scale,
        **TOLERANCES,
    )
    model = FnModel(case.model)
    data = nf.Data(case.x, case.y, sigma=case.sigma)
    return solve(model, data, nf.init(model, data, jnp.asarray(case.p0), solver))


def _supported(case, method):
    """SciPy's 'lm' (MINPACK) supports neither bounds nor robust losses."""
    return method != "lm" or not (case.bounded or case.loss != "linear")


# Dogbox runs every case, but by default only those that also check its path (compile
# time); the rest are slow tests. In float32 (x64 off) the default suite runs a subset
# that covers each strategy, bounds reached by TRF and by dogbox, a robust loss,
# sigma and x_scale='jac' on a badly scaled problem (NIST's Misra1a); the rest are slow.
DOGBOX_PATH_CASES = (
    "exp_decay",
    "logistic4_bounded",
    "exp_decay_upper_bound_active",
    "exp_decay_lower_bound_active",
    "outliers_soft_l1",
    "misra1a_bounded_xscale_jac",
)
FLOAT32_CASES = (
    ("exp_decay_sigma", "lm"),
    ("logistic4_bounded", "trf"),
    ("outliers_soft_l1", "dogbox"),
    ("misra1a_bounded_xscale_jac", "dogbox"),
    ("misra1a_xscale_jac", "trf"),
)


# Of those, the default run keeps a few (each fit compiles for its own model); the
# others run in CI's extended step.
DEFAULT_DOGBOX_CASES = ("logistic4_bounded", "outliers_soft_l1")
DEFAULT_FLOAT32_CASES = (("logistic4_bounded", "trf"), ("misra1a_bounded_xscale_jac", "dogbox"))
# float64 rows that only repeat what the default run checks elsewhere run in CI's extended
# step: TRF on the four problems `test_trf_follows_scipys_path` fits (the same fits, with
# SciPy's iterates) and on `rational` and the damped oscillation (LM's default rows fit
# them; TRF's unbounded linear-loss fits are checked on sigma and the logistic curve),
# the linear loss (every other row has it), and LM on the problems without a feature of
# their own (LM keeps sigma, x_scale='jac', `rational` and the damped oscillation).
EXTENDED_FLOAT64_CASES = (
    ("exp_decay", "trf"),
    ("exp_decay_sigma", "trf"),
    ("three_gaussians_baseline", "trf"),
    ("logistic4", "trf"),
    ("rational", "trf"),
    ("damped_oscillation_trend", "trf"),
    ("outliers_linear", "trf"),
    ("exp_decay", "lm"),
    ("three_gaussians_baseline", "lm"),
    ("logistic4", "lm"),
    ("outliers_linear", "lm"),
)


def _method_case(case, method, x64):
    slow = (method == "dogbox" and case.name not in DOGBOX_PATH_CASES) or (
        not x64 and (case.name, method) not in FLOAT32_CASES
    )
    extended = (
        (method == "dogbox" and case.name not in DEFAULT_DOGBOX_CASES)
        or (not x64 and (case.name, method) not in DEFAULT_FLOAT32_CASES)
        or (x64 and (case.name, method) in EXTENDED_FLOAT64_CASES)
    )
    marks = [pytest.mark.slow] if slow else [pytest.mark.extended] if extended else []
    return pytest.param(
        case, method, x64, id=f"{case.name}-{method}-{'x64' if x64 else 'x32'}", marks=marks
    )


METHOD_CASES = [
    _method_case(case, method, x64)
    for x64 in (True, False)
    for method in ("trf", "dogbox", "lm")
    for case in CASES
    if _supported(case, method)
]


@pytest.mark.parametrize("case, method, x64", METHOD_CASES, indirect=["x64"])
def test_matches_scipy_least_squares(case, method, x64):
    """With x64 off the data are rounded to float32 and the fit runs in float32; it
    must reach SciPy's float64 optimum to what float32 determines."""
    ours = _fit(case, method)
    reference = case.scipy(method, **TOLERANCES)
    assert bool(ours.success), ours.message
    assert_matches_scipy(ours.x, ours.cost, reference)
    np.testing.assert_array_equal(np.asarray(ours.active_mask), reference.active_mask)
    if x64 and method == "dogbox" and case.name in DOGBOX_PATH_CASES:
        # Same algorithm, same iterates (bounds hit and held, robust losses included).
        assert (int(ours.nfev), int(ours.njev)) == (reference.nfev, reference.njev)
        assert int(ours.status) == reference.status


# SciPy's path by default on sigma and on the logistic curve; on the two other problems
# (the same comparison) in CI's extended step.
FOLLOWS_PATH_EXTENDED = ("exp_decay", "three_gaussians_baseline")


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            case,
            id=case.name,
            marks=[pytest.mark.extended] if case.name in FOLLOWS_PATH_EXTENDED else [],
        )
        for case in [c for c in CASES if not c.bounded][:4]
    ],
)
def test_trf_follows_scipys_path(case):
    """Same algorithm, same iterates: the evaluation counts agree with SciPy's."""
    ours = _fit(case, "trf")
    reference = case.scipy("trf", **TOLERANCES)
    assert int(ours.nfev) == reference.nfev
    assert int(ours.njev) == reference.njev
    assert int(ours.status) == reference.status


def test_least_squares_front_end_matches_scipy(x64):
    case = CASES[0]
    ours = nf.least_squares(
        lambda p, x, y: case.model(x, p) - y, case.p0, args=(case.x, case.y), **TOLERANCES
    )
    reference = case.scipy("trf", **TOLERANCES)
    assert_matches_scipy(ours.x, ours.cost, reference, rtol=1e-8)
    # float32 residuals carry the rounding of the data and of the model (eps * |y|).
    atol = 1e-10 if x64 else 10 * np.finfo(np.float32).eps * np.max(np.abs(case.y))
    np.testing.assert_allclose(np.asarray(ours.fun), reference.fun, rtol=tolerance(1e-6), atol=atol)
    np.testing.assert_allclose(
        np.asarray(ours.jac), reference.jac, rtol=tolerance(1e-8), atol=1e-12
    )
    if x64:
        assert ours.message == reference.message


FRONT_END_CASES = [
    c
    for c in CASES
    if c.name
    in ("exp_decay_sigma", "logistic4_bounded", "outliers_cauchy", "misra1a_bounded_xscale_jac")
]


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            case,
            id=case.name,
            marks=[pytest.mark.extended]
            if case.name in ("exp_decay_sigma", "outliers_cauchy")
            else [],
        )
        for case in FRONT_END_CASES
    ],
)
@pytest.mark.parametrize("x64", x64_params(float32_default=False), indirect=True)
def test_least_squares_front_end_options_match_scipy(case, x64):
    sigma = np.ones_like(case.y) if case.sigma is None else case.sigma

    def fun(p, x, y, sigma):
        return (case.model(x, p) - y) / sigma

    ours = nf.least_squares(
        fun,
        case.p0,
        args=(case.x, case.y, sigma),
        bounds=case.bounds,
        loss=case.loss,
        f_scale=case.f_scale,
        x_scale=case.x_scale,
        **TOLERANCES,
    )
    reference = case.scipy("trf", **TOLERANCES)
    assert_matches_scipy(ours.x, ours.cost, reference)
    np.testing.assert_array_equal(np.asarray(ours.active_mask), reference.active_mask)
    if x64:  # float32 gradients are rounding at the optimum, and it stops elsewhere
        np.testing.assert_allclose(
            float(ours.optimality), reference.optimality, rtol=1e-3, atol=1e-8
        )
        assert int(ours.status) == reference.status


@pytest.mark.extended
def test_dogbox_under_vmap_matches_each_scipy_fit():
    """A batch of starts (one of them on a bound, where dogbox may start) in one
    compiled call; each member agrees with SciPy's dogbox from the same start."""
    case = next(c for c in CASES if c.name == "logistic4_bounded")
    starts = np.array([case.p0, [0.0, 150.0, 2.0, 1.0], [0.5, 80.0, 0.5, 2.0]])
    model = FnModel(case.model)
    data = nf.Data(case.x, case.y)
    solver = nf.Solver(strategy=nf.Dogbox(), bounds=case.bounds, **TOLERANCES)
    states = [nf.init(model, data, jnp.asarray(start), solver) for start in starts]
    assert float(states[1].params[0]) == 0.0  # dogbox starts on the bound, as SciPy's
    states = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
    batch = eqx.filter_jit(jax.vmap(nf.solve, in_axes=(None, None, 0)))(model, data, states)
    for k, start in enumerate(starts):
        reference = dataclasses.replace(case, p0=start).scipy("dogbox", **TOLERANCES)
        np.testing.assert_allclose(np.asarray(batch.x[k]), reference.x, rtol=1e-6)
        np.testing.assert_allclose(float(batch.cost[k]), reference.cost, rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(batch.active_mask[k]), reference.active_mask)
