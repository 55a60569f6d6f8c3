"""The defaults that choose: `factorization="auto"` and `chunk_size="auto"`.

`auto` factorization keeps the root of ``JᵀJ`` only where the column-scaled ``JᵀJ`` is
well conditioned and takes the QR factor otherwise; `auto` chunking chunks only large
data whose model is pointwise. References: the QR factor (``RᵀR = JᵀJ``), NumPy's
condition number, the one-shot fit with ``factorization="qr"`` and SciPy's `curve_fit`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from helpers import exp_decay

import nlsq_fn as nf
from nlsq_fn._evaluation.chunking import auto_chunk_size, chunks_agree
from nlsq_fn._evaluation.linearize import chunked_linearize, normal_root_if_safe
from nlsq_fn._evaluation.memory import estimate_memory

M_LARGE = 40_000  # over four chunks of 8,192 points for three parameters


def _centred_decay(x, p):  # not pointwise: every prediction depends on all of x
    return p[0] * jnp.exp(-p[1] * (x - jnp.mean(x))) + p[2]


def _data(m, seed=1):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 5.0, m)
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + 0.05 * rng.standard_normal(m)
    return x, y


def _indexed(data):
    """`data` whose x holds each point's index, so a chunk knows its rows of J."""
    return nf.Data(jnp.arange(data.y.shape[0]), data.y)


def _rows_like(jac, chunk):
    rows = jnp.asarray(jac)[chunk.x]
    return jnp.where(chunk.mask[:, None], rows, 0.0)


def _scaled_condition(jac):
    norms = np.linalg.norm(jac, axis=0)
    return np.linalg.cond(jac / norms) ** 2


def test_normal_root_is_kept_only_where_well_conditioned():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((300, 4))
    # Columns of wildly different scale but independent: the scaled JᵀJ is benign.
    well = base * np.array([1e-6, 1.0, 1e5, 3.0])
    # Two columns equal to 1e-6: cond(J_scaled)² ~ 1e12 > 1 / sqrt(eps).
    ill = base.copy()
    ill[:, 3] = ill[:, 2] + 1e-6 * rng.standard_normal(300)
    for jac, expect_safe in ((well, True), (ill, False)):
        root, safe = normal_root_if_safe(jnp.asarray(jac.T @ jac))
        assert bool(safe) == expect_safe
        assert (_scaled_condition(jac) <= 1 / np.sqrt(np.finfo(float).eps)) == expect_safe
        # Chunked, "auto" keeps the root where safe and takes the TSQR factor otherwise.
        data = nf.Data(jnp.zeros(300), jnp.zeros(300))
        chunked = {
            method: chunked_linearize(
                lambda chunk, jac=jac: (chunk.y * 0.0, _rows_like(jac, chunk)),
                _indexed(data),
                4,
                64,
                nf.Linear(),
                method,
            ).factor
            for method in ("auto", "qr")
        }
        auto, qr = np.asarray(chunked["auto"]), np.asarray(chunked["qr"])
        scale = np.linalg.norm(jac, axis=0)
        # Either way a factor of JᵀJ; where unsafe it is the TSQR factor itself.
        np.testing.assert_allclose(
            (auto.T @ auto) / np.outer(scale, scale),
            (jac.T @ jac) / np.outer(scale, scale),
            atol=1e-12,
        )
        # The same computation up to rounding (summed by chunks vs at once): compare
        # column by column, relative to each column's norm.
        expected = np.asarray(root) if expect_safe else qr
        np.testing.assert_allclose(auto / scale, expected / scale, atol=1e-9)
        assert np.allclose(auto, np.triu(auto)) == (not expect_safe)  # TSQR: triangular
    # The root of the well-conditioned case keeps its small column exactly (scaled root).
    root, _ = normal_root_if_safe(jnp.asarray(well.T @ well))
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(root), axis=0), np.linalg.norm(well, axis=0), rtol=1e-12
    )


def test_chunk_size_from_problem_size():
    assert auto_chunk_size(M_LARGE, 3) == 8192
    assert auto_chunk_size(4 * 8192 - 1, 3) is None  # under four chunks: one shot
    assert auto_chunk_size(10**6, 64) == 512 * 2  # never below 1,024 points
    assert auto_chunk_size(10**6, 1) == 16384


def test_chunk_size_on_accelerators_only_where_memory_requires(monkeypatch):
    import nlsq_fn._evaluation.chunking as chunking

    monkeypatch.setattr(chunking.jax, "default_backend", lambda: "gpu")
    free = 8 << 30
    monkeypatch.setattr(chunking, "available_memory_bytes", lambda: free)
    # 1e7 points of a 3-parameter float64 fit need well under half of 8 GiB: one shot.
    assert estimate_memory(10**7, 3, "float64")["total_gb"] * 1e9 < free / 2
    assert auto_chunk_size(10**7, 3) is None
    # 1e9 points do not fit: chunks of the memory-based size.
    assert estimate_memory(10**9, 3, "float64")["total_gb"] * 1e9 > free / 2
    chunk = auto_chunk_size(10**9, 3)
    assert chunk is not None and chunk >= 8192
    assert estimate_memory(chunk, 3, "float64")["total_gb"] * 1e9 < free / 2


