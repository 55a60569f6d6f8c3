"""Fixed and tied parameters (`curve_fit(..., fixed=, ties=)`, `CurveFit`) against
SciPy's fit of the model reduced by hand and the delta method; global fits
(`global_fit`) against `scipy.optimize.least_squares` on the stacked problem."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from helpers import decay, decay_np, peak, peak_np

import nlsq_fn as nf


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 4.0, 60)
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + 0.02 * rng.normal(size=x.size)
    sigma = 0.02 * (1.0 + 0.5 * rng.random(x.size))
    return x, y, sigma


# Both fits converged well below the tolerances compared (SciPy's use finite differences).
TIGHT = dict(ftol=1e-12, xtol=1e-12, gtol=1e-12)


def assert_close(actual, expected, rtol=1e-6, atol=1e-12):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


# --- fixed and tied parameters ------------------------------------------------------


@pytest.mark.parametrize("method", ["lm", "trf"])
def test_fixed_equals_scipy_on_the_reduced_model(data, method):
    x, y, sigma = data
    result = nf.curve_fit(
        decay,
        x,
        y,
        p0=[1.0, 1.0, 0.1],
        sigma=sigma,
        method=method,
        fixed={"b": 1.25},
        **TIGHT,
    )
    popt, pcov = scipy.optimize.curve_fit(
        lambda x, a, c: decay_np(x, a, 1.25, c),
        x,
        y,
        p0=[1.0, 0.1],
        sigma=sigma,
        method=method,
        **TIGHT,
    )
    assert_close(result.popt[[0, 2]], popt)
    assert result.popt[1] == 1.25
    assert_close(result.pcov[np.ix_([0, 2], [0, 2])], pcov)
    assert np.all(result.pcov[1] == 0) and np.all(result.pcov[:, 1] == 0)
    assert result.fixed == ("b",) and result.n_params == 2 and result.dof == x.size - 2
    assert "(fixed)" in result.summary()


def test_fixed_with_bounds_for_all_parameters(data):
    x, y, _ = data
    lower, upper = [0.0, 0.0, 0.6], [10.0, 5.0, 2.0]  # c is held at its lower bound
    result = nf.curve_fit(decay, x, y, p0=[1.0, 1.0, 1.0], bounds=(lower, upper), fixed={"a": 2.4})
    popt, pcov = scipy.optimize.curve_fit(
        lambda x, b, c: decay_np(x, 2.4, b, c),
        x,
        y,
        p0=[1.0, 1.0],
        bounds=([0.0, 0.6], [5.0, 2.0]),
    )
    assert_close(result.popt[1:], popt, rtol=1e-5)
    assert_close(result.pcov[1:, 1:], pcov, rtol=1e-4)
    assert result.lower[0] == result.upper[0] == 2.4


def test_tie_equals_scipy_and_the_delta_method(data):
    x, y, sigma = data
    # c = 0.2 a²: var(c) = (0.4 a)² var(a), cov(a, c) = 0.4 a var(a).
    result = nf.curve_fit(
        decay,
        x,
        y,
        p0={"a": 1.0, "b": 1.0, "c": 0.0},
        sigma=sigma,
        absolute_sigma=True,
        ties={"c": lambda p: 0.2 * p["a"] ** 2},
        **TIGHT,
    )
    popt, pcov = scipy.optimize.curve_fit(
        lambda x, a, b: decay_np(x, a, b, 0.2 * a**2),
        x,
        y,
        p0=[1.0, 1.0],
        sigma=sigma,
        absolute_sigma=True,
        **TIGHT,
    )
    a = popt[0]
    assert_close(result.popt, [a, popt[1], 0.2 * a**2])
    assert_close(result.pcov[:2, :2], pcov)
    assert_close(result.pcov[2, 2], (0.4 * a) ** 2 * pcov[0, 0])
    assert_close(result.pcov[0, 2], 0.4 * a * pcov[0, 0])
    assert_close(result.pcov[1, 2], 0.4 * a * pcov[0, 1])
    assert result.tied == ("c",) and "(tied)" in result.summary()


def test_tie_reading_a_fixed_parameter(data):
    x, y, _ = data
    result = nf.curve_fit(
        decay,
        x,
        y,
        p0=[1.0, 1.0, 0.0],
        fixed={"b": 1.3},
        ties={"c": lambda p: p["a"] / (1.0 + p["b"])},
        **TIGHT,
    )
    popt, pcov = scipy.optimize.curve_fit(
        lambda x, a: decay_np(x, a, 1.3, a / 2.3), x, y, p0=[1.0], **TIGHT
    )
    assert_close(result.popt, [popt[0], 1.3, popt[0] / 2.3])
    assert_close(result.perr, np.sqrt([pcov[0, 0], 0.0, pcov[0, 0] / 2.3**2]))


def test_named_model_and_p0_for_free_parameters_only(data):
    x, y, _ = data
    model = nf.models.ExponentialDecay()  # amplitude * exp(-x / decay) + offset
    result = nf.curve_fit(model, x, y, fixed={"offset": 0.5})  # p0 from model.guess
    popt, pcov = scipy.optimize.curve_fit(
        lambda x, amplitude, decay: amplitude * np.exp(-x / decay) + 0.5,
        x,
        y,
        p0=[2.0, 1.0],
    )
    assert result.names == ("amplitude", "decay", "offset")
    assert result.params["offset"] == 0.5
    assert_close(result.popt[:2], popt, rtol=1e-5)
    assert_close(result.pcov[:2, :2], pcov, rtol=1e-4)
    again = nf.curve_fit(model, x, y, p0=[2.0, 1.0], fixed={"offset": 0.5})  # free only
    assert_close(again.popt, result.popt, rtol=1e-6)


def test_curve_fit_class_refits_with_new_fixed_data(data):
    x, y, _ = data
    fitter = nf.CurveFit(decay, x, y, p0=[1.0, 1.0, 0.1], fixed={"c": 0.5})
    first = fitter.fit()
    second = fitter.fit(x, 2.0 * y - 0.5)  # a -> 2a, c stays 0.5
    popt, _ = scipy.optimize.curve_fit(
        lambda x, a, b: decay_np(x, a, b, 0.5), x, 2.0 * y - 0.5, p0=[1.0, 1.0]
    )
    assert_close(second.popt[:2], popt)
    assert first.popt[2] == second.popt[2] == 0.5


@pytest.mark.slow
def test_fixed_under_jit_gives_the_host_result(data):
    x, y, _ = data
    host = nf.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.1], fixed={"b": 1.25})

    @jax.jit
    def fit(y):
        return nf.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.1], fixed={"b": 1.25})

    popt, pcov = fit(jnp.asarray(y))
    assert_close(popt, host.popt)
    assert_close(pcov, host.pcov, rtol=1e-5)


@pytest.mark.slow
def test_gradients_through_fixed_and_tied_fits_equal_finite_differences(data):
    x, y, _ = data
    ties = {"c": lambda p: 0.2 * p["a"]}

    def tied_c(y):
        return nf.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.1], ties=ties, **TIGHT)[0][2]

    def a_of_fixed_b(b):
        return nf.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.1], fixed={"b": b}, **TIGHT)[0][0]

    step = 1e-6
    bump = np.zeros_like(y)
    bump[3] = step
    by_y = (tied_c(y + bump) - tied_c(y - bump)) / (2 * step)
    assert_close(jax.grad(tied_c)(jnp.asarray(y))[3], by_y, rtol=1e-5)
    by_b = (a_of_fixed_b(1.3 + step) - a_of_fixed_b(1.3 - step)) / (2 * step)
    assert_close(jax.grad(a_of_fixed_b)(1.3), by_b, rtol=1e-5)


@pytest.mark.parametrize(
    "options, words",
    [
        (dict(fixed={"d": 1.0}), "'d'"),
        (dict(ties={"q": lambda p: p["a"]}), "'q'"),
        (dict(fixed={"b": 1.0}, ties={"b": lambda p: p["a"]}), "'b' is both fixed and tied"),
        (dict(fixed={"b": 9.0}, bounds=([0, 0, 0], [5, 5, 5])), "'b' is outside its bounds"),
        (dict(ties={"c": lambda p: p["b"], "b": lambda p: p["a"]}), "reads 'b'"),
        (dict(ties={"c": lambda p: p["a"]}, bounds=([0, 0, 0], [5, 5, 5])), "'c' is tied"),
        (dict(fixed={"a": 1.0, "b": 1.0, "c": 1.0}), "nothing is left to fit"),
        (dict(fixed={"a": [1.0, 2.0]}), "'a' must be one number"),
        (dict(p0=[1.0] * 4, fixed={"a": 1.0}), "`p0` has 4 values"),
    ],
)
def test_bad_structure_is_named(data, options, words):
    x, y, _ = data
    options = dict(p0=[1.0, 1.0, 1.0]) | options
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        nf.curve_fit(decay, x, y, **options)


# --- global fits ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def spectra():
    """Six peaks of one width, 20 to 45 points each, with uncertainties."""
    rng = np.random.default_rng(1)
    datasets = []
    for i in range(6):
        x = np.linspace(-3.0, 3.0, 20 + 5 * i)
        sigma = 0.02 * (1.0 + rng.random(x.size))
        y = np.asarray(peak(x, 1.0 + 0.2 * i, 0.1 * i - 0.3, 0.8, 0.05 * i))
        datasets.append((x, y + sigma * rng.normal(size=x.size), sigma))
    return datasets


def stacked_scipy(datasets, theta0, k, bounds=(-np.inf, np.inf), loss="linear"):
    """`scipy.optimize.least_squares` on the stacked problem θ = [width, (amp, center,
    offset) per dataset], and SciPy's covariance (pinv(JᵀJ) · 2 cost / (m - n))."""

    def residual(theta):
        local = theta[1:].reshape(k, 3)
        return np.concatenate(
            [
                (peak_np(x, local[i, 0], local[i, 1], theta[0], local[i, 2]) - y) / s
                for i, (x, y, s) in enumerate(datasets)
            ]
        )

    def jacobian(theta):  # analytic, block-arrow: column 0 the shared width
        local = theta[1:].reshape(k, 3)
        blocks = []
        for i, (x, _, s) in enumerate(datasets):
            amp, center, offset = local[i]
            u = (x - center) / theta[0]
            e = np.exp(-0.5 * u**2)
            block = np.zeros((x.size, theta.size))
            block[:, 0] = amp * e * u**2 / theta[0]
            block[:, 1 + 3 * i : 4 + 3 * i] = np.stack(
                [e, amp * e * u / theta[0], np.ones_like(x)], axis=1
            )
            blocks.append(block / s[:, None])
        return np.concatenate(blocks)

    result = scipy.optimize.least_squares(
        residual,
        theta0,
        jac=jacobian,
        bounds=bounds,
        loss=loss,
        x_scale=1.0,
        method="trf",
        **TIGHT,
    )
    m, n = result.fun.size, result.x.size
    pcov = np.linalg.inv(result.jac.T @ result.jac) * 2 * result.cost / (m - n)
    return result, pcov


