"""Progress output, the stopping callback, summary, repr, diagnostics and plots."""

import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from helpers import LINE_X, decay, decay_np, two_parameter_decay

import nlsq_fn as nf

RNG = np.random.default_rng(2)
X = np.linspace(0, 4, 60)
Y = decay_np(X, 2.5, 1.3, 0.5) + 0.05 * RNG.standard_normal(60)
P0 = [1.0, 0.5, 0.0]


def _fit(x=X, y=Y, p0=P0, **options):
    return nf.CurveFit(decay, x, y, p0=p0, method="trf", **options).fit()


class Recorder:
    """A callback that records what it sees and stops after `stop_at` iterations. One
    instance serves every test, so they share one compiled fit (the callback is static
    configuration)."""

    def __init__(self):
        self.stop_at = None
        self.seen = []

    def __call__(self, iteration, params, cost, grad):
        self.seen.append((iteration, np.asarray(params), float(cost), np.asarray(grad)))
        return self.stop_at is not None and iteration >= self.stop_at


RECORDER = Recorder()


def _recorder(stop_at):
    RECORDER.stop_at = stop_at
    RECORDER.seen = []
    return RECORDER


def test_verbose_2_prints_scipys_table(capsys):
    result = _fit(verbose=2)
    jax.effects_barrier()
    ours = capsys.readouterr().out
    jac = jax.jit(jax.jacfwd(lambda p, x: decay(x, *p)))
    scipy.optimize.curve_fit(
        decay_np,
        X,
        Y,
        p0=P0,
        method="trf",
        verbose=2,
        jac=lambda x, *p: np.asarray(jac(jnp.asarray(p), x)),
    )
    reference = capsys.readouterr().out
    assert ours == reference
    assert len(ours.splitlines()) == result.nit + 4  # header, iteration 0, two closing lines


def test_verbose_1_prints_the_termination_report(capsys):
    result = _fit(verbose=1)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == result.message
    assert out[1].startswith(f"Function evaluations {result.nfev}, initial cost")


def test_callback_sees_each_iteration_and_can_stop_the_fit():
    result = _fit(callback=_recorder(stop_at=3))
    jax.effects_barrier()
    seen = RECORDER.seen
    assert result.status == -3 and not result.success
    assert result.message == "Stopped by the callback."
    assert [s[0] for s in seen] == [1, 2, 3] and result.nit == 3
    np.testing.assert_allclose(seen[-1][1], result.popt)
    assert seen[-1][2] == pytest.approx(result.cost, rel=1e-12)
    np.testing.assert_allclose(seen[-1][3], result.grad, rtol=1e-8, atol=1e-12)
    assert all(b[2] < a[2] for a, b in zip(seen, seen[1:], strict=False))  # cost decreases
    with pytest.raises(RuntimeError, match="Stopped by the callback"):
        nf.curve_fit(decay, X, Y, p0=P0, method="trf", callback=_recorder(stop_at=3))


def test_a_callback_that_never_stops_changes_nothing():
    watched = _fit(callback=_recorder(stop_at=None))
    jax.effects_barrier()
    plain = _fit()
    np.testing.assert_array_equal(watched.popt, plain.popt)
    calls = [seen[0] for seen in RECORDER.seen]
    assert watched.nfev == plain.nfev and calls == list(range(1, plain.nit + 1))


def test_no_callbacks_are_traced_unless_asked_for():
    class Model(eqx.Module):
        def __call__(self, x, p):
            return decay(x, *p)

    data = nf.Data(X, Y)

    def traced(**options):
        state = nf.init(Model(), data, jnp.asarray(P0), nf.Solver(**options))
        return str(jax.make_jaxpr(lambda d, s: nf.solve(Model(), d, s))(data, state))

    assert "callback" not in traced()
    assert "pure_callback" in traced(verbose=2)
    assert "pure_callback" in traced(callback=lambda *args: False)


def test_summary_and_repr():
    result = _fit()
    text = result.summary()
    for heading in ("[[Fit Statistics]]", "[[Variables]]", "[[Correlations]]"):
        assert heading in text
    for name, value, err in zip(result.names, result.popt, result.perr, strict=True):
        assert f"{name}: {value:.8g} +/- {err:.6g}" in text
    assert f"chi-square         = {result.chisqr:.6g}" in text
    assert f"R-squared          = {result.r_squared:.6g}" in text
    assert result.message in text
    assert "no problems found" in text
    corr = result.correlation[1, 2]
    assert "C(b, c)" in text and f"{corr:+.4f}" in text
    line = repr(result)
    assert "\n" not in line and line.startswith("CurveFitResult(a=") and "success" in line
    popt, pcov = result  # unpacks like SciPy's return value
    np.testing.assert_array_equal(popt, result.popt)


