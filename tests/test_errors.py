"""Bad input gets a clear error before any compilation; inside `jit`, a status code."""

import threading

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import decay, exp_decay

import nlsq_fn as nf

X = np.linspace(0, 4, 30)
Y = 2.0 * np.exp(-1.1 * X) + 0.3
P0 = jnp.array([1.0, 0.5, 0.0])


def _init(data=None, p0=P0, model=exp_decay, **solver_options):
    data = nf.Data(X, Y) if data is None else data
    return nf.init(model, data, p0, nf.Solver(**solver_options))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: _init(nf.Data(X, Y[:-1])), "30 points but `y` has 29"),
        (lambda: _init(nf.Data(X, Y, sigma=np.ones(29))), "`sigma` has shape"),
        (lambda: _init(nf.Data(X, Y, mask=np.ones(29, bool))), "`mask` has shape"),
        (lambda: _init(nf.Data(X, np.where(X > 2, np.nan, Y))), "`y` contains NaN or inf"),
        (lambda: _init(nf.Data(X, np.where(X > 2, np.inf, Y))), "`y` contains NaN or inf"),
        (lambda: _init(nf.Data(np.where(X > 2, np.nan, X), Y)), "`x` contains NaN or inf"),
        (lambda: _init(nf.Data(X, Y, sigma=np.where(X > 2, 0.0, 1.0))), "`sigma` must be"),
        (lambda: _init(nf.Data(X, Y, sigma=-np.ones(30))), "`sigma` must be"),
        (
            lambda: _init(bounds=([0, 0, 0], [10, 10, 10]), p0=jnp.array([1.0, 0.5, -1.0])),
            "`p0` is outside the bounds for p[2]",
        ),
        (
            lambda: _init(bounds=([0, 2, 0], [10, 1, 10])),
            "lower bound must be strictly less than its upper bound (violated for p[1])",
        ),
        (lambda: _init(bounds=([0, 0], [10, 10])), "`lower bound` has shape (2,)"),
        (lambda: _init(p0=jnp.array([1.0, np.nan, 0.0])), "`p0` contains NaN or inf"),
        (
            lambda: _init(model=lambda x, p: exp_decay(x, p)[:-1]),
            "The model returns shape (29,) but `y` has shape (30,)",
        ),
        (lambda: _init(model=lambda x, p: (exp_decay(x, p), x)), "must return one array"),
        (
            lambda: _init(model=lambda x, p: jnp.log(p[2]) + exp_decay(x, p)),
            "The model returns NaN or inf at p0",
        ),
        (lambda: _init(model=lambda x, p: p["a"] * x), "Calling the model"),
        (
            lambda: nf.init(
                exp_decay,
                nf.Data(X, Y),
                P0,
                nf.Solver(strategy=nf.LevenbergMarquardt(), bounds=(0, 10)),
            ),
            "does not support bounds",
        ),
        (lambda: _init(x_scale=-1.0), "`x_scale` must be"),
        (lambda: _init(x_scale="auto"), "`x_scale` must be"),
        (lambda: _init(ftol=0, xtol=0, gtol=0), "At least one of"),
        (lambda: _init(max_nfev=0), "`max_nfev` must be positive"),
        (lambda: _init(jac="4-point"), "`jac` must be a callable, 'fwd', 'rev', '2-point'"),
        (
            lambda: _init(jac="2-point", diff_step=[1e-6, 1e-6]),
            "`diff_step` has shape (2,); give a scalar or one step for each of the 3",
        ),
        (lambda: nf.init(exp_decay, (X, Y), P0), "must be an nlsq_fn.Data"),
        (lambda: _init(nf.Data(X[:0], Y[:0])), "`y` is empty"),
    ],
)
def test_bad_input_raises_a_clear_error(make, message):
    with pytest.raises((ValueError, TypeError)) as error:
        make()
    assert message in str(error.value)


def test_wrong_parameter_structure_is_named():
    def model(x, p):
        return p["a"] * jnp.exp(-p["b"] * x)

    with pytest.raises(ValueError, match="Calling the model"):
        nf.init(model, nf.Data(X, Y), {"a": 1.0}, nf.Solver())
    with pytest.raises(ValueError, match="lower bound"):
        nf.init(
            model,
            nf.Data(X, Y),
            {"a": 1.0, "b": 1.0},
            nf.Solver(bounds=({"a": 0.0}, {"a": 2.0, "b": 2.0})),
        )