@pytest.mark.parametrize("engine", ["block", "dense"])
def test_global_fit_equals_scipy_on_the_stacked_problem(spectra, engine):
    p0 = {"amp": 1.0, "center": 0.0, "width": 1.0, "offset": 0.0}
    result = nf.global_fit(peak, spectra, p0, shared=("width",), engine=engine, **TIGHT)
    k = len(spectra)
    expected, pcov = stacked_scipy(spectra, np.r_[1.0, np.tile([1.0, 0.0, 0.0], k)], k)
    assert result.success and result.shared == ("width",)
    assert_close(result.x, expected.x)
    assert_close(result.cost, expected.cost)
    assert_close(result.pcov, pcov, rtol=1e-5)
    # By name: shared a float, local an array over the datasets.
    assert isinstance(result.params["width"], float)
    assert result.params["amp"].shape == (k,)
    local = expected.x[1:].reshape(k, 3)
    assert_close(result.params["center"], local[:, 1])
    assert_close(result.perr["width"], np.sqrt(pcov[0, 0]), rtol=1e-5)
    assert_close(result.perr["offset"], np.sqrt(np.diag(pcov)[3::3]), rtol=1e-5)
    assert_close(result.shared_pcov, pcov[:1, :1], rtol=1e-5)
    assert_close(result.local_pcov[2], pcov[7:10, 7:10], rtol=1e-5)
    assert result.fun.size == sum(y.size for _, y, _ in spectra)
    assert "width:" in result.summary() and len(result.summary().splitlines()) == 6 + 6


