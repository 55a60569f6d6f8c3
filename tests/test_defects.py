"""Front-end defects that once gave wrong answers or confusing errors (issue 9): each
test reproduces one and compares with SciPy's behaviour on the same input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import nlsq_fn as nf
from nlsq_fn._strategies.trust_region import STATUS_MESSAGES

X40 = np.linspace(0, 4, 40)


# --- 1. padding must never change the data the model sees -------------------------------


# --- 2. a user Jacobian of the wrong orientation is an error, never reshaped -------------


# --- 3. ordinary inputs SciPy accepts: NumPy scalars, ints, lists, Bounds, pandas --------


def _line(x, a, b):
    return a * x + b


X10 = np.linspace(0, 1, 10)
Y10 = 3 * X10 - 1 + 0.05 * np.sin(7 * X10)


# --- 4. undetermined parameters have infinite variance; integer models are refused -------


# --- 5. bounds without p0: a feasible start, as SciPy picks -----------------------------


# --- 7. validation gaps -----------------------------------------------------------------


def _exp_model(x, p):
    return p[0] * jnp.exp(-p[1] * x)


Y_EXP = 2 * np.exp(-1.3 * X10)


def _nf_init(data=None, p0=(1.0, 1.0), **solver):
    data = nf.Data(X10, Y_EXP) if data is None else data
    return nf.init(_exp_model, data, jnp.asarray(p0), nf.Solver(**solver))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: nf.curve_fit(_line, X10, Y10, bounds=([0, np.nan], [10, 10])),
            "`bounds` contain NaN",
        ),
        (
            lambda: nf.least_squares(lambda p: p - 1, [1.0], bounds=(np.nan, 5)),
            "`bounds` contain NaN",
        ),
        (lambda: _nf_init(bounds=([0.0, np.nan], [5.0, 5.0])), "`bounds` contain NaN (for p[1])"),
        (lambda: _nf_init(loss=nf.Huber(f_scale=0.0)), "`f_scale` must be positive"),
        (lambda: _nf_init(loss=nf.Huber(f_scale=np.nan)), "`f_scale` must be positive"),
        (lambda: _nf_init(loss=nf.Huber(f_scale=np.inf)), "`f_scale` must be positive"),
        (lambda: _nf_init(loss=nf.Huber(f_scale=1e-300)), "`f_scale` must be positive"),
        (lambda: _nf_init(loss=nf.Huber(f_scale=-2.0)), "`f_scale` must be positive"),
        (
            lambda: nf.least_squares(lambda p: p - 1, [1.0], loss="huber", f_scale=np.inf),
            "`f_scale` must be positive",
        ),
        (
            lambda: nf.curve_fit(_line, X10, Y10, p0={"a": 1.0, "c": 2.0}),
            "unknown: ['c'], missing: ['b']",
        ),
        (lambda: nf.least_squares(lambda p: p - 1, [1.0 + 1j]), "`x0` must be real"),
        (lambda: nf.curve_fit(_line, X10, Y10, p0=[1.0, 1j]), "`p0` must be real"),
        (lambda: nf.curve_fit(_line, X10, Y10 + 0j, p0=[1.0, 1.0]), "`ydata` must be real"),
        (
            lambda: nf.curve_fit(lambda x, a, b: a * x + b * 1j, X10, Y10, p0=[1.0, 1.0]),
            "The model returns complex values; they must be real",
        ),
        (lambda: _nf_init(nf.Data(X10, Y_EXP + 0j)), "`y` must be real"),
        (lambda: nf.least_squares(lambda p: 1e200 * (p - 1), [3.0]), "overflows"),
        (lambda: _nf_init(nf.Data(X10, Y_EXP, mask=np.zeros(10, bool))), "Every point is masked"),
        (lambda: nf.least_squares(lambda p: jnp.ones(3), np.zeros(0)), "`p0` has no parameters"),
        (lambda: nf.Solver(strategy="newton"), "`strategy` must be"),
        (lambda: nf.Solver(loss="l7"), "`loss` must be one of"),
        (lambda: nf.pad_datasets([(X10, Y10), (X10[:0], Y10[:0])]), "Dataset 1 has no points"),
        (
            lambda: nf.pad_datasets([(X10, Y10), (X10, Y10, np.ones(9))]),
            "Dataset 1: `sigma` has shape (9,)",
        ),
        (
            lambda: nf.pad_datasets([(X10, Y10), (X10, np.where(X10 > 0.5, np.nan, Y10))]),
            "Dataset 1: `y` contains NaN",
        ),
        (
            lambda: nf.multistart(
                _exp_model,
                nf.Data(X10, Y_EXP),
                jnp.ones(2),
                nf.Solver(bounds=(0.0, 5.0)),
                n_starts=2.5,
            ),
            "`n_starts` must",
        ),
        (
            lambda: nf.multistart(
                _exp_model,
                nf.Data(X10, Y_EXP),
                jnp.ones(2),
                nf.Solver(bounds=(0.0, 5.0)),
                key="seed",
            ),
            "`key` must",
        ),
    ],
)
def test_validation_gaps_raise_clear_errors(make, message):
    with pytest.raises((ValueError, TypeError)) as error:
        make()
    assert message in str(error.value)
    assert len(str(error.value)) < 400


@pytest.mark.extended
def test_inputs_that_used_to_be_refused_now_fit():
    # A single-leaf pytree p0 with bounds of the same structure.
    model = lambda x, p: p["a"] * x  # noqa: E731
    state = nf.init(
        model, nf.Data(X10, 3 * X10), {"a": 1.0}, nf.Solver(bounds=({"a": 0.0}, {"a": 5.0}))
    )
    np.testing.assert_allclose(nf.solve(model, nf.Data(X10, 3 * X10), state).x["a"], 3.0)
    # A p0 dict for a plain f(x, a, b): mapped to the signature, as a `bounds` dict.
    expected, _ = scipy.optimize.curve_fit(_line, X10, Y10, p0=[1.0, 2.0])
    popt, _ = nf.curve_fit(_line, X10, Y10, p0={"b": 2.0, "a": 1.0})
    np.testing.assert_allclose(popt, expected, rtol=1e-7)
    # Loss and strategy by SciPy's names; max_nfev=inf (no limit) as SciPy.
    solver = nf.Solver(loss="huber", strategy="trf", max_nfev=np.inf)
    data = nf.Data(X10, Y_EXP)
    result = nf.solve(_exp_model, data, nf.init(_exp_model, data, jnp.ones(2), solver))
    assert result.success
    np.testing.assert_allclose(result.x, [2.0, 1.3], rtol=1e-6)
    # A list is an array for Data (not a pytree of scalars), for eval, for pad_datasets.
    assert nf.Data(list(X10), Y10).x.shape == (10,)
    batch = nf.pad_datasets([[list(X10), Y10], (X10[:7], Y10[:7])])
    assert batch.y.shape == (2, 10) and batch.mask.sum() == 17
    fit = nf.CurveFit(_line, X10, Y10, p0=[1, 1]).fit()
    np.testing.assert_allclose(fit.eval([0, 1]), _line(np.array([0.0, 1.0]), *fit.popt))
    # An integer key is a seed.
    best = nf.multistart(
        _exp_model, data, jnp.ones(2), nf.Solver(bounds=(0.0, 5.0)), n_starts=3, key=1
    ).best
    np.testing.assert_allclose(best.x, [2.0, 1.3], rtol=1e-6)


# --- 8. under jit, bad input ends with status -1 ----------------------------------------


def test_bad_input_under_jit_gives_status_minus_one():
    """One compiled fit, fed good and bad values (all traced): sigma < 0, p0 outside the
    bounds, lower > upper, NaN bounds, x_scale <= 0 or NaN, every point masked."""

    @jax.jit
    def fit(sigma, p0, lower, upper, x_scale, mask):
        data = nf.Data(X10, Y_EXP, sigma=sigma, mask=mask)
        solver = nf.Solver(bounds=(lower, upper), x_scale=x_scale)
        return nf.solve(_exp_model, data, nf.init(_exp_model, data, p0, solver)).status

    good = dict(
        sigma=jnp.ones(10),
        p0=jnp.ones(2),
        lower=jnp.zeros(2),
        upper=jnp.full(2, 5.0),
        x_scale=jnp.ones(2),
        mask=jnp.ones(10, bool),
    )
    assert fit(**good) > 0
    bad = [
        dict(sigma=-jnp.ones(10)),
        dict(p0=jnp.array([1.0, 7.0])),
        dict(lower=jnp.array([0.0, 6.0])),
        dict(upper=jnp.array([5.0, jnp.nan])),
        dict(x_scale=jnp.array([1.0, 0.0])),
        dict(x_scale=jnp.array([jnp.nan, 1.0])),
        dict(mask=jnp.zeros(10, bool)),
    ]
    statuses = [int(fit(**{**good, **change})) for change in bad]
    assert statuses == [-1] * len(bad)
    message = STATUS_MESSAGES[-1]  # what `Solution.message` says for status -1
    for reason in (
        "sigma <= 0",
        "p0 outside the bounds",
        "lower >= upper",
        "NaN bounds",
        "x_scale <= 0",
        "every point masked",
    ):
        assert reason in message


# --- 6. masked points where the model is not finite -------------------------------------


@pytest.mark.extended
def test_masked_points_where_the_model_is_not_finite_count_for_nothing():
    model = lambda x, p: p[0] * jnp.sqrt(x) + p[1]  # noqa: E731  (NaN for x < 0)
    x = np.linspace(0.5, 3, 12)
    y = 1.7 * np.sqrt(x) - 0.4 + 0.01 * np.cos(5 * x)
    x[3], x[8] = -1.0, np.nan  # masked: the model is NaN there, in value and derivative
    mask = np.isfinite(x) & (x > 0)
    kept = mask.nonzero()[0]
    expected, _ = scipy.optimize.curve_fit(
        lambda x, a, b: a * np.sqrt(x) + b, x[kept], y[kept], p0=[1.0, 0.0]
    )

    def fitted(y_values, data_x, data_mask, jac):
        data = nf.Data(data_x, y_values, mask=data_mask)
        state = nf.init(model, data, jnp.array([1.0, 0.0]), nf.Solver(jac=jac))
        return nf.solve(model, data, state)

    for jac in ("rev", "fwd"):
        result = fitted(jnp.asarray(y), x, mask, jac)
        assert result.success, result.message
        np.testing.assert_allclose(result.x, expected, rtol=1e-7)
    # Differentiating through the fit: finite, and equal to the fit of the kept points.
    grad = jax.grad(lambda v: fitted(v, x, mask, "rev").x[0])(jnp.asarray(y))
    grad_kept = jax.grad(lambda v: fitted(v, x[kept], None, "rev").x[0])(jnp.asarray(y[kept]))
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[~mask] == 0)
    np.testing.assert_allclose(np.asarray(grad)[kept], grad_kept, rtol=1e-8, atol=1e-12)


# --- 9. diagnostics: no false alarms on exact data; p0 shown as given; vmap tables ------


@pytest.mark.extended
def test_verbose_2_under_vmap_prints_one_line_not_interleaved_tables(capsys):
    batch = nf.pad_datasets([(X10, 2 * np.exp(-s * X10)) for s in (1.0, 1.5, 2.0)])
    state = nf.init_batch(_exp_model, batch, jnp.ones(2), nf.Solver(verbose=2))
    result = nf.solve_batch(_exp_model, batch, state)
    jax.effects_barrier()
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "verbose=2: 3 fits run as one batch (vmap); the iteration table is "
        "printed for single fits only."
    ]
    np.testing.assert_allclose(result.x[:, 1], [1.0, 1.5, 2.0], rtol=1e-6)
    assert np.all(result.status > 0)
