"""StreamingOptimizer: exact fits pass by pass over chunk sources, the single-pass
mode, sources, resume after a killed process, progress, memory estimates."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from helpers import EXACT_X, EXACT_Y, decay_np, run_on_host_devices

import nlsq_fn as nf
from nlsq_fn._misc import optional_import


def damped(t, a, k, w, c):
    return a * jnp.exp(-k * t) * jnp.cos(w * t) + c


TRUE = np.array([2.0, 0.3, 3.0, 0.5])
P0 = [1.5, 0.2, 2.9, 0.0]
BOUNDS = ([0.0, 0.0, 0.0, -1.0], [10.0, 5.0, 10.0, 1.0])
HUBER = dict(bounds=BOUNDS, method="trf", loss="huber", f_scale=0.1)


def dataset(n, seed=0, outliers=True):
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 10.0, n)
    y = np.asarray(damped(t, *TRUE)) + 0.05 * rng.standard_normal(n)
    if outliers:
        y[::97] += 3.0
    return t, y


def assert_same_fit(streamed, in_memory, rtol=1e-10):
    np.testing.assert_allclose(streamed.x, in_memory.x, rtol=rtol)
    np.testing.assert_allclose(streamed.cost, in_memory.cost, rtol=1e-12)
    np.testing.assert_allclose(streamed.pcov, in_memory.pcov, rtol=1e-7)
    assert streamed.success and in_memory.success


DOGBOX = dict(bounds=BOUNDS, method="dogbox")


# LM and dogbox from the host loop are also `test_stepwise.py`'s; here in CI's extended step.
@pytest.mark.parametrize(
    "options",
    [
        pytest.param(HUBER, id="trf-bounds-huber"),
        pytest.param(dict(method="lm"), id="lm", marks=pytest.mark.extended),
        pytest.param(DOGBOX, id="dogbox", marks=pytest.mark.extended),
    ],
)
def test_fit_equals_in_memory_fit(options):
    # 100,003 points in chunks of 16,384: six full chunks and a padded seventh.
    t, y = dataset(100_003)
    in_memory = nf.CurveFit(damped, t, y, p0=P0, **options).fit()
    optimizer = nf.StreamingOptimizer(damped, P0, chunk_size=16_384, verbose=0, **options)
    streamed = optimizer.fit((t, y))
    assert_same_fit(streamed, in_memory)
    # One pass per evaluation of the residuals.
    assert optimizer.passes == streamed.nfev
    for name in ("chisqr", "redchi", "rmse", "r_squared", "aic", "bic"):
        np.testing.assert_allclose(getattr(streamed, name), getattr(in_memory, name), rtol=1e-9)
    assert streamed.n_points == t.size
    # One result type for both fits; the streamed one keeps no per-point values.
    assert type(streamed) is type(in_memory) is nf.CurveFitResult
    with pytest.raises(AttributeError, match="keeps no per-point values"):
        _ = streamed.best_fit
    with pytest.raises(ValueError, match="give `x`"):
        streamed.eval()
    scale = np.max(np.abs(y))  # (values near 0 of a damped oscillation: absolute too)
    np.testing.assert_allclose(
        streamed.eval(t[:50]), in_memory.eval(t[:50]), rtol=1e-8, atol=1e-8 * scale
    )
    if options["method"] != "lm":
        # And the in-memory fit is SciPy's (independent reference).
        scipy_fit = scipy.optimize.least_squares(
            lambda p: np.asarray(damped(t, *p)) - y,
            P0,
            jac=lambda p: np.asarray(jax.jacfwd(lambda q: damped(t, *q))(jnp.asarray(p))),
            **options,
        )
        np.testing.assert_allclose(streamed.x, scipy_fit.x, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("options", [HUBER, dict(method="lm")], ids=["trf-bounds-huber", "lm"])
def test_fit_of_a_million_points_equals_in_memory_fit(options, tmp_path):
    t, y = dataset(1_000_000, seed=1)
    np.save(tmp_path / "t.npy", t)
    np.save(tmp_path / "y.npy", y)
    source = nf.ArraySource(
        np.load(tmp_path / "t.npy", mmap_mode="r"), np.load(tmp_path / "y.npy", mmap_mode="r")
    )
    in_memory = nf.CurveFit(damped, t, y, p0=P0, **options).fit()
    streamed = nf.StreamingOptimizer(damped, P0, chunk_size=100_000, verbose=0, **options).fit(
        source
    )
    assert_same_fit(streamed, in_memory)


# Small data for the sources: 3,000 points in chunks of 1,024 (the last one padded).
N_SMALL, CHUNK = 3_000, 1_024


@pytest.fixture(scope="module")
def small():
    t, y = dataset(N_SMALL, seed=2)
    sigma = 0.05 * (1.0 + 0.5 * np.sin(t))
    reference = nf.CurveFit(damped, t, y, p0=P0, sigma=sigma, **HUBER).fit()
    return t, y, sigma, reference


def fit_small(source):
    return nf.StreamingOptimizer(damped, P0, chunk_size=CHUNK, verbose=0, **HUBER).fit(source)


def _memmap(tmp_path, t, y, sigma):
    paths = []
    for name, values in (("t", t), ("y", y), ("s", sigma)):
        np.save(tmp_path / f"{name}.npy", values)
        paths.append(np.load(tmp_path / f"{name}.npy", mmap_mode="r"))
    return nf.ArraySource(*paths, piece_size=700)


def _npy_files(tmp_path, t, y, sigma):
    for name, values in (("t", t), ("y", y), ("s", sigma)):
        np.save(tmp_path / f"{name}.npy", values)
    return nf.NpySource(tmp_path / "t.npy", tmp_path / "y.npy", tmp_path / "s.npy", piece_size=700)


def _callable(tmp_path, t, y, sigma):
    def chunks():  # pieces of uneven sizes: re-chunked to CHUNK points
        for start in range(0, t.size, 777):
            part = slice(start, start + 777)
            yield t[part], y[part], sigma[part]

    return chunks


def _sqlite(tmp_path, t, y, sigma):
    connection = sqlite3.connect(tmp_path / "data.db")
    connection.execute("CREATE TABLE m (t REAL, y REAL, s REAL)")
    connection.executemany("INSERT INTO m VALUES (?, ?, ?)", zip(t, y, sigma, strict=True))
    connection.commit()
    return nf.SQLSource(connection, "SELECT t, y, s FROM m ORDER BY t", sigma=True, batch_size=500)


def _sqlite_read_ahead(tmp_path, t, y, sigma):
    _sqlite(tmp_path, t, y, sigma)  # a connection per pass, opened in the reading thread
    return nf.SQLSource(
        lambda: sqlite3.connect(tmp_path / "data.db"),
        "SELECT t, y, s FROM m ORDER BY t",
        sigma=True,
        batch_size=500,
    )


def _hdf5(tmp_path, t, y, sigma):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "data.h5", "w") as file:
        file["t"], file["y"], file["s"] = t, y, sigma
    return nf.HDF5Source(tmp_path / "data.h5", x="t", y="y", sigma="s", piece_size=900)


def _zarr(tmp_path, t, y, sigma):
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(tmp_path / "data.zarr"), mode="w")
    for name, values in (("t", t), ("y", y), ("s", sigma)):
        group.create_array(name, shape=values.shape, chunks=(500,), dtype=values.dtype)
        group[name][:] = values
    return nf.ZarrSource(str(tmp_path / "data.zarr"), x="t", y="y", sigma="s", piece_size=1000)


def _parquet(tmp_path, t, y, sigma):
    pa = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"t": t, "y": y, "s": sigma})
    parquet.write_table(table, tmp_path / "data.parquet", row_group_size=600)
    return nf.ParquetSource(tmp_path / "data.parquet", x="t", y="y", sigma="s")


def _pandas_csv(tmp_path, t, y, sigma):
    pd = pytest.importorskip("pandas")
    pd.DataFrame({"t": t, "y": y, "s": sigma}).to_csv(
        tmp_path / "data.csv", index=False, float_format="%.17g"
    )
    return nf.PandasSource(
        lambda: pd.read_csv(tmp_path / "data.csv", chunksize=800), x="t", y="y", sigma="s"
    )


@pytest.mark.parametrize(
    "make_source",
    [
        _memmap,
        _npy_files,
        _callable,
        _sqlite,
        _sqlite_read_ahead,
        _hdf5,
        _zarr,
        _parquet,
        _pandas_csv,
    ],
    ids=[
        "npy-memmap",
        "npy-files",
        "callable",
        "sqlite",
        "sqlite-read-ahead",
        "hdf5",
        "zarr",
        "parquet",
        "pandas-csv",
    ],
)
def test_each_source_gives_the_in_memory_fit(make_source, small, tmp_path):
    t, y, sigma, reference = small
    streamed = fit_small(make_source(tmp_path, t, y, sigma))
    assert_same_fit(streamed, reference)


def test_lowered_chunk_size_and_two_column_x(small):
    # x of shape (2, m), SciPy's convention for several inputs.
    t, y, _, _ = small
    x = np.stack([t, np.cos(t)])

    def plane(x, a, b, c):
        return a + b * x[0] + c * x[1]

    reference = nf.CurveFit(plane, x, y, p0=[0.0, 0.0, 0.0], method="lm").fit()
    optimizer = nf.StreamingOptimizer(
        plane, [0.0, 0.0, 0.0], chunk_size=CHUNK, method="lm", verbose=0
    )
    np.testing.assert_allclose(optimizer.fit((x, y)).x, reference.x, rtol=1e-10)
    optimizer.chunk_size //= 2  # as the guide does after an out-of-memory error
    np.testing.assert_allclose(optimizer.fit((x, y)).x, reference.x, rtol=1e-10)
    optimizer.chunk_size = None  # from the available memory, at most the data's bucket
    np.testing.assert_allclose(optimizer.fit((x, y)).x, reference.x, rtol=1e-10)


def test_update_is_exact_for_a_linear_model():
    # Recursive Gauss–Newton is exact for models linear in their parameters.
    rng = np.random.default_rng(3)
    x = rng.uniform(-2, 2, 5_000)
    y = 1.0 - 2.0 * x + 0.5 * x**2 + 0.1 * rng.standard_normal(x.size)

    def parabola(x, a, b, c):
        return a + b * x + c * x**2

    optimizer = nf.StreamingOptimizer(
        parabola, [0.0, 0.0, 0.0], chunk_size=CHUNK, method="lm", verbose=0
    )
    for start in range(0, x.size, 1_250):
        update = optimizer.update(x[start : start + 1_250], y[start : start + 1_250])
        seen = slice(0, start + 1_250)
        design = np.stack([np.ones(update.n_points), x[seen], x[seen] ** 2], axis=1)
        exact, *_ = np.linalg.lstsq(design, y[seen], rcond=None)
        np.testing.assert_allclose(update.x, exact, rtol=1e-10)
    result = optimizer.result()
    assert isinstance(result, nf.CurveFitResult)
    reference = nf.CurveFit(parabola, x, y, p0=[0.0, 0.0, 0.0], method="lm").fit()
    np.testing.assert_allclose(result.x, reference.x, rtol=1e-10)
    np.testing.assert_allclose(result.pcov, reference.pcov, rtol=1e-8)
    np.testing.assert_allclose(result.cost, reference.cost, rtol=1e-10)
    assert result.n_points == x.size


def test_update_single_pass_approximates_the_exact_fit():
    t, y = dataset(20_000, seed=4, outliers=False)
    order = np.random.default_rng(5).permutation(t.size)  # a stream in random order
    t, y = t[order], y[order]
    exact = nf.CurveFit(damped, t, y, p0=P0, **HUBER).fit()
    optimizer = nf.StreamingOptimizer(damped, P0, chunk_size=4_096, verbose=0, **HUBER)
    updates = [
        optimizer.update(t[i : i + 4_000], y[i : i + 4_000]) for i in range(0, t.size, 4_000)
    ]
    assert [u.n_chunks for u in updates] == [1, 2, 3, 4, 5]
    assert not any(u.converged for u in updates)  # noisy data keep moving the estimate
    result = optimizer.result()
    # Within a small fraction of the standard errors of the exact fit.
    assert np.all(np.abs(result.x - exact.x) < 0.05 * exact.perr)
    np.testing.assert_allclose(result.perr, exact.perr, rtol=0.02)
    np.testing.assert_allclose(updates[-1].grad, 0.0, atol=1e-6 * np.max(np.abs(exact.jac)))


def test_update_converges_on_noise_free_data():
    t = np.linspace(0, 10, 8_000)
    y = np.asarray(damped(t, *TRUE))
    optimizer = nf.StreamingOptimizer(damped, P0, chunk_size=2_048, method="lm", verbose=0)
    for index in range(4):
        update = optimizer.update(t[index::4], y[index::4])
        if update.converged:
            break
    assert index == 1  # the first chunk fits exactly; the second confirms it
    np.testing.assert_allclose(optimizer.result().x, TRUE, rtol=1e-8)


RESUMABLE = textwrap.dedent(
    """
    import os, signal, sys
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    import nlsq_fn as nf

    def damped(t, a, k, w, c):
        return a * jnp.exp(-k * t) * jnp.cos(w * t) + c

    kill_at = int(sys.argv[2])
    t = np.linspace(0.0, 10.0, 3_000)
    noise = 0.05 * np.random.default_rng(2).standard_normal(3_000)
    y = np.asarray(damped(t, 2.0, 0.3, 3.0, 0.5)) + noise
    passes = 0

    def chunks():
        global passes
        passes += 1
        for start in range(0, t.size, 1_000):
            if passes == kill_at and start > 0:
                os.kill(os.getpid(), signal.SIGKILL)  # killed in the middle of a pass
            yield t[start:start + 1_000], y[start:start + 1_000]

    optimizer = nf.StreamingOptimizer(
        damped, [1.5, 0.2, 2.9, 0.0], chunk_size=1_024, bounds=([0, 0, 0, -1], [10, 5, 10, 1]),
        loss="huber", f_scale=0.1, verbose=0,
    )
    result = optimizer.fit(chunks, checkpoint=sys.argv[1])
    print(passes, result.nfev, *[repr(float(v)) for v in result.x])
    """
)


@pytest.mark.extended
def test_killed_fit_resumes_from_its_checkpoint(tmp_path):
    script = tmp_path / "fit.py"
    script.write_text(RESUMABLE)
    checkpoint = str(tmp_path / "fit.eqx")
    env = dict(os.environ, JAX_PLATFORMS="cpu")

    def run(kill_at):
        return subprocess.run(
            [sys.executable, str(script), checkpoint, str(kill_at)],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )

    # The first call of the source reads one chunk to check the model; the fit's
    # passes follow: killed during the 5th call, after three full evaluations.
    killed = run(kill_at=5)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert os.path.exists(checkpoint)
    resumed = run(kill_at=0)
    assert resumed.returncode == 0, resumed.stderr
    calls, nfev, *x = resumed.stdout.split()
    uninterrupted = nf.StreamingOptimizer(damped, P0, chunk_size=1_024, verbose=0, **HUBER).fit(
        _callable_no_sigma(*dataset_plain())
    )
    np.testing.assert_allclose(np.array(x, float), uninterrupted.x, rtol=1e-10)
    assert int(nfev) == uninterrupted.nfev
    # The resumed process did not redo the evaluations that were checkpointed.
    assert int(calls) == 1 + uninterrupted.nfev - 3


def dataset_plain():
    t = np.linspace(0.0, 10.0, 3_000)
    y = np.asarray(damped(t, *TRUE)) + 0.05 * np.random.default_rng(2).standard_normal(3_000)
    return t, y


def _callable_no_sigma(t, y):
    def chunks():
        for start in range(0, t.size, 1_000):
            yield t[start : start + 1_000], y[start : start + 1_000]

    return chunks


def test_checkpoint_of_another_fit_is_refused(small, tmp_path):
    t, y, _, _ = small
    checkpoint = tmp_path / "fit.eqx"
    nf.StreamingOptimizer(damped, P0, chunk_size=CHUNK, verbose=0, **HUBER).fit(
        (t, y), checkpoint=checkpoint
    )
    other = nf.StreamingOptimizer(
        damped, [1.0, 0.2, 2.9, 0.0], chunk_size=CHUNK, verbose=0, **HUBER
    )
    with pytest.raises(ValueError, match="another `p0`"):
        other.fit((t, y), checkpoint=checkpoint)


def test_progress_bar_and_silence(small, capsys):
    pytest.importorskip("tqdm")
    t, y, _, _ = small
    nf.StreamingOptimizer(damped, P0, chunk_size=CHUNK, verbose=1, **HUBER).fit((t, y))
    assert "pass" in capsys.readouterr().err
    nf.StreamingOptimizer(damped, P0, chunk_size=CHUNK, verbose=0, **HUBER).fit((t, y))
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_estimate_memory_follows_the_guide():
    memory = nf.estimate_memory(n_points=10_000_000, n_params=20)
    # The guide's breakdown: data 2 m, Jacobian m n, intermediates 3 m n (float32).
    assert memory["data_gb"] == pytest.approx(0.08)
    assert memory["jacobian_gb"] == pytest.approx(0.8)
    assert memory["intermediate_gb"] == pytest.approx(2.4)
    assert memory["total_gb"] == pytest.approx(3.28)
    chunked = nf.estimate_memory(10_000_000, 20, dtype="float64", chunk_size=100_000)
    assert chunked["jacobian_gb"] == pytest.approx(100_000 * 20 * 8 / 1e9)
    assert chunked["data_gb"] == pytest.approx(3 * 2 * 100_000 * 8 / 1e9)
    assert chunked["total_gb"] < memory["total_gb"] / 10
    from nlsq_fn._evaluation.memory import automatic_chunk_size

    size = automatic_chunk_size(6)
    assert 1024 <= size <= 1 << 20 and size % 1024 == 0


def test_clear_errors():
    with pytest.raises(ImportError, match=r"nlsq_fn\[hdf5\]"):
        optional_import("surely_not_installed_module", "hdf5")
    optimizer = nf.StreamingOptimizer(damped, P0, chunk_size=CHUNK, verbose=0)
    with pytest.raises(TypeError, match="generator can be read only once"):
        optimizer.fit(iter([]))
    with pytest.raises(ValueError, match="last axis"):
        optimizer.fit((np.zeros(10), np.zeros(11)))
    with pytest.raises(ValueError, match="No data yet"):
        optimizer.result()


# ----------------------------------------------------------------- issue 25: no silent
# wrong answers (a model that is not pointwise, changed data, another fit's checkpoint,
# bad rows anywhere, arguments).


def _line(x, a, b):
    return a * x + b


def _by_max(x, a, b):
    return a * x / x.max() + b


def _by_mean(x, a, b):
    return a * (x - x.mean()) + b


def _by_spread(x, a, b):  # pointwise wherever x is constant: only a later chunk shows it
    return a * x * (1.0 + x.max() - x.min()) + b


def _spread_data():
    x = np.concatenate([np.ones(CHUNK), np.linspace(1.0, 2.0, N_SMALL - CHUNK)])
    return x, 3.0 * x + 1.0


@pytest.mark.parametrize(
    "model, data",
    [
        (_by_max, lambda: (np.linspace(1.0, 10.0, N_SMALL),) * 2),
        (_by_mean, lambda: (np.linspace(1.0, 10.0, N_SMALL),) * 2),
        (_by_spread, _spread_data),
    ],
    ids=["x.max", "x.mean", "later-chunk"],
)
def test_model_that_is_not_pointwise_is_refused(model, data):
    x, y = data()
    y = 3.0 * model(x, 1.0, 0.0) + 1.0
    # SciPy's fit on all the data is right; a chunked evaluation would not be.
    popt, _ = scipy.optimize.curve_fit(model, x, y, p0=[1.0, 0.0])
    np.testing.assert_allclose(popt, [3.0, 1.0])
    optimizer = nf.StreamingOptimizer(model, [1.0, 0.0], chunk_size=CHUNK, verbose=0)
    with pytest.raises(ValueError, match="not pointwise.*CurveFit"):
        optimizer.fit((x, y))
    with pytest.raises(ValueError, match="not pointwise"):
        optimizer.update(x, y)


def test_source_that_loses_rows_between_passes_is_refused():
    t, y = dataset(10_000, seed=6, outliers=False)
    calls = []

    def shrinking():  # 10,000 rows, then 7,000 from the third pass on
        calls.append(1)
        n = 10_000 if len(calls) <= 3 else 7_000  # call 1 reads the first chunk
        for start in range(0, n, 1_500):
            stop = min(start + 1_500, n)
            yield t[start:stop], y[start:stop]

    optimizer = nf.StreamingOptimizer(damped, P0, chunk_size=CHUNK, verbose=0, **HUBER)
    with pytest.raises(ValueError, match=r"Pass 3 .* n_points 7,000 \(first pass: 10,000\)"):
        optimizer.fit(shrinking)


@pytest.mark.parametrize(
    "column, row, first_rows",
    [("y", 7_000, False), ("x", 6_000, False), ("sigma", 5_000, False), ("y", 10, True)],
)
def test_bad_value_anywhere_in_the_source_is_named(column, row, first_rows):
    t, y = dataset(8_000, seed=7, outliers=False)
    sigma = np.full(t.size, 0.05)
    bad = dict(x=t.copy(), y=y.copy(), sigma=sigma.copy())
    bad[column][row] = dict(x=np.inf, y=np.nan, sigma=0.0)[column]
    optimizer = nf.StreamingOptimizer(damped, P0, chunk_size=CHUNK, verbose=0, **HUBER)
    with pytest.raises(ValueError, match=rf"`{column}` is .* at row {row} \(0-based\)"):
        optimizer.fit((bad["x"], bad["y"], bad["sigma"]))
    # The rows a SQL query returns as NULL (NaN), past the first chunk.
    if column == "y" and not first_rows:
        connection = sqlite3.connect(":memory:")
        connection.execute("CREATE TABLE m (t REAL, y REAL)")
        rows = [
            (float(a), None if i == row else float(b))
            for i, (a, b) in enumerate(zip(t, y, strict=True))
        ]
        connection.executemany("INSERT INTO m VALUES (?, ?)", rows)
        source = nf.SQLSource(connection, "SELECT t, y FROM m ORDER BY t", batch_size=900)
        with pytest.raises(ValueError, match=rf"`y` is NaN or inf \(nan\) at row {row} "):
            optimizer.fit(source)


def test_update_with_a_bad_chunk_leaves_the_stream_as_it_was():
    rng = np.random.default_rng(8)
    x = rng.uniform(-2, 2, 4_000)
    y = 1.0 - 2.0 * x + 0.1 * rng.standard_normal(x.size)
    optimizer = nf.StreamingOptimizer(_line, [0.0, 0.0], chunk_size=CHUNK, method="lm", verbose=0)
    optimizer.update(x[:1_000], y[:1_000])
    poisoned = y[1_000:2_000].copy()
    poisoned[500] = np.nan
    with pytest.raises(ValueError, match=r"`y` is NaN or inf \(nan\) at row 1500 "):
        optimizer.update(x[1_000:2_000], poisoned)
    for start in (2_000, 3_000):
        optimizer.update(x[start : start + 1_000], y[start : start + 1_000])
    # Exact for a linear model: the least-squares fit of the good chunks, all of them.
    good = np.r_[0:1_000, 2_000:4_000]
    exact, *_ = np.linalg.lstsq(
        np.stack([x[good], np.ones(good.size)], axis=1), y[good], rcond=None
    )
    result = optimizer.result()
    np.testing.assert_allclose(result.x, exact, rtol=1e-10)
    assert result.n_points == good.size


def _counting(t, y):
    calls = []

    def chunks():
        calls.append(1)
        for start in range(0, t.size, 1_000):
            yield t[start : start + 1_000], y[start : start + 1_000]

    return chunks, calls


@pytest.mark.parametrize("p0", [P0, [1.5, 0.0, 2.9, -1.0]], ids=["inside", "on-bounds"])
def test_fit_stopped_by_max_nfev_continues_from_its_checkpoint(p0, tmp_path):
    t, y = dataset_plain()
    checkpoint = tmp_path / "fit.eqx"
    uninterrupted = nf.StreamingOptimizer(damped, p0, chunk_size=CHUNK, verbose=0, **HUBER).fit(
        (t, y)
    )
    # Stopped after 4 evaluations (here at a rejected trial, whose iteration the
    # resumed fit must not count twice).
    stopped = nf.StreamingOptimizer(
        damped, p0, chunk_size=CHUNK, verbose=0, max_nfev=4, **HUBER
    ).fit((t, y), checkpoint=checkpoint)
    assert stopped.status == 0 and uninterrupted.nfev > 5
    source, calls = _counting(t, y)
    resumed = nf.StreamingOptimizer(damped, p0, chunk_size=CHUNK, verbose=0, **HUBER).fit(
        source, checkpoint=checkpoint
    )
    np.testing.assert_allclose(resumed.x, uninterrupted.x, rtol=1e-10)
    assert resumed.success and resumed.nfev == uninterrupted.nfev
    assert (resumed.nit, resumed.njev) == (uninterrupted.nit, uninterrupted.njev)
    assert len(calls) == 1 + uninterrupted.nfev - 4  # the first chunk, then the rest
    # Its own finished checkpoint: one pass (that the data are the same), same fit.
    source, calls = _counting(t, y)
    again = nf.StreamingOptimizer(damped, p0, chunk_size=CHUNK, verbose=0, **HUBER).fit(
        source, checkpoint=checkpoint
    )
    np.testing.assert_array_equal(again.x, resumed.x)
    assert len(calls) == 2


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(data=lambda t, y: (t, 1.5 * y)), "Pass .* other data"),
        (
            dict(model=lambda t, a, k, w, c: a * jnp.exp(-k * t) * jnp.sin(w * t) + c),
            "another model",
        ),
        (dict(loss="soft_l1"), "another loss"),
        (dict(f_scale=0.2), "another loss"),
        (dict(bounds=([0.0, 0.0, 0.0, -2.0], BOUNDS[1])), "another `bounds`"),
    ],
    ids=["data", "model", "loss", "f_scale", "bounds"],
)
def test_checkpoint_of_another_fit_with_the_same_p0_is_refused(change, match, tmp_path):
    t, y = dataset_plain()
    checkpoint = tmp_path / "fit.eqx"
    nf.StreamingOptimizer(damped, P0, chunk_size=CHUNK, verbose=0, **HUBER).fit(
        (t, y), checkpoint=checkpoint
    )
    change = dict(change)
    data = change.pop("data", lambda t, y: (t, y))(t, y)
    model = change.pop("model", damped)
    options = {**HUBER, **change}
    other = nf.StreamingOptimizer(model, P0, chunk_size=CHUNK, verbose=0, **options)
    with pytest.raises(ValueError, match=match):  # not the saved fit's result
        other.fit(data, checkpoint=checkpoint)


def test_chunk_size_auto_and_integral_counts(monkeypatch):
    from nlsq_fn._evaluation import memory as _memory

    monkeypatch.setattr(_memory, "available_memory_bytes", lambda: 1 << 28)
    t, y = dataset_plain()
    reference = nf.StreamingOptimizer(damped, P0, chunk_size=CHUNK, verbose=0, **HUBER).fit(
        (t, y)
    )  # the in-memory fit (above)
    for chunk_size in ("auto", np.int64(CHUNK), float(CHUNK)):
        streamed = nf.StreamingOptimizer(damped, P0, chunk_size=chunk_size, verbose=0, **HUBER).fit(
            (t, y)
        )
        np.testing.assert_allclose(streamed.x, reference.x, rtol=1e-10)
    with pytest.raises(ValueError, match=r"`chunk_size` must be .*1000\.7"):
        nf.StreamingOptimizer(damped, P0, chunk_size=1000.7)
    with pytest.raises(TypeError, match="`chunk_size` must be a positive integer, got bool"):
        nf.StreamingOptimizer(damped, P0, chunk_size=True)
    optimizer = nf.StreamingOptimizer(damped, P0, chunk_size=CHUNK)
    with pytest.raises(ValueError, match="`chunk_size`"):
        optimizer.chunk_size = CHUNK / 3
    with pytest.raises(ValueError, match="`chunk_size`"):
        nf.StreamingOptimizer(damped, P0, chunk_size="big")
    auto = nf.estimate_memory(10**7, 4, chunk_size="auto")
    assert auto["chunk_size"] == _memory.automatic_chunk_size(4, "float32") < 10**7
    assert auto == nf.estimate_memory(10**7, 4, chunk_size=auto["chunk_size"])
    assert nf.estimate_memory(np.int64(1000), 4.0) == nf.estimate_memory(1000, 4)
    with pytest.raises(ValueError, match=r"`n_points` must be a positive integer, got 10\.7"):
        nf.estimate_memory(10.7, 2)
    with pytest.raises(TypeError, match="`n_points` must be a positive integer, got bool"):
        nf.estimate_memory(True, 2)


def test_streamed_fits_count_against_the_program_bound(monkeypatch):
    # The bound on compiled programs (nlsq_fn._evaluation.compiled) counts them before each fit:
    # without it a loop of streamed fits of fresh models exhausts the memory maps.
    from nlsq_fn._evaluation import compiled as _compiled

    counted = []
    programs_kept = _compiled.programs_kept
    monkeypatch.setattr(_compiled, "programs_kept", lambda: counted.append(1) or programs_kept())
    x = np.linspace(0.0, 1.0, 2_000)
    y = 2.0 * x + 1.0
    optimizer = nf.StreamingOptimizer(
        lambda t, a, b: a * t + b, [1.0, 0.0], chunk_size=512, verbose=0
    )
    np.testing.assert_allclose(optimizer.fit((x, y)).x, [2.0, 1.0])
    assert len(counted) == 1
    optimizer.update(x[:1_000], y[:1_000])  # a new stream: counted once
    optimizer.update(x[1_000:], y[1_000:])
    assert len(counted) == 2


SHARDED = textwrap.dedent(
    """
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    import nlsq_fn as nf
    from helpers import assert_same_optimum

    def damped(t, a, k, w, c):
        return a * jnp.exp(-k * t) * jnp.cos(w * t) + c

    assert len(jax.devices()) == 4
    t = np.linspace(0.0, 10.0, 10_001)
    y = np.asarray(damped(t, 2.0, 0.3, 3.0, 0.5))
    y = y + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    y[::97] += 3.0
    options = dict(bounds=([0, 0, 0, -1], [10, 5, 10, 1]), loss="huber", f_scale=0.1,
                   verbose=0)
    for factorization in ("qr", "normal"):
        fits = [
            nf.StreamingOptimizer(damped, [1.5, 0.2, 2.9, 0.0], chunk_size=2_048,
                                  factorization=factorization, devices=devices,
                                  **options).fit((t, y))
            for devices in (None, jax.devices())
        ]
        # Four devices sum the chunks in another order: the same optimum, not the same
        # bits (a termination test at its threshold may flip on some CPUs).
        jac = jax.jacfwd(lambda p: damped(t, *p) - y)(jnp.asarray(fits[0].x))
        assert_same_optimum(fits[1].x, fits[0].x, fits[1].cost, fits[0].cost, jac=jac)
        np.testing.assert_allclose(fits[1].pcov, fits[0].pcov, rtol=1e-7)
        assert fits[0].success and fits[1].success

    # A batch of 4,000 small fits with its batch axis split over the four devices.
    import equinox as eqx

    def decay(x, p):
        return p[0] * jnp.exp(-p[1] * x) + p[2]

    rng = np.random.default_rng(1)
    x = np.tile(np.linspace(0.0, 4.0, 20), (4_000, 1))
    true = np.stack([rng.uniform(1, 3, 4_000), rng.uniform(0.5, 2, 4_000),
                     rng.uniform(-1, 1, 4_000)], axis=1)
    y = true[:, :1] * np.exp(-true[:, 1:2] * x) + true[:, 2:]
    data = nf.Data(x, y + 0.01 * rng.standard_normal(y.shape))
    state = nf.init_batch(decay, data, jnp.array([1.0, 1.0, 0.0]))
    fit = eqx.filter_jit(nf.solve_batch)
    one = fit(decay, data, state)
    four = fit(decay, nf.shard_batch(data, jax.devices()), state)
    assert len(four.x.sharding.device_set) == 4
    assert_same_optimum(four.x, one.x, four.cost, one.cost, jac=one.jac)
    assert np.all(np.asarray(one.success)) and np.all(np.asarray(four.success))
    print("ok")
    """
)


@pytest.mark.slow  # a subprocess with 4 host devices: ~20 s
def test_four_devices_give_the_single_device_fits(tmp_path):
    run_on_host_devices(SHARDED, tmp_path)


# A NumPy model cannot be streamed: a clear error, not JAX's tracer error.
@pytest.mark.filterwarnings("ignore:The model could not be traced by JAX")
def test_streaming_a_numpy_model_gets_a_clear_error():
    optimizer = nf.StreamingOptimizer(decay_np, p0=[1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="StreamingOptimizer needs a model written with"):
        optimizer.fit((EXACT_X, EXACT_Y))