@pytest.mark.slow
def test_global_fit_with_bounds_and_a_robust_loss(spectra):
    k = len(spectra)
    bounds = {"width": (0.2, 0.79), "offset": (-1.0, 1.0)}  # width ends at its bound
    p0 = {"amp": 1.0, "center": 0.0, "width": 0.5, "offset": 0.0}
    result = nf.global_fit(
        peak, spectra, p0, shared="width", bounds=bounds, loss="soft_l1", **TIGHT
    )
    lower = np.r_[0.2, np.tile([-np.inf, -np.inf, -1.0], k)]
    upper = np.r_[0.79, np.tile([np.inf, np.inf, 1.0], k)]
    expected, _ = stacked_scipy(
        spectra, np.r_[0.5, np.tile([1.0, 0.0, 0.0], k)], k, (lower, upper), "soft_l1"
    )
    assert_close(result.x, expected.x, rtol=1e-5, atol=1e-8)
    assert result.active_mask[0] == 1 and result.params["width"] <= 0.79


@pytest.mark.slow
def test_global_fit_of_a_named_model_starts_from_its_guesses(spectra):
    model = nf.models.Gaussian() + nf.models.Constant()  # amplitude, center, sigma, c
    result = nf.global_fit(model, [(x, y) for x, y, _ in spectra], shared=("sigma",))
    assert result.success and result.names == ("amplitude", "center", "sigma", "c")
    assert result.params["sigma"] == pytest.approx(0.8, rel=0.02)
    assert_close(result.params["c"], 0.05 * np.arange(6), rtol=0, atol=0.02)


