"""The user's host code (a NumPy model, Jacobian or loss; a callback) under every front
end (the `_FRONT_ENDS` table): its exceptions reach the caller as themselves, as SciPy
lets them through, and warnings point at the caller's line."""

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import EXACT_X, EXACT_Y, decay, decay_jac_np, decay_np, exp_decay

import nlsq_fn as nf

P0 = jnp.array([1.0, 0.5, 0.0])


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


_FRONT_ENDS = {
    "curve_fit lm": lambda f, **kw: nf.curve_fit(f, EXACT_X, EXACT_Y, p0=[1.0, 0.5, 0.0], **kw),
    "curve_fit trf": lambda f, **kw: nf.curve_fit(
        f, EXACT_X, EXACT_Y, p0=[1.0, 0.5, 0.0], method="trf", **kw
    ),
    "least_squares": lambda f, **kw: nf.least_squares(
        lambda p: f(EXACT_X, *p) - EXACT_Y,
        [1.0, 0.5, 0.0],
        **{
            ("jac" if k == "jac" else k): ((lambda p, _j=v: _j(EXACT_X, *p)) if k == "jac" else v)
            for k, v in kw.items()
        },
    ),
    "CurveFit.fit": lambda f, **kw: nf.CurveFit(
        f, EXACT_X, EXACT_Y, p0=[1.0, 0.5, 0.0], method="trf", **kw
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
        _FRONT_ENDS[front_end](_failing_mid_fit(error, decay_np))
    assert raised.value is error


@pytest.mark.parametrize("front_end", ["curve_fit lm", "least_squares"])
def test_an_exception_of_a_numpy_model_at_p0_reaches_the_caller(front_end):
    # Not the error of JAX's failed attempt to trace it (which made it a NumPy model).
    error = UserError("the model cannot be evaluated at b < 0.6")

    def model(x, a, b, c):
        value = decay_np(x, a, b, c)
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
        _FRONT_ENDS[front_end](decay, jac=_failing_mid_fit(error, decay_jac_np))
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
    data = nf.Data(EXACT_X, EXACT_Y)
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
        _FRONT_ENDS["least_squares"](_failing_mid_fit(KeyboardInterrupt(), decay_np))


def test_an_exception_of_a_numpy_loss_reaches_the_caller():
    error = UserError("the loss cannot be evaluated there")
    initial = np.sum((decay_np(EXACT_X, 1.0, 0.5, 0.0) - EXACT_Y) ** 2)

    def loss(z):
        z = np.array(z)  # NumPy: JAX cannot trace it
        if np.sum(z) < 0.5 * initial:  # the fit has made progress
            raise error
        return np.stack([z, np.ones_like(z), np.zeros_like(z)])

    with pytest.raises(UserError) as raised:
        _FRONT_ENDS["least_squares"](decay, loss=loss)
    assert raised.value is error


def test_a_callback_of_no_accepted_form_gets_a_clear_error():
    # The guide's callback(iteration, cost, grad) is accepted (tests/test_curve_fit_class.py);
    # two required arguments match no form.
    with pytest.raises(TypeError, match=r"callback\(iteration, cost, grad\)"):
        _FRONT_ENDS["curve_fit trf"](decay, callback=lambda iteration, cost: None)


def test_warnings_point_at_the_callers_line():
    # Not at a line inside nlsq_fn, however deep the front ends call one another.
    with pytest.warns(UserWarning, match="below the machine epsilon") as caught:
        _FRONT_ENDS["least_squares"](decay, ftol=1e-20)
    with pytest.warns(UserWarning, match="below the machine epsilon") as more:
        _FRONT_ENDS["curve_fit trf"](decay, ftol=1e-20)
    with pytest.warns(UserWarning, match="could not be traced by JAX") as host:
        _FRONT_ENDS["curve_fit lm"](decay_np)
    with pytest.warns(nf.OptimizeWarning, match="Covariance") as covariance:
        nf.curve_fit(lambda x, a, b: (a + b) * x, EXACT_X, EXACT_Y, p0=[1.0, 1.0])
    for record in (*caught, *more, *host, *covariance):
        assert record.filename == __file__, (record.message, record.filename)