def test_bad_data_inside_jit_gives_a_status_not_garbage():
    @jax.jit
    def fit(y):
        data = nf.Data(X, y)
        return nf.solve(exp_decay, data, nf.init(exp_decay, data, P0, nf.Solver()))

    good = fit(jnp.asarray(Y))
    bad = fit(jnp.asarray(np.where(X > 2, np.nan, Y)))
    assert int(good.status) > 0
    assert int(bad.status) == -1
    assert not bool(bad.success)
    assert "NaN or inf" in bad.message
    assert int(bad.nfev) == 1


def test_model_that_is_not_finite_at_p0_inside_vmap_is_flagged_per_member():
    def model(x, p):
        return jnp.sqrt(p[2]) + exp_decay(x, p)

    @eqx.filter_jit
    def fit(p0s):
        data = nf.Data(X, Y)
        return jax.vmap(lambda p0: nf.solve(model, data, nf.init(model, data, p0)))(p0s)

    out = fit(jnp.array([[1.0, 0.5, 0.1], [1.0, 0.5, -1.0]]))
    np.testing.assert_array_equal(out.status[1], -1)
    assert int(out.status[0]) > 0
    assert np.all(np.isfinite(out.x[0]))


# --- Exceptions raised by the user's host code reach the caller as themselves -------


class UserError(ValueError):
    """The user's own exception: the front ends must raise this very object."""


def _failing_mid_fit(error, function):
    """`function(x, a, b, c)` raising `error` once the fit has moved `b` from 0.5
    (p0) towards 1.1 (the optimum): mid-fit, after `init` checked it at p0."""

    def failing(x, a, b, c):
        if b > 0.8:
            raise error
        return function(x, a, b, c)

    return failing


def _decay_np(x, a, b, c):
    return a * np.exp(-b * np.asarray(x)) + c


def _decay_jac_np(x, a, b, c):
    e = np.exp(-b * np.asarray(x))
    return np.stack([e, -a * x * e, np.ones_like(e)], axis=1)


_FRONT_ENDS = {
    "curve_fit lm": lambda f, **kw: nf.curve_fit(f, X, Y, p0=[1.0, 0.5, 0.0], **kw),
    "curve_fit trf": lambda f, **kw: nf.curve_fit(f, X, Y, p0=[1.0, 0.5, 0.0], method="trf", **kw),
    "least_squares": lambda f, **kw: nf.least_squares(
        lambda p: f(X, *p) - Y,
        [1.0, 0.5, 0.0],
        **{
            ("jac" if k == "jac" else k): ((lambda p, _j=v: _j(X, *p)) if k == "jac" else v)
            for k, v in kw.items()
        },
    ),
    "CurveFit.fit": lambda f, **kw: nf.CurveFit(
        f, X, Y, p0=[1.0, 0.5, 0.0], method="trf", **kw
    ).fit(),
}


@pytest.mark.filterwarnings("ignore:The model could not be traced by JAX")
@pytest.mark.parametrize(
    "front_end",
    # `curve_fit` is a layer over `CurveFit`: its row covers CurveFit's path by default.
    ["curve_fit lm", "least_squares", pytest.param("CurveFit.fit", marks=pytest.mark.extended)],
)
def test_an_exception_of_a_numpy_model_mid_fit_reaches_the_caller(front_end):
    # JAX would report it as `JaxRuntimeError: INTERNAL: CpuCallback error`; SciPy lets
    # the model's exception through unchanged.
    error = UserError("the model cannot be evaluated there")
    with pytest.raises(UserError) as raised:
        _FRONT_ENDS[front_end](_failing_mid_fit(error, _decay_np))
    assert raised.value is error


@pytest.mark.parametrize("front_end", ["curve_fit lm", "least_squares"])
def test_an_exception_of_a_numpy_model_at_p0_reaches_the_caller(front_end):
    # Not the error of JAX's failed attempt to trace it (which made it a NumPy model).
    error = UserError("the model cannot be evaluated at b < 0.6")

    def model(x, a, b, c):
        value = _decay_np(x, a, b, c)
        if b < 0.6:
            raise error
        return value

    with pytest.raises(UserError) as raised:
        _FRONT_ENDS[front_end](model)
    assert raised.value is error