@pytest.mark.parametrize(
    "arguments, words",
    [
        (dict(shared=("gamma",)), "`shared` names unknown parameter 'gamma'"),
        (dict(datasets="not a list"), "`datasets` must be a list"),
        (dict(datasets=[(np.ones(3),)]), r"`datasets\[0\]` must be a tuple"),
        (dict(datasets=[(np.ones(3), np.ones(4))]), "x has shape"),
        (
            dict(p0={"amp": [1.0, 2.0], "center": 0.0, "width": 1.0, "offset": 0.0}),
            "local parameter 'amp'",
        ),
        (dict(bounds={"amp": (2.0, 3.0)}), r"'amp\[0\]'"),
        (dict(engine="sparse"), "`engine`"),
    ],
)
def test_global_fit_bad_input_is_named(spectra, arguments, words):
    arguments = (
        dict(
            datasets=spectra,
            p0={"amp": 1.0, "center": 0.0, "width": 1.0, "offset": 0.0},
            shared=("width",),
        )
        | arguments
    )
    with pytest.raises(ValueError, match=words):
        nf.global_fit(peak, **arguments)


def test_global_fit_needs_a_jax_model(spectra):
    p0 = {"amp": 1.0, "center": 0.0, "width": 1.0, "offset": 0.0}
    with pytest.raises(ValueError, match="jax.numpy"):
        nf.global_fit(peak_np, spectra, p0, shared=("width",))


def test_global_fit_needs_a_pointwise_model_for_different_lengths(spectra):
    def centred(x, amp, center, width, offset):
        return peak(x - x.mean(), amp, center, width, offset)

    p0 = {"amp": 1.0, "center": 0.0, "width": 1.0, "offset": 0.0}
    with pytest.raises(ValueError, match="pointwise"):
        nf.global_fit(centred, spectra, p0, shared=("width",))