def _agrees(model, data, p, chunk):
    try:
        return bool(jax.jit(chunks_agree, static_argnums=(0, 3))(model, data, p, chunk))
    except (ValueError, TypeError):  # a model that cannot run on a chunk
        return False


def test_chunking_is_proved_on_all_the_data():
    """The check compares the model on all the points with the model on the chunks the
    fit would use, so a model that looks pointwise on the first rows is caught."""
    m, chunk = 1000, 64  # 16 chunks, the last one shifted back
    x = jnp.linspace(0.0, 5.0, m)
    data = nf.Data(x, jnp.zeros(m))
    p = jnp.array([1.0, 1.0, 0.0])
    assert _agrees(exp_decay, data, p, chunk)
    assert not _agrees(_centred_decay, data, p, chunk)
    cumulative = lambda x, p: p[0] * jnp.cumsum(x) + p[1]  # noqa: E731
    assert not _agrees(cumulative, data, p, chunk)
    closed_over = jnp.linspace(0, 1, m)  # one value per point, not sliced with x
    assert not _agrees(lambda x, p: p[0] * x + closed_over, data, p, chunk)
    # Pointwise on the first rows, not beyond: x normalised by its maximum, with the
    # first 100 rows holding the largest value (any probe of the first rows agrees).
    spiky = jnp.concatenate([jnp.full(100, 10.0), jnp.linspace(0.0, 5.0, m - 100)])
    normalised = lambda x, p: p[0] * x / jnp.max(x) + p[1]  # noqa: E731
    assert not _agrees(normalised, nf.Data(spiky, jnp.zeros(m)), p, chunk)
    # Values equal at the start but not the derivatives: the slopes are compared too.
    hidden = lambda x, p: p[0] * x + (p[1] - 1.0) * (x - jnp.mean(x))  # noqa: E731
    assert not _agrees(hidden, data, p, chunk)
    # Masked points (a user's mask) count for nothing, on the whole and in the chunks.
    masked = nf.Data(x, jnp.zeros(m), mask=jnp.arange(m) % 7 != 3)
    assert _agrees(exp_decay, masked, p, chunk)


def test_auto_chunking_never_changes_curve_fits_answer():
    """80,000 daily samples, time centred by its mean (issue 25): the first rows look
    pointwise, the chunks are not. The default fit must be SciPy's."""
    rng = np.random.default_rng(0)
    t = np.arange(80_000, dtype=float)
    y = 0.01 * (t - t.mean()) + 3 + rng.normal(0, 1, t.size)

    def centred(t, a, b):
        return a * (t - t.mean()) + b

    expected, _ = scipy.optimize.curve_fit(centred, t, y, p0=[0.0, 0.0])
    popt, _ = nf.curve_fit(centred, t, y, p0=[0.0, 0.0])
    np.testing.assert_allclose(popt, expected, rtol=1e-6)  # slope 0.01228 before
    state = nf.init(lambda t, p: centred(t, *p), nf.Data(t, y), jnp.zeros(2))
    assert state.chunk_size is None


def _centred_when_large(x, p):  # pointwise on small inputs (the made-up probe), not here
    return p[0] * jnp.where(jnp.max(x) > 100, x - jnp.mean(x), x) + p[1]


@pytest.mark.extended
def test_chunks_under_jit_are_checked_inside_the_fit():
    """Traced data cannot be checked before the fit: a model that passes the probe on
    made-up rows but not on the real data ends with status CHUNKS_DIFFER (never a wrong
    answer); eagerly, the same data are fitted in one shot."""
    t = np.arange(80_000, dtype=float)
    y = 0.01 * (t - t.mean()) + 3
    p0 = jnp.zeros(2)

    @jax.jit
    def fit(t, y):
        data = nf.Data(t, y)
        state = nf.init(_centred_when_large, data, p0)
        return nf.solve(_centred_when_large, data, state), state.chunk_size

    solution, chunk_size = fit(t, y)
    assert chunk_size == 16384
    assert int(solution.status) == -4 and not bool(solution.success)
    assert "chunk_size=None" in solution.message and "chunk_size=None" in nf.STATUS_MESSAGES[-4]
    data = nf.Data(t, y)
    state = nf.init(_centred_when_large, data, p0)
    assert state.chunk_size is None
    exact = nf.solve(_centred_when_large, data, state)
    np.testing.assert_allclose(exact.x, [0.01, 3.0], rtol=1e-9)

    # A pointwise model under jit chunks, checks and fits as in one shot.
    @jax.jit
    def fit_decay(x, y):
        data = nf.Data(x, y)
        return nf.solve(exp_decay, data, nf.init(exp_decay, data, jnp.array([1.0, 1.0, 0.0])))

    assert bool(fit_decay(*_data(M_LARGE)).success)