@pytest.mark.filterwarnings("ignore:The model could not be traced by JAX")
@pytest.mark.parametrize("front_end", ["curve_fit lm", "least_squares"])
def test_an_exception_of_a_numpy_jac_mid_fit_reaches_the_caller(front_end):
    error = UserError("the Jacobian cannot be evaluated there")
    with pytest.raises(UserError) as raised:
        _FRONT_ENDS[front_end](decay, jac=_failing_mid_fit(error, _decay_jac_np))
    assert raised.value is error


@pytest.mark.extended
def test_an_exception_of_a_callback_reaches_the_caller():
    error = UserError("stop it my way")

    def four_arguments(iteration, params, cost, grad):
        raise error

    def scipy_style(intermediate_result):
        raise error

    for callback, front_end in ((four_arguments, "curve_fit trf"), (scipy_style, "least_squares")):
        with pytest.raises(UserError) as raised:
            _FRONT_ENDS[front_end](decay, callback=callback)
        assert raised.value is error
    data = nf.Data(X, Y)
    state = nf.init(exp_decay, data, P0, nf.Solver(callback=four_arguments))
    with pytest.raises(UserError):
        nf.solve(exp_decay, data, state)  # called eagerly
    with pytest.raises(jax.errors.JaxRuntimeError, match="UserError: stop it my way"):
        # Under the user's own jit it is JAX's error, which names the user's exception.
        jax.block_until_ready(jax.jit(nf.solve, static_argnums=0)(exp_decay, data, state))


@pytest.mark.extended
def test_fits_in_threads_each_raise_their_own_exception():
    errors = [UserError(f"fit {i}") for i in range(2)]
    raised = [None] * 2

    def run(i):
        def callback(iteration, params, cost, grad):
            raise errors[i]

        try:
            _FRONT_ENDS["curve_fit trf"](decay, callback=callback)
        except UserError as error:
            raised[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(a is b for a, b in zip(raised, errors, strict=True)), raised


@pytest.mark.extended
@pytest.mark.filterwarnings("ignore:The model could not be traced by JAX")
def test_ctrl_c_in_a_callback_or_a_numpy_model_raises_keyboard_interrupt():
    def interrupted(iteration, params, cost, grad):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _FRONT_ENDS["curve_fit trf"](decay, callback=interrupted)
    with pytest.raises(KeyboardInterrupt):
        _FRONT_ENDS["least_squares"](_failing_mid_fit(KeyboardInterrupt(), _decay_np))


def test_an_exception_of_a_numpy_loss_reaches_the_caller():
    error = UserError("the loss cannot be evaluated there")
    initial = np.sum((_decay_np(X, 1.0, 0.5, 0.0) - Y) ** 2)

    def loss(z):
        z = np.array(z)  # NumPy: JAX cannot trace it
        if np.sum(z) < 0.5 * initial:  # the fit has made progress
            raise error
        return np.stack([z, np.ones_like(z), np.zeros_like(z)])

    with pytest.raises(UserError) as raised:
        _FRONT_ENDS["least_squares"](decay, loss=loss)
    assert raised.value is error


def test_a_callback_of_no_accepted_form_gets_a_clear_error():
    # The guide's callback(iteration, cost, grad) is accepted (tests/test_nlsq_api.py);
    # two required arguments match no form.
    with pytest.raises(TypeError, match=r"callback\(iteration, cost, grad\)"):
        _FRONT_ENDS["curve_fit trf"](decay, callback=lambda iteration, cost: None)


@pytest.mark.filterwarnings("ignore:The model could not be traced by JAX")
def test_streaming_a_numpy_model_gets_a_clear_error():
    optimizer = nf.StreamingOptimizer(_decay_np, p0=[1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="StreamingOptimizer needs a model written with"):
        optimizer.fit((X, Y))


def test_warnings_point_at_the_callers_line():
    # Not at a line inside nlsq_fn, however deep the front ends call one another.
    with pytest.warns(UserWarning, match="below the machine epsilon") as caught:
        _FRONT_ENDS["least_squares"](decay, ftol=1e-20)
    with pytest.warns(UserWarning, match="below the machine epsilon") as more:
        _FRONT_ENDS["curve_fit trf"](decay, ftol=1e-20)
    with pytest.warns(UserWarning, match="could not be traced by JAX") as host:
        _FRONT_ENDS["curve_fit lm"](_decay_np)
    with pytest.warns(nf.OptimizeWarning, match="Covariance") as covariance:
        nf.curve_fit(lambda x, a, b: (a + b) * x, X, Y, p0=[1.0, 1.0])
    for record in (*caught, *more, *host, *covariance):
        assert record.filename == __file__, (record.message, record.filename)