def test_block_linearization_is_that_of_the_stacked_jacobian():
    """rᵀr = JᵀJ, grad = Jᵀf and the cost of the dense stacked problem (padded, masked,
    weighted, robust loss), from the blocks alone."""
    from nlsq_fn._drivers.block_linearize import GlobalModel, block_linearization
    from nlsq_fn._evaluation.linearize import scale_for_loss
    from nlsq_fn._problem.conventions import UnpackedModel

    rng = np.random.default_rng(3)
    k, length = 4, 6  # fewer points than the 2 + 3 columns of a block in dataset 3
    model = GlobalModel(UnpackedModel(peak), 4, (2, 3), (0, 1), k)
    x = np.tile(np.linspace(-2, 2, length), (k, 1))
    mask = np.arange(length)[None, :] < np.array([[6], [5], [6], [3]])
    data = nf.Data(
        x, rng.normal(size=(k, length)), sigma=rng.uniform(0.5, 2, (k, length)), mask=mask
    )
    theta = jnp.asarray(rng.uniform(0.5, 1.5, 2 + 2 * k))
    loss = nf.SoftL1(f_scale=0.7)

    def residual(theta):
        return data.weighted_residual(model(data.model_x, theta))

    @jax.jit  # (one program: eager dispatch of every small op costs more)
    def both(theta):
        blocks = block_linearization(model, data, theta, loss)
        return blocks, scale_for_loss(residual(theta), jax.jacfwd(residual)(theta), loss)

    linearization, (cost, f, jac) = both(theta)
    r = linearization.factor
    assert_close(r.T @ r, jac.T @ jac, rtol=1e-10, atol=1e-12)
    assert_close(linearization.grad, jac.T @ f, rtol=1e-10, atol=1e-12)
    assert_close(linearization.cost, cost, rtol=1e-12)


def block_problem(seed, k=5, length=7, n_s=2, n_l=3):
    """Random per-dataset R factors of a block-arrow problem, and its dense factor."""
    rng = np.random.default_rng(seed)
    w = n_s + n_l
    # Columns [local | shared], of different scales.
    blocks = rng.normal(size=(k, length, w)) * rng.uniform(0.1, 10, size=(1, 1, w))
    r_blocks = np.linalg.qr(blocks, mode="r")
    n = n_s + k * n_l
    jac = np.zeros((k * length, n))
    for i in range(k):
        jac[i * length : (i + 1) * length, :n_s] = blocks[i, :, n_l:]
        jac[i * length : (i + 1) * length, n_s + i * n_l : n_s + (i + 1) * n_l] = blocks[i, :, :n_l]
    return jnp.asarray(r_blocks), jac, rng