@pytest.mark.parametrize("under_jit", [False, True], ids=["eager", "jit"])
def test_auto_chunks_pointwise_models_only(under_jit):
    x, y = _data(M_LARGE)
    p0 = jnp.array([1.0, 1.0, 0.0])
    chosen = {}

    def chunk_of(model, x, y):
        state = nf.init(model, nf.Data(x, y), p0)
        chosen[model] = state.chunk_size
        return state.params

    run = jax.jit(chunk_of, static_argnums=0) if under_jit else chunk_of
    run(exp_decay, jnp.asarray(x), jnp.asarray(y))
    run(_centred_decay, jnp.asarray(x), jnp.asarray(y))
    assert chosen == {exp_decay: 8192, _centred_decay: None}
    # Small data: one shot, whatever the model.
    assert nf.init(exp_decay, nf.Data(x[:1000], y[:1000]), p0).chunk_size is None


@pytest.mark.extended
@pytest.mark.parametrize("strategy", [nf.TRF(), nf.LevenbergMarquardt()], ids=["trf", "lm"])
def test_defaults_give_the_qr_fit(strategy):
    """Large data with every default (chunked, JᵀJ) against the one-shot QR fit."""
    x, y = _data(M_LARGE)
    data = nf.Data(jnp.asarray(x), jnp.asarray(y))
    p0 = jnp.array([1.0, 1.0, 0.0])
    fit = jax.jit(nf.solve, static_argnums=0)
    auto = fit(exp_decay, data, nf.init(exp_decay, data, p0, nf.Solver(strategy=strategy)))
    reference_solver = nf.Solver(strategy=strategy, factorization="qr", chunk_size=None)
    reference = fit(exp_decay, data, nf.init(exp_decay, data, p0, reference_solver))
    assert auto.jac is None and reference.jac is not None  # chunked vs one shot
    assert bool(auto.success) and bool(reference.success)
    np.testing.assert_allclose(auto.cost, reference.cost, rtol=1e-12)
    # Parameters to a tiny fraction of their standard errors.
    jac = np.asarray(reference.jac)
    stderr = np.sqrt(np.diag(np.linalg.inv(jac.T @ jac)) * 2 * float(reference.cost) / M_LARGE)
    assert np.all(np.abs(np.asarray(auto.x) - np.asarray(reference.x)) < 1e-6 * stderr)


def test_curve_fit_defaults_on_large_data_match_scipy():
    """curve_fit chunks by default on large data, yet returns SciPy's popt, pcov and
    the Jacobian at the solution."""
    x, y = _data(M_LARGE)

    def f(x, a, b, c):
        return a * jnp.exp(-b * x) + c

    def jac(x, a, b, c):
        e = np.exp(-b * x)
        return np.stack([e, -a * x * e, np.ones_like(x)], axis=1)

    result = nf.curve_fit(f, x, y, p0=[1.0, 1.0, 0.0], full_output=True)
    popt, pcov = result[0], result[1]
    # SciPy's TRF: its pcov comes from the SVD of J, as nlsq_fn's (SciPy's "lm" takes
    # MINPACK's R factor and differs from the exact pinv(JᵀJ) by ~4e-6 here).
    expected, expected_cov = scipy.optimize.curve_fit(
        lambda x, a, b, c: a * np.exp(-b * x) + c,
        x,
        y,
        p0=[1.0, 1.0, 0.0],
        jac=jac,
        method="trf",
    )
    np.testing.assert_allclose(popt, expected, rtol=1e-6)
    np.testing.assert_allclose(pcov, expected_cov, rtol=1e-6)
    fitter = nf.CurveFit(f, p0=[1.0, 1.0, 0.0])
    fitted = fitter.fit(x, y)
    np.testing.assert_allclose(fitted.jac, jac(x, *expected), rtol=1e-6, atol=1e-9)


def test_enable_compilation_cache_sets_jax_cache(tmp_path, monkeypatch):
    keys = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    before = {key: getattr(jax.config, key) for key in keys}
    try:
        folder = nf.enable_compilation_cache(tmp_path / "cache")
        assert folder == tmp_path / "cache" and folder.is_dir()
        assert jax.config.jax_compilation_cache_dir == str(folder)
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
        monkeypatch.setenv("NLSQ_FN_COMPILATION_CACHE", str(tmp_path / "from_env"))
        assert nf.enable_compilation_cache() == tmp_path / "from_env"
    finally:
        for key, value in before.items():
            jax.config.update(key, value)
