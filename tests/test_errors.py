"""Bad input gets a clear error before any compilation; inside `jit`, a status code."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import exp_decay

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
        (lambda: _init(bounds=([0, 0, 0], [10, 10, 10]), p0=jnp.array([1.0, 0.5, -1.0])),
         "`p0` is outside the bounds for p[2]"),
        (lambda: _init(bounds=([0, 2, 0], [10, 1, 10])),
         "lower bound must be strictly less than its upper bound (violated for p[1])"),
        (lambda: _init(bounds=([0, 0], [10, 10])), "`lower bound` has shape (2,)"),
        (lambda: _init(p0=jnp.array([1.0, np.nan, 0.0])), "`p0` contains NaN or inf"),
        (lambda: _init(model=lambda x, p: exp_decay(x, p)[:-1]),
         "The model returns shape (29,) but `y` has shape (30,)"),
        (lambda: _init(model=lambda x, p: (exp_decay(x, p), x)), "must return one array"),
        (lambda: _init(model=lambda x, p: jnp.log(p[2]) + exp_decay(x, p)),
         "The model returns NaN or inf at p0"),
        (lambda: _init(model=lambda x, p: p["a"] * x), "Calling the model"),
        (lambda: nf.init(exp_decay, nf.Data(X, Y), P0,
                         nf.Solver(strategy=nf.LevenbergMarquardt(), bounds=(0, 10))),
         "does not support bounds"),
        (lambda: _init(x_scale=-1.0), "`x_scale` must be"),
        (lambda: _init(x_scale="auto"), "`x_scale` must be"),
        (lambda: _init(ftol=0, xtol=0, gtol=0), "At least one of"),
        (lambda: _init(max_nfev=0), "`max_nfev` must be positive"),
        (lambda: _init(jac="4-point"), "`jac` must be a callable, 'fwd', 'rev', '2-point'"),
        (lambda: _init(jac="2-point", diff_step=[1e-6, 1e-6]),
         "`diff_step` has shape (2,); give a scalar or one step for each of the 3"),
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
        nf.init(model, nf.Data(X, Y), {"a": 1.0, "b": 1.0},
                nf.Solver(bounds=({"a": 0.0}, {"a": 2.0, "b": 2.0})))


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