@pytest.mark.parametrize(
    "bounded, radius",
    [(False, 0.3), (True, 1e-3)]
    + [
        pytest.param(*case, marks=pytest.mark.extended)
        for case in [(False, 1e-3), (False, 1e3), (True, 0.3), (True, 1e3)]
    ],
)
def test_block_trf_subproblem_equals_the_svd_subproblem(bounded, radius):
    """BlockTRF's step (block-arrow Cholesky) = TRF's (SVD of the dense factor), inside
    the region (Gauss-Newton), on its edge, and with the bounded problem's diagonal."""
    from nlsq_fn._evaluation.linearize import Linearization
    from nlsq_fn._strategies.block_trf import BlockLinearization, BlockTRF
    from nlsq_fn._strategies.strategy import Problem
    from nlsq_fn._strategies.trf import TRF, _TRFState

    r_blocks, jac, rng = block_problem(1)
    n = jac.shape[1]
    g = jnp.asarray(jac.T @ rng.normal(size=jac.shape[0]))
    d = jnp.asarray(rng.uniform(0.5, 2.0, n))
    diag_h = jnp.asarray(rng.uniform(0, 3.0, n)) if bounded else jnp.zeros(n)
    problem = Problem(
        -jnp.full(n, jnp.inf),
        jnp.full(n, jnp.inf),
        None,
        1e-8,
        1e-8,
        1e-8,
        jnp.asarray(35),
        bounded=bounded,
    )
    state = _TRFState(jnp.asarray(radius), jnp.asarray(0.0), jnp.ones(n))
    dense = Linearization(jnp.asarray(1.0), g, jnp.asarray(np.linalg.qr(jac, mode="r")))
    blocks = BlockLinearization(jnp.asarray(1.0), g, r_blocks, 2)
    jac_dense, p_dense, alpha_dense = TRF().subproblem(dense, d, diag_h, d * g, state, problem)
    jac_block, p_block, alpha_block = BlockTRF(2).subproblem(
        blocks, d, diag_h, d * g, state, problem
    )
    assert_close(p_block, p_dense, rtol=1e-8, atol=1e-12 * radius)
    assert_close(alpha_block, alpha_dense, rtol=1e-8, atol=1e-14)
    assert (alpha_dense == 0) == (radius == 1e3)  # the Gauss-Newton step inside
    v = jnp.asarray(rng.normal(size=n))
    assert_close(jnp.linalg.norm(jac_block @ v), jnp.linalg.norm(jac * np.asarray(d) @ v))
    assert_close(blocks.column_norms, np.linalg.norm(jac, axis=0))


@pytest.mark.parametrize("n_s, n_l", [(2, 3), (1, 1), (0, 2), (3, 0)])
def test_block_covariance_equals_the_dense_inverse(n_s, n_l):
    from nlsq_fn._strategies.block_arrow import block_covariance

    r_blocks, jac, _ = block_problem(2, k=4, length=6, n_s=n_s, n_l=n_l)
    m, n = jac.shape
    expected = np.linalg.inv(jac.T @ jac)
    covariance = block_covariance(r_blocks, n_s, jnp.asarray(3.0), m)
    scaled = jax.tree.map(np.asarray, covariance).scaled(absolute_sigma=False)
    assert_close(scaled.dense(), expected * 6.0 / (m - n), rtol=1e-9, atol=1e-15)
    assert_close(scaled.diagonal(), np.diag(expected) * 6.0 / (m - n), rtol=1e-9)
    # Rank deficient (a dataset's local column repeated): infinite, as SciPy's.
    if n_l:
        deficient = r_blocks.at[0, :, 0].set(r_blocks[0, :, n_l - 1] if n_l > 1 else 0.0)
        assert np.all(np.isinf(block_covariance(deficient, n_s, 3.0, m).shared))


def small_global_problem(batch=3, k=3, length=25):
    """`batch` global problems (k peaks of one width each), same x, different y."""
    rng = np.random.default_rng(5)
    x = np.tile(np.linspace(-3, 3, length), (k, 1))
    amps = rng.uniform(0.5, 2.0, (batch, k, 1))
    ys = np.asarray(peak(x, amps, 0.3, 0.8, 0.1)) + 0.02 * rng.normal(size=(batch, k, length))
    return x, ys


P0_PEAK = {"amp": 1.0, "center": 0.0, "width": 1.0, "offset": 0.0}


