"""`least_squares`, `LeastSquares` and `OptimizeResult`: SciPy's interface items (args
and kwargs, callable losses, callbacks, tolerances, bounds objects, scalar types, the
Jacobian's shape) against `scipy.optimize.least_squares` on the same input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from helpers import (
    DECAY_P0,
    DECAY_X,
    DECAY_Y,
    LINE_X,
    LINE_Y,
    TIGHT,
    assert_same_optimum,
    decay,
    decay_residual_jac_np,
    decay_residual_np,
)

import nlsq_fn as nf


def test_least_squares_args_kwargs_and_static_arguments():
    def fun(p, x, y, *, scale, kind):
        assert kind == "decay"  # a non-array argument reaches `fun` unchanged
        return scale * (decay(x, *p) - y)

    ours = nf.least_squares(
        fun, DECAY_P0, args=(DECAY_X, DECAY_Y), kwargs=dict(scale=2.0, kind="decay"), **TIGHT
    )
    reference = scipy.optimize.least_squares(
        lambda p: 2.0 * decay_residual_np(p),
        DECAY_P0,
        jac=lambda p: 2.0 * decay_residual_jac_np(p),
        **TIGHT,
    )
    assert isinstance(ours, nf.OptimizeResult) and isinstance(ours.x, np.ndarray)
    np.testing.assert_allclose(ours.x, reference.x, rtol=1e-8)
    np.testing.assert_allclose(ours.cost, reference.cost, rtol=1e-10)
    assert ours.nfev == reference.nfev and ours.status == reference.status


def cubic_soft_l1(z):  # SciPy's test of a callable loss, written with NumPy assignments
    rho = np.empty((3, z.size))
    t = 1 + z
    rho[0] = 3 * (t ** (1 / 3) - 1)
    rho[1] = t ** (-2 / 3)
    rho[2] = -2 / 3 * t ** (-5 / 3)
    return rho


def cubic_soft_l1_jax(z):
    t = 1 + z
    return jnp.stack([3 * (t ** (1 / 3) - 1), t ** (-2 / 3), -2 / 3 * t ** (-5 / 3)])


@pytest.mark.parametrize("loss", [cubic_soft_l1, cubic_soft_l1_jax], ids=["numpy", "jax"])
def test_least_squares_callable_loss_matches_scipy(loss):
    y = DECAY_Y.copy()
    y[::7] += 1.0
    ours = nf.least_squares(
        lambda p: decay(DECAY_X, *p) - y, DECAY_P0, loss=loss, f_scale=0.2, **TIGHT
    )
    reference = scipy.optimize.least_squares(
        lambda p: decay_residual_np(p, y=y),
        DECAY_P0,
        jac=lambda p: decay_residual_jac_np(p, y=y),
        loss=cubic_soft_l1,
        f_scale=0.2,
        **TIGHT,
    )
    np.testing.assert_allclose(ours.x, reference.x, rtol=1e-6)
    np.testing.assert_allclose(ours.cost, reference.cost, rtol=1e-8)


def test_least_squares_scipy_callbacks_and_stop_iteration():
    def residual(p):
        return decay(DECAY_X, *p) - DECAY_Y

    results = []

    def with_result(intermediate_result):
        results.append(intermediate_result)

    def with_x(x):
        results.append(nf.OptimizeResult(x=x))
        return True  # SciPy ignores the returned value

    def stop(intermediate_result):
        results.append(intermediate_result)
        raise StopIteration

    for callback in (with_result, with_x):
        results.clear()
        res = nf.least_squares(residual, DECAY_P0, callback=callback)
        jax.effects_barrier()
        assert res.status > 0 and len(results) == res.nit
        np.testing.assert_allclose(results[-1].x, res.x)
    results.clear()
    res = nf.least_squares(residual, DECAY_P0, callback=stop)
    jax.effects_barrier()
    assert res.status == -2 and not res.success and "StopIteration" in res.message
    assert [r.nit for r in results] == [1]
    np.testing.assert_allclose(results[0].cost, 0.5 * np.sum(np.asarray(residual(res.x)) ** 2))


@pytest.mark.extended
def test_least_squares_tolerance_none_and_bounds_object():
    # With ftol and xtol off only gtol (status 1) or max_nfev (0) can stop a fit. gtol=1e-8
    # is met far from rounding: the optimality falls 200-fold per iteration here (2e-5,
    # 9e-8, 5e-10, ...). A smaller gtol is met, if at all, only after steps whose cost
    # reduction is at rounding level (gtol=1e-10 ends at max_nfev on some CPUs).
    options = dict(ftol=None, xtol=None, gtol=1e-8)
    ours = nf.least_squares(lambda p: decay(DECAY_X, *p) - DECAY_Y, DECAY_P0, **options)
    reference = scipy.optimize.least_squares(
        decay_residual_np, DECAY_P0, jac=decay_residual_jac_np, **options
    )
    assert ours.status == reference.status == 1
    assert_same_optimum(ours.x, reference.x, ours.cost, reference.cost, jac=ours.jac)
    with pytest.raises(ValueError, match="machine epsilon"):
        nf.least_squares(lambda p: decay(DECAY_X, *p) - DECAY_Y, DECAY_P0, method="lm", ftol=None)
    bounds = scipy.optimize.Bounds([0.0, 0.0, -1.0], [2.3, 5.0, 1.0])
    ours = nf.least_squares(
        lambda p: decay(DECAY_X, *p) - DECAY_Y, DECAY_P0, bounds=bounds, **TIGHT
    )
    reference = scipy.optimize.least_squares(
        decay_residual_np, DECAY_P0, jac=decay_residual_jac_np, bounds=bounds, **TIGHT
    )
    np.testing.assert_allclose(ours.x, reference.x, rtol=1e-6)
    np.testing.assert_array_equal(ours.active_mask, reference.active_mask)


def test_optimize_result_prints_like_scipys():
    ours = nf.least_squares(lambda p: decay(DECAY_X, *p) - DECAY_Y, DECAY_P0)
    assert repr(ours) == repr(scipy.optimize.OptimizeResult(dict(ours)))
    assert repr(nf.OptimizeResult()) == "OptimizeResult()"


def test_least_squares_under_jit_returns_jax_arrays():
    def fitted(y):
        return nf.least_squares(lambda p, y: decay(DECAY_X, *p) - y, DECAY_P0, args=(y,)).x

    eager = nf.least_squares(lambda p, y: decay(DECAY_X, *p) - DECAY_Y, DECAY_P0, args=(DECAY_Y,))
    traced = jax.jit(fitted)(DECAY_Y)
    assert isinstance(traced, jax.Array)
    np.testing.assert_allclose(np.asarray(traced), eager.x, rtol=1e-7)


@pytest.mark.extended
@pytest.mark.parametrize("jac", ["2-point", "cs"])
def test_least_squares_args_with_finite_differences_match_scipy(jac):
    """A float in `args` is a traced value (no recompilation for a new one), except with
    complex steps, which call `fun` with complex parameters."""

    def fun(x, a, b=1.0):
        return jnp.stack([(x[0] - a) ** 2 + b, x[0] - a])

    for a in (3.0, 4.5):
        ours = nf.least_squares(fun, [2.0], jac, args=(a,), kwargs={"b": 5.0})
        theirs = scipy.optimize.least_squares(
            lambda x, a, b=1.0: np.asarray(fun(jnp.asarray(x), a, b)),
            [2.0],
            jac,
            args=(a,),
            kwargs={"b": 5.0},
        )
        np.testing.assert_allclose(ours.x, theirs.x, rtol=1e-6)
        np.testing.assert_allclose(ours.x, a, rtol=1e-3)


def test_least_squares_object_gives_scipys_fit():
    def residuals(p):
        return jnp.array([p[0] - 1.0, p[1] - 2.0, 10.0 * (p[0] * p[1] - 2.5)])

    ours = nf.LeastSquares().least_squares(
        residuals, np.array([0.5, 1.5]), loss="huber", jacobian_mode="rev"
    )
    theirs = scipy.optimize.least_squares(
        lambda p: np.asarray(residuals(p)), [0.5, 1.5], loss="huber"
    )
    np.testing.assert_allclose(ours.x, theirs.x, rtol=1e-6)
    with pytest.raises(ValueError, match="jacobian_mode"):
        nf.LeastSquares().least_squares(residuals, [0.5, 1.5], jacobian_mode="backward")


def test_least_squares_rejects_two_dimensional_residuals_like_scipy():
    def fun(x):
        return jnp.array([x, x**2])  # (2, 1) for x of shape (1,)

    with pytest.raises(ValueError, match="at most 1-d"):
        nf.least_squares(fun, [2.0])
    with pytest.raises(TypeError, match="'options'"):
        nf.LeastSquares().least_squares(lambda x: x - 1.0, [2.0], options={})


# --- regressions of issue 9's front-end defects -----------------------------------------
# Defect 2: a user Jacobian of the wrong orientation is an error, never reshaped.


def _exp_residual(p, x, y):
    return p[0] * jnp.exp(-p[1] * x) + p[2] - y


def _exp_jac_columns(p, x, y):  # a list of columns: the natural way to write it, (3, m)
    e = jnp.exp(-p[1] * x)
    return [e, -p[0] * x * e, jnp.ones_like(x)]


def _scipy_error(call):
    with pytest.raises(ValueError) as error:
        call()
    return str(error.value)


def test_transposed_jacobian_raises_as_scipy():
    y = 2 * np.exp(-DECAY_X) + 0.5
    numpy_jac = lambda p, x, y: np.array(_exp_jac_columns(p, x, y))  # noqa: E731
    numpy_fun = lambda p, x, y: p[0] * np.exp(-p[1] * x) + p[2] - y  # noqa: E731
    expected = _scipy_error(
        lambda: scipy.optimize.least_squares(
            numpy_fun, [1.0, 1.0, 0.0], jac=numpy_jac, args=(DECAY_X, y)
        )
    )
    assert "expected (40, 3), actual (3, 40)" in expected
    with pytest.raises(ValueError) as error:
        nf.least_squares(_exp_residual, [1.0, 1.0, 0.0], jac=_exp_jac_columns, args=(DECAY_X, y))
    assert "The return value of `jac` has wrong shape: expected (40, 3), actual (3, 40)" in str(
        error.value
    )
    with pytest.raises(ValueError, match=r"expected \(40, 3\), actual \(3, 40\)"):
        nf.curve_fit(
            lambda x, a, b, c: a * jnp.exp(-b * x) + c,
            DECAY_X,
            y,
            p0=[1.0, 1.0, 0.0],
            jac=lambda x, a, b, c: _exp_jac_columns([a, b, c], x, None),
        )
    with pytest.raises(ValueError, match=r"expected \(40, 3\), actual \(3, 40\)"):
        nf.init(
            lambda x, p: p[0] * jnp.exp(-p[1] * x) + p[2],
            nf.Data(DECAY_X, y),
            jnp.array([1.0, 1.0, 0.0]),
            nf.Solver(jac=lambda x, p: jnp.stack(_exp_jac_columns(p, x, None))),
        )


def test_jacobian_with_too_many_columns_is_named():
    fun = lambda p: jnp.array([p[0] - 1, p[1] - 2])  # noqa: E731
    jac = lambda p: jnp.ones((3, 2))  # noqa: E731
    expected = _scipy_error(
        lambda: scipy.optimize.least_squares(
            lambda p: np.asarray(fun(p)), [0.0, 0.0], jac=lambda p: np.ones((3, 2))
        )
    )
    with pytest.raises(ValueError) as error:
        nf.least_squares(fun, [0.0, 0.0], jac=jac)
    assert "expected (2, 2), actual (3, 2)" in expected
    assert "expected (2, 2), actual (3, 2)" in str(error.value)


# Defect 3: ordinary inputs SciPy accepts (NumPy scalars, ints, lists, Bounds).


def test_least_squares_takes_scipys_scalar_types():
    fun = lambda p, x, y: p[0] * x + p[1] - y  # noqa: E731
    options = dict(
        args=[LINE_X, LINE_Y],
        loss="soft_l1",
        f_scale=1,
        ftol=np.float32(1e-10),
        bounds=scipy.optimize.Bounds([-10, -10], [10, 10]),
        max_nfev=np.inf,
    )
    expected = scipy.optimize.least_squares(fun, [1, 1], **options)
    result = nf.least_squares(fun, np.array([1, 1]), verbose=np.int64(0), **options)
    assert result.success
    np.testing.assert_allclose(result.x, expected.x, rtol=1e-7)
