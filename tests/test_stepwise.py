"""The step-by-step driver (a new model's first fits) against the compiled `solve`: the
same strategy code, so the same optimum, status and number of evaluations."""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import CASES, STRATEGIES, FnModel, assert_same_optimum, solve

import nlsq_fn as nf
from nlsq_fn._drivers import evaluators as _evaluators
from nlsq_fn._drivers.linearize_at import residual_and_jac
from nlsq_fn._drivers.stepwise import can_step_from_host, solve_stepwise
from nlsq_fn._problem.loss import as_loss

# By default one case per strategy; in CI's extended step a case of each kind (bounds
# active, robust loss, x_scale='jac', sigma); the rest are slow tests (each compiles a
# fit).
DEFAULT_CASES = {
    "trf": ("logistic4_bounded",),
    "lm": ("exp_decay",),
    "dogbox": ("exp_decay_upper_bound_active",),
}
EXTENDED_CASES = {
    "trf": (
        "exp_decay_sigma",
        "exp_decay_upper_bound_active",
        "outliers_huber",
        "misra1a_bounded_xscale_jac",
    ),
    "lm": ("rational", "misra1a_xscale_jac"),
    "dogbox": ("logistic4_bounded", "outliers_huber"),
}


def _marks(case, method):
    if case.name in DEFAULT_CASES[method]:
        return []
    return [pytest.mark.extended if case.name in EXTENDED_CASES[method] else pytest.mark.slow]


CASES_AND_METHODS = [
    pytest.param(case, method, id=f"{case.name}-{method}", marks=_marks(case, method))
    for method in STRATEGIES
    for case in CASES
    if method != "lm" or not (case.bounded or case.loss != "linear")
]


@pytest.mark.parametrize("case, method", CASES_AND_METHODS)
def test_stepwise_fit_is_the_compiled_fit(case, method):
    solver = nf.Solver(
        strategy=STRATEGIES[method](),
        loss=as_loss(case.loss, case.f_scale),
        bounds=case.bounds if case.bounded else None,
        x_scale=case.x_scale,
    )
    model = FnModel(case.model)
    data = nf.Data(case.x, case.y, sigma=case.sigma)
    state = nf.init(model, data, jnp.asarray(case.p0), solver)
    assert can_step_from_host(state)
    compiled = solve(model, data, state)
    # The model evaluated op by op, and (a process's first model of its shapes) as one
    # compiled program.
    for evaluate in (residual_and_jac, _evaluators._compiled_evaluation()):
        stepwise = solve_stepwise(model, data, state, evaluate)
        _assert_same_fit(stepwise, compiled, case.name)


def _assert_same_fit(stepwise, compiled, name):
    # Fused and unfused kernels round differently, and which tolerance stops a fit at
    # the optimum (`ftol` or `xtol`) is decided at rounding level: both must succeed, and
    # where they stop for the same reason, after the same evaluations.
    assert bool(stepwise.success) and bool(compiled.success)
    if int(stepwise.status) == int(compiled.status):
        assert int(stepwise.nfev) == int(compiled.nfev)
        assert int(stepwise.njev) == int(compiled.njev)
    assert_same_optimum(
        stepwise.x,
        compiled.x,
        stepwise.cost,
        compiled.cost,
        jac=compiled.jac,
        err_msg=name,
    )
    for name in ("fun", "jac"):
        np.testing.assert_allclose(
            getattr(stepwise, name),
            getattr(compiled, name),
            rtol=1e-6,
            atol=1e-9,
            err_msg=name,
        )
    # The gradient vanishes at the optimum: compared on the scale of its terms.
    scale = np.max(np.abs(compiled.jac)) * np.linalg.norm(compiled.fun)
    np.testing.assert_allclose(stepwise.grad, compiled.grad, rtol=0, atol=1e-6 * scale)
    np.testing.assert_array_equal(stepwise.active_mask, compiled.active_mask)
    np.testing.assert_allclose(stepwise.initial_cost, compiled.initial_cost, rtol=1e-12)


def test_curve_fit_runs_a_new_model_step_by_step_and_then_compiles(monkeypatch):
    """The first fits of a model run step by step until they have cost what a
    compilation would; then the fit is compiled. Both give SciPy's answer."""
    import scipy.optimize

    from nlsq_fn._drivers import stepwise as _stepwise

    calls = []
    original = _stepwise.solve_stepwise
    monkeypatch.setattr(
        _stepwise, "solve_stepwise", lambda *args: calls.append(1) or original(*args)
    )
    x = np.linspace(0, 4, 50)
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + 0.01 * np.random.default_rng(0).standard_normal(50)

    def decay(x, a, b, c):
        return a * jnp.exp(-b * x) + c

    expected, expected_cov = scipy.optimize.curve_fit(
        lambda x, a, b, c: a * np.exp(-b * x) + c, x, y, p0=[1, 1, 0]
    )
    popt, pcov = nf.curve_fit(decay, x, y, p0=[1, 1, 0])
    assert len(calls) == 1
    np.testing.assert_allclose(popt, expected, rtol=1e-7)
    np.testing.assert_allclose(pcov, expected_cov, rtol=1e-5)
    _stepwise._stepwise_seconds[decay] = _stepwise.COMPILE_SECONDS
    popt, pcov = nf.curve_fit(decay, x, y, p0=[1, 1, 0])
    assert len(calls) == 1  # compiled now
    np.testing.assert_allclose(popt, expected, rtol=1e-7)


@pytest.mark.parametrize("compiled_at_once", [False, True], ids=["stepwise", "compiled"])
def test_a_new_float_in_args_compiles_nothing(monkeypatch, compiled_at_once):
    """Floats in `args` are values, not compile keys: a new value reuses the compiled
    fit (and a `fun` that needs a Python float still gets one)."""
    import scipy.optimize
    from test_curve_fit_class import counting_compiles

    from nlsq_fn._drivers import stepwise as _stepwise
    from nlsq_fn._evaluation import compiled as _compiled

    monkeypatch.setattr(_stepwise, "COMPILE_SECONDS", 0.0 if compiled_at_once else np.inf)
    # Start with no programs kept, so that `_evaluation.compiled`'s bound (reached by the earlier
    # tests of this process) cannot clear them midway.
    _compiled.clear()
    x = np.linspace(0, 3, 30)
    y = 1.7 * np.exp(-0.8 * x)

    def residual(p, x, y, scale):
        return p[0] * jnp.exp(-p[1] * x) * scale - y

    nf.least_squares(residual, [1.0, 1.0], args=(x, y, 0.5))
    with counting_compiles() as compiles:
        for scale in (0.25, 2.0, 3.5):
            result = nf.least_squares(residual, [1.0, 1.0], args=(x, y, scale))
            np.testing.assert_allclose(result.x, [1.7 / scale, 0.8], rtol=1e-7)
    assert compiles == []

    def uses_the_float_in_python(p, x, y, scale):
        assert isinstance(scale, float)
        return p[0] * jnp.exp(-p[1] * x) * (scale if scale > 0 else 1.0) - y

    result = nf.least_squares(uses_the_float_in_python, [1.0, 1.0], args=(x, y, 2.0))
    expected = scipy.optimize.least_squares(
        lambda p: p[0] * np.exp(-p[1] * x) * 2.0 - y, [1.0, 1.0]
    )
    np.testing.assert_allclose(result.x, expected.x, rtol=1e-7)