@pytest.mark.extended  # (~20 s: a batch, separate fits and finite differences)
def test_global_solve_under_jit_vmap_and_grad():
    """A batch of global fits under jit + vmap = separate `global_fit`s; the gradient of
    the fitted shared width with respect to one data value = central finite differences
    of `global_fit`s."""
    x, ys = small_global_problem()
    k = x.shape[0]
    model = nf.global_model(peak, ("width",), k)
    solver = nf.Solver(**TIGHT)
    theta0 = jnp.asarray(np.r_[1.0, np.tile([1.0, 0.0, 0.0], k)])

    def fit(y):
        data = nf.Data(x, y)
        return nf.global_solve(model, data, nf.init(model, data, theta0, solver))

    batch = jax.jit(jax.vmap(fit))(jnp.asarray(ys))
    assert batch.x.shape == (len(ys), 1 + 3 * k) and np.all(batch.status > 0)
    for i, y in enumerate(ys):
        alone = nf.global_fit(peak, [(x[j], y[j]) for j in range(k)], P0_PEAK, "width", **TIGHT)
        assert_close(batch.x[i], alone.x, rtol=1e-8)
        assert_close(np.sqrt(batch.covariance.scaled(False).shared[i, 0, 0]), alone.perr["width"])

    gradient = jax.grad(lambda y: fit(y).x[0])(jnp.asarray(ys[0]))
    h = 1e-5
    for j, point in [(0, 12), (2, 3)]:
        moved = []
        for sign in (1, -1):
            y = ys[0].copy()
            y[j, point] += sign * h
            datasets = [(x[i], y[i]) for i in range(k)]
            moved.append(nf.global_fit(peak, datasets, P0_PEAK, "width", **TIGHT).x[0])
        assert_close(gradient[j, point], (moved[0] - moved[1]) / (2 * h), rtol=1e-5, atol=1e-9)


# --- orthogonal distance regression --------------------------------------------------


def scipy_odr(f_np, x, y, beta0, sx=None, sy=None, **options):
    with warnings.catch_warnings():  # scipy.odr is deprecated since SciPy 1.17
        warnings.simplefilter("ignore", DeprecationWarning)
        import scipy.odr

        return scipy.odr.ODR(
            scipy.odr.RealData(x, y, sx=sx, sy=sy),
            scipy.odr.Model(lambda beta, x: f_np(x, *beta)),
            beta0=beta0,
            sstol=1e-14,
            partol=1e-14,
            **options,
        ).run()


@pytest.fixture(scope="module")
def errors_in_x():
    rng = np.random.default_rng(5)
    x = np.linspace(0.0, 5.0, 30)
    sx, sy = 0.05 * (1 + rng.random(30)), 0.02 * (1 + rng.random(30))
    y = decay_np(x, 2.0, 0.5, 0.3) + sy * rng.normal(size=30)
    return x + sx * rng.normal(size=30), y, sx, sy


