"""The one evaluation engine's pieces, against NumPy: the fold of chunks into the
``n``-sized summary and its finish (every chunked evaluation: in-memory chunks, a
stream's passes, devices, processes), the chunk-size rule and the points-axis rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nlsq_fn._evaluation import memory as _memory
from nlsq_fn._evaluation.chunking import auto_chunk_size, bucket_size
from nlsq_fn._evaluation.linearize import Running, combine, finish, fold_rows
from nlsq_fn._problem.data import points_axis
from nlsq_fn._problem.loss import Linear

CHUNK = 7


def _problem(m=50, n=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, n)), rng.standard_normal(m)


def _fold(jac, f, method, rows=None):
    """`jac`'s rows (those of `rows`) folded chunk by chunk."""
    rows = np.arange(len(f)) if rows is None else rows
    running = Running.zeros(jac.shape[1], jnp.float64)
    for start in range(0, len(rows), CHUNK):
        take = rows[start : start + CHUNK]
        running = fold_rows(running, jnp.asarray(f[take]), jnp.asarray(jac[take]), Linear(), method)
    return running


@pytest.mark.parametrize("method", ["qr", "normal", "auto"])
def test_fold_and_finish_give_the_summary_of_all_rows(method):
    jac, f = _problem()
    running = _fold(jac, f, method)
    lin = finish(running, method, lambda: _fold(jac, f, "qr"))
    np.testing.assert_allclose(lin.cost, 0.5 * f @ f, rtol=1e-13)
    np.testing.assert_allclose(lin.grad, jac.T @ f, rtol=1e-12, atol=1e-12)
    factor = np.asarray(lin.factor)
    np.testing.assert_allclose(factor.T @ factor, jac.T @ jac, rtol=1e-10, atol=1e-10)


def test_finish_auto_takes_the_tsqr_pass_only_where_the_root_is_unsafe():
    jac, f = _problem()
    qr_pass = lambda: _fold(jac, f, "qr")  # noqa: E731
    well = finish(_fold(jac, f, "auto"), "auto", qr_pass)
    np.testing.assert_array_equal(well.factor, finish(_fold(jac, f, "normal"), "normal").factor)
    # Monomials up to x^9 on [0, 1]: cond(J) ~ 1e7, far beyond the safe root's 8e3.
    x = np.linspace(0, 1, 60)
    ill = x[:, None] ** np.arange(10)
    f_ill = np.cos(3 * x)
    assert np.linalg.cond(ill) > 1e6
    auto = finish(_fold(ill, f_ill, "auto"), "auto", lambda: _fold(ill, f_ill, "qr"))
    np.testing.assert_array_equal(auto.factor, _fold(ill, f_ill, "qr").square)
    with pytest.raises(ValueError, match="second pass"):
        finish(_fold(jac, f, "auto"), "auto")


@pytest.mark.parametrize("method", ["qr", "normal", "auto"])
def test_combined_shares_equal_one_fold_of_all(method):
    """Two devices' (or processes') summaries, stacked and combined, with the sums of
    a pass beside them: the summary of all rows, the sums added."""
    jac, f = _problem(m=56)
    shares = [_fold(jac, f, method, np.arange(i, 56, 2)) for i in (0, 1)]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *shares)
    extra = jnp.asarray([2.0, 3.0])  # as a pass's sums beside the summary
    combined, total = combine((stacked, extra), method)
    assert float(total) == 5.0
    lin = finish(combined, method, lambda: _fold(jac, f, "qr"))
    np.testing.assert_allclose(lin.cost, 0.5 * f @ f, rtol=1e-13)
    np.testing.assert_allclose(lin.grad, jac.T @ f, rtol=1e-12, atol=1e-12)
    factor = np.asarray(lin.factor)
    np.testing.assert_allclose(factor.T @ factor, jac.T @ jac, rtol=1e-10, atol=1e-10)


def test_streamed_chunk_size_is_the_memory_rule_capped_by_the_data(monkeypatch):
    monkeypatch.setattr(_memory, "available_memory_bytes", lambda: 1 << 30)
    memory_rule = _memory.automatic_chunk_size(4, "float64")
    # A tenth of 1 GiB over (2 + 4 * 4) * 8 bytes a point plus the chunks read ahead.
    assert memory_rule == int(0.1 * (1 << 30) / ((2 + 4 * 4) * 8 + 2 * 2 * 8)) // 1024 * 1024
    assert auto_chunk_size(None, 4, "float64", streamed=True) == memory_rule
    assert auto_chunk_size(10**8, 4, "float64", streamed=True) == memory_rule
    assert auto_chunk_size(1000, 4, "float64", streamed=True) == bucket_size(1000) == 1024
    with pytest.raises(ValueError, match="number of points"):
        auto_chunk_size(None, 4)


def test_points_axis_last_then_first():
    m = 5
    assert points_axis(np.zeros((3, m)), m) == 1  # SciPy's (k, M)
    assert points_axis(np.zeros((m, 3)), m) == 0  # a row per point
    assert points_axis(np.zeros(m), m) == 0
    assert points_axis(np.zeros((m, m)), m) == 1  # both: SciPy's convention first
    assert points_axis(np.zeros((3, 4)), m) is None
    assert points_axis(np.float64(1.0), m) is None