def _names(result):
    return [d.name for d in result.diagnostics]


def test_diagnostics_fire_with_hints():
    assert _names(_fit()) == []
    at_bound = _fit(bounds={"a": (0.0, 2.0)})
    assert "at bound" in _names(at_bound)
    assert "'a'" in str(at_bound.diagnostics[0]) and "widen the upper bound" in str(
        at_bound.diagnostics[0]
    )
    # x = 0 everywhere: only a + c is determined.
    with pytest.warns(nf.OptimizeWarning, match="could not be estimated"):
        degenerate = _fit(x=np.zeros(60), y=Y)
    assert "ill-conditioned" in _names(degenerate)
    # A decay fitted to a decay plus a wave leaves long runs of one residual sign.
    wavy = _fit(y=Y + 0.3 * np.sin(3 * X))
    assert "systematic residuals" in _names(wavy)
    # Every parameter held away from the data's values: the residuals are biased.
    biased = _fit(p0=[1.0, 1.3, -0.7], bounds=([0, 1.2, -1.0], [2.0, 1.4, -0.5]))
    assert "residual bias" in _names(biased)
    text = biased.summary()
    assert "[[Diagnostics]]" in text and "hint: add an offset" in text


def test_poor_scaling_and_early_stop_are_diagnosed():
    def scaled_line(x, a, b):
        return 1e-7 * a * x + b

    x = np.linspace(0, 1, 60)
    y = 2.0 * x + 1.0 + 0.01 * RNG.standard_normal(60)
    result = nf.CurveFit(scaled_line, x, y, p0=[1e7, 0.0]).fit()
    assert "poorly scaled" in _names(result)
    early = _fit(callback=_recorder(stop_at=2))
    names = _names(early)
    assert "not converged" in names and "large gradient" in names


def test_plot_draws_data_fit_band_and_residuals():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    result = _fit()
    fig = result.plot(band=0.95)
    top, bottom = fig.axes
    band = top.collections[0].get_paths()[0].vertices[:, 1]
    lower, upper = result.confidence_band(np.linspace(X.min(), X.max(), 400))
    assert band.min() == pytest.approx(lower.min()) and band.max() == pytest.approx(upper.max())
    labels = {t.get_text() for t in top.get_legend().get_texts()}
    assert labels == {"fit", "95% confidence band", "data"}
    np.testing.assert_allclose(bottom.lines[-1].get_ydata(), result.residual)


def test_plot_without_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"nlsq_fn\[plot\]"):
        _fit().plot()


@pytest.mark.extended
def test_least_squares_verbose_2_and_callback_match_scipy(capsys):
    def residual(p, x, y):
        return decay(x, *p) - y

    jac = jax.jit(jax.jacfwd(residual))
    seen = []

    def stop_after_two(iteration, params, cost, grad):
        seen.append(iteration)
        return iteration >= 2

    ours = nf.least_squares(residual, P0, args=(X, Y), verbose=2)
    jax.effects_barrier()
    table = capsys.readouterr().out
    scipy.optimize.least_squares(
        lambda p: np.asarray(residual(jnp.asarray(p), X, Y)),
        P0,
        verbose=2,
        jac=lambda p: np.asarray(jac(jnp.asarray(p), X, Y)),
    )
    assert table == capsys.readouterr().out
    assert bool(ours.success)

    stopped = nf.least_squares(residual, P0, args=(X, Y), callback=stop_after_two)
    jax.effects_barrier()
    assert int(stopped.status) == -2  # SciPy's code for a stop by the callback
    assert "callback" in stopped.message
    assert seen == [1, 2]


# A regression of issue 9's defect 9: verbose=2 under vmap prints one line, not tables.


@pytest.mark.extended
def test_verbose_2_under_vmap_prints_one_line_not_interleaved_tables(capsys):
    batch = nf.pad_datasets([(LINE_X, 2 * np.exp(-s * LINE_X)) for s in (1.0, 1.5, 2.0)])
    state = nf.init_batch(two_parameter_decay, batch, jnp.ones(2), nf.Solver(verbose=2))
    result = nf.solve_batch(two_parameter_decay, batch, state)
    jax.effects_barrier()
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "verbose=2: 3 fits run as one batch (vmap); the iteration table is "
        "printed for single fits only."
    ]
    np.testing.assert_allclose(result.x[:, 1], [1.0, 1.5, 2.0], rtol=1e-6)
    assert np.all(result.status > 0)