def relative_to_largest(expected):
    return dict(rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("weighted", [True, False])
def test_odr_equals_scipy_odr(errors_in_x, weighted):
    x, y, sx, sy = errors_in_x
    sigmas = dict(sigma_x=sx, sigma_y=sy) if weighted else {}
    result = nf.odr(decay, x, y, [1.0, 1.0, 0.0], **sigmas)
    expected = scipy_odr(decay_np, x, y, [1.0, 1.0, 0.0], *((sx, sy) if weighted else ()))
    assert result.success
    assert_close(result.beta, expected.beta, rtol=1e-5)
    assert_close(result.sd_beta, expected.sd_beta, rtol=1e-5)
    assert_close(result.delta, expected.delta, **relative_to_largest(expected.delta))
    assert_close(result.eps, expected.eps, **relative_to_largest(expected.eps))
    assert_close(result.res_var, expected.res_var, rtol=1e-5)


@pytest.mark.extended  # (ODR against scipy.odr runs by default without bounds)
def test_odr_with_a_bound_equals_scipy_odr_with_the_parameter_held_there(errors_in_x):
    x, y, sx, sy = errors_in_x
    # The unbounded fit has c ≈ 0.3; with c <= 0.2 the fit ends on the bound, where it is
    # ODRPACK's fit with c held at 0.2 (ifixb), the reference.
    result = nf.odr(
        decay,
        x,
        y,
        {"a": 1.0, "b": 1.0, "c": 0.0},
        sigma_x=sx,
        sigma_y=sy,
        bounds={"c": (-1.0, 0.2)},
    )
    expected = scipy_odr(decay_np, x, y, [1.0, 1.0, 0.2], sx, sy, ifixb=[1, 1, 0])
    assert result.beta[2] <= 0.2
    assert_close(result.beta, expected.beta, rtol=1e-5)
    assert_close(result.delta, expected.delta, **relative_to_largest(expected.delta))


def test_odr_bad_input_is_named():
    with pytest.raises(ValueError, match="`sigma_x` has 3 values but there are 5 points"):
        nf.odr(decay, np.arange(5.0), np.ones(5), [1.0, 1.0, 0.0], sigma_x=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="same length"):
        nf.odr(decay, np.arange(5.0), np.ones(4), [1.0, 1.0, 0.0])


@pytest.mark.slow
def test_fifty_gaussian_datasets_with_a_shared_width_equal_scipy():
    """The issue's acceptance problem: 50 datasets x 100 points, shared width."""
    rng = np.random.default_rng(7)
    x = np.linspace(-3.0, 3.0, 100)
    datasets = []
    for _ in range(50):
        amp, center, offset = rng.uniform(0.5, 2), rng.uniform(-1, 1), rng.uniform(0, 0.3)
        sigma = np.full(100, 0.02)
        datasets.append(
            (x, peak_np(x, amp, center, 0.7, offset) + sigma * rng.normal(size=100), sigma)
        )
    p0 = {"amp": 1.0, "center": 0.0, "width": 1.0, "offset": 0.0}
    result = nf.global_fit(peak, datasets, p0, shared="width", **TIGHT)
    expected, pcov = stacked_scipy(datasets, np.r_[1.0, np.tile([1.0, 0.0, 0.0], 50)], 50)
    assert_close(result.x, expected.x)
    assert_close(result.perr_flat, np.sqrt(np.diag(pcov)), rtol=1e-6)


# --- profile-likelihood intervals ----------------------------------------------------


def decay3(x, a, k, c):
    return a * jnp.exp(-k * x) + c


def test_profile_interval_equals_a_loop_of_fixed_parameter_fits():
    """The profile (one batched fit) = separate fits with the parameter fixed, and at
    each end of the interval the fixed fit's chi-square is the threshold's."""
    rng = np.random.default_rng(0)
    x = np.linspace(0, 4, 30)
    y = np.asarray(decay3(x, 2.0, 1.3, 0.2)) + 0.05 * rng.normal(size=x.size)
    result = nf.CurveFit(decay3).fit(x, y, p0=[1.0, 1.0, 0.0])
    interval = nf.profile_interval(result, "k")
    lower, upper = interval
    assert lower < result.params["k"] < upper

    def fixed_chi2(value):
        fit = nf.CurveFit(decay3, fixed={"k": value}, **TIGHT).fit(x, y, p0=[1.0, 1.0, 0.0])
        return 2 * fit.cost

    for i in (3, 10, 16):
        assert_close(interval.chi2[i], fixed_chi2(interval.grid[i]), rtol=1e-8)
    assert_close(fixed_chi2(lower), interval.threshold, rtol=1e-7)
    assert_close(fixed_chi2(upper), interval.threshold, rtol=1e-7)
    # The F(1, dof) threshold: t² times the residual variance above the minimum.
    t = nf.student_t_ppf(0.975, result.dof)
    assert_close(interval.threshold - interval.chi2_min, t**2 * 2 * result.cost / result.dof)


@pytest.mark.parametrize("absolute_sigma", [False, True])
def test_profile_interval_of_a_linear_model_is_the_covariance_interval(absolute_sigma):
    rng = np.random.default_rng(1)
    x = np.linspace(0, 4, 30)
    y = 0.3 + 0.7 * x + 0.1 * rng.normal(size=x.size)

    def line(x, a, b):
        return a + b * x

    result = nf.CurveFit(line, absolute_sigma=absolute_sigma).fit(
        x, y, p0=[1.0, 1.0], sigma=np.full(x.size, 0.1)
    )
    lower, upper = nf.profile_interval(result, "b", level=0.9)
    if absolute_sigma:  # the normal quantile: chi-square(1)
        half = 1.6448536269514722 * result.perr[1]
        expected = (result.popt[1] - half, result.popt[1] + half)
    else:
        expected = result.conf_intervals(0.9)["b"]
    assert_close([lower, upper], expected, rtol=1e-9)
