"""`curve_fit_batch` over parameter maps (several batch axes) and ragged lists of
datasets: each member is SciPy's `curve_fit` of that member alone, in the user's order
and shape; wrong shapes raise early, naming the argument."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from helpers import TIGHT, decay, decay_jac_np, decay_np as decay_scipy

import nlsq_fn as nf

P0 = np.array([1.0, 0.5, 0.0])


def _scipy(x, y, p0=P0, sigma=None):
    """SciPy's `curve_fit` of one member, exact Jacobian, tolerances tight enough that
    both fits stop at the same optimum."""
    return scipy.optimize.curve_fit(
        decay_scipy, x, y, p0=p0, sigma=sigma, jac=decay_jac_np, method="lm", **TIGHT
    )


def _assert_scipys_fit(popt, pcov, reference):
    """`popt` and the standard errors to 1e-6 relative, `pcov` to 1e-6 of
    ``sqrt(pcov_ii pcov_jj)`` (a near-zero covariance judged on its scale)."""
    errors = np.sqrt(np.diag(reference[1]))
    np.testing.assert_allclose(popt, reference[0], rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(np.diag(pcov)), errors, rtol=1e-6)
    np.testing.assert_array_less(np.abs(pcov - reference[1]), 1e-6 * np.outer(errors, errors))


def _decays(lengths, seed=0):
    """One noisy decay per length, each with its own parameters (x, y, sigma lists)."""
    rng = np.random.default_rng(seed)
    xs = [np.linspace(0.0, 4.0, m) for m in lengths]
    ys, sigmas = [], []
    for x in xs:
        a, b, c = rng.uniform(1.5, 3.0), rng.uniform(0.8, 1.6), rng.uniform(0.2, 0.8)
        sigma = rng.uniform(0.03, 0.06, x.size)
        ys.append(decay_scipy(x, a, b, c) + sigma * rng.standard_normal(x.size))
        sigmas.append(sigma)
    return xs, ys, sigmas


@pytest.mark.extended  # (compiles a batch of its own: CI's extended step)
def test_a_parameter_map_is_the_flat_batch_reshaped():
    """A (3, 4, m) map with per-member x, sigma and starts is the (12, m) batch with
    every output's batch axis reshaped to (3, 4), and each pixel is SciPy's fit."""
    m = 25
    xs, ys, sigmas = _decays([m] * 12, seed=1)
    x, y, sigma = np.stack(xs), np.stack(ys), np.stack(sigmas)
    starts = P0 + np.linspace(0.0, 0.2, 12)[:, None]
    flat = nf.curve_fit_batch(decay, x, y, starts, sigma=sigma, progress=False, **TIGHT)
    image = nf.curve_fit_batch(
        decay,
        x.reshape(3, 4, m),
        y.reshape(3, 4, m),
        starts.reshape(3, 4, 3),
        sigma=sigma.reshape(3, 4, m),
        progress=False,
        **TIGHT,
    )
    popt, pcov, solution = image
    assert popt.shape == (3, 4, 3) and pcov.shape == (3, 4, 3, 3)
    assert solution.status.shape == (3, 4) and solution.fun.shape == (3, 4, m)
    assert solution.jac.shape == (3, 4, m, 3) and len(solution.message) == 12
    # The same program on the same inputs, reshaped: the same numbers.
    np.testing.assert_allclose(popt, flat[0].reshape(3, 4, 3), rtol=1e-12)
    np.testing.assert_allclose(pcov, flat[1].reshape(3, 4, 3, 3), rtol=1e-12, atol=1e-300)
    np.testing.assert_array_equal(solution.nfev, flat[2].nfev.reshape(3, 4))
    for index in (0, 7, 11):  # pixel (0, 0), (1, 3), (2, 3)
        row, column = divmod(index, 4)
        reference = _scipy(xs[index], ys[index], starts[index], sigmas[index])
        _assert_scipys_fit(popt[row, column], pcov[row, column], reference)


def test_a_map_with_shared_x_and_one_start():
    """``xdata`` (m,), ``sigma`` (m,) and ``p0`` (n,) are shared by every pixel."""
    xs, ys, _ = _decays([25] * 12, seed=2)
    sigma = np.full(25, 0.05)
    popt, pcov, solution = nf.curve_fit_batch(
        decay, xs[0], np.stack(ys).reshape(2, 6, 25), P0, sigma=sigma, progress=False, **TIGHT
    )
    assert popt.shape == (2, 6, 3) and bool(np.all(solution.success))
    for index in range(0, 12, 3):
        reference = _scipy(xs[0], ys[index], sigma=sigma)
        _assert_scipys_fit(popt.reshape(12, 3)[index], pcov.reshape(12, 3, 3)[index], reference)


@pytest.mark.extended  # three lengths: three batched fits compiled
def test_ragged_datasets_get_scipys_fit_in_their_order(capsys):
    """Three lengths, shuffled, each with its own sigma and start: member i is SciPy's
    fit of dataset i; ``fun`` holds its residuals, then NaN up to the longest."""
    lengths = [30, 20, 45, 20, 30, 45, 45, 20]
    xs, ys, sigmas = _decays(lengths, seed=3)
    starts = P0 + np.linspace(0.0, 0.3, len(lengths))[:, None]
    popt, pcov, solution = nf.curve_fit_batch(
        decay, xs, ys, starts, sigma=sigmas, progress=True, **TIGHT
    )
    assert f"{len(lengths)}/{len(lengths)}" in capsys.readouterr().err, "counted across lengths"
    assert popt.shape == (8, 3) and pcov.shape == (8, 3, 3)
    assert solution.fun.shape == (8, 45) and solution.jac.shape == (8, 45, 3)
    for index, m in enumerate(lengths):
        reference = _scipy(xs[index], ys[index], starts[index], sigmas[index])
        _assert_scipys_fit(popt[index], pcov[index], reference)
        residual = (decay_scipy(xs[index], *reference[0]) - ys[index]) / sigmas[index]
        np.testing.assert_allclose(solution.fun[index, :m], residual, rtol=1e-5, atol=1e-9)
        assert np.all(np.isnan(solution.fun[index, m:]))
        assert np.all(np.isnan(solution.jac[index, m:]))


@pytest.mark.extended  # one padded batch and the padding checks
def test_padded_ragged_datasets_are_the_same_fits():
    """``pad=True``: one batch padded to the longest member gives each member SciPy's
    fit; a model using `x` as a whole (its mean) is refused before fitting."""
    lengths = [20, 45, 30, 20]
    xs, ys, _ = _decays(lengths, seed=4)
    popt, pcov, solution = nf.curve_fit_batch(decay, xs, ys, P0, pad=True, progress=False, **TIGHT)
    for index, m in enumerate(lengths):
        _assert_scipys_fit(popt[index], pcov[index], _scipy(xs[index], ys[index]))
        assert np.all(np.isnan(solution.fun[index, m:])) and np.all(
            np.isfinite(solution.fun[index, :m])
        )
        assert float(solution.cost[index]) == pytest.approx(
            0.5 * np.sum(solution.fun[index, :m] ** 2)
        )

    def centred(x, a, b, c):
        return a * jnp.exp(-b * (x - x.mean())) + c

    with pytest.raises(ValueError, match="pad=True needs a pointwise model"):
        nf.curve_fit_batch(centred, xs, ys, P0, pad=True, progress=False)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (
            dict(xdata=[np.ones(5)] * 2, ydata=[np.ones(5)] * 3),
            r"`xdata` has 2 datasets but `ydata` has 3",
        ),
        (
            dict(xdata=[np.ones(5)] * 2, ydata=[np.ones(5), np.ones(4)]),
            r"Dataset 1: `xdata\[1\]` has shape \(5,\) but `ydata\[1\]` has shape \(4,\)",
        ),
        (
            dict(xdata=[np.ones(5)] * 2, ydata=[np.ones(5)] * 2, sigma=[np.ones(5)]),
            r"`sigma` must be None or a list of 2 arrays",
        ),
        (
            dict(xdata=[np.ones(5)] * 2, ydata=[np.ones(5)] * 2, sigma=[np.ones(5), np.ones(3)]),
            r"`sigma\[1\]` has shape \(3,\)",
        ),
        (
            dict(xdata=[np.ones(5)] * 2, ydata=[np.ones(5)] * 2, p0=np.ones((3, 3))),
            r"`p0` must be \(n,\), one start for all, or \(2, n\)",
        ),
        (
            dict(xdata=np.ones(5), ydata=[np.ones(5), np.ones(4)]),
            r"`ydata` is a list of arrays of different lengths",
        ),
        (
            dict(xdata=np.ones(6), ydata=np.ones((3, 4, 5))),
            r"`xdata` must be \(5,\) or \(k, 5\), shared by every member, or \(3, 4, 5\)",
        ),
        (
            # (12, 5) is SciPy's shared x of 12 variables: the model's output is refused.
            dict(xdata=np.ones((12, 5)), ydata=np.ones((3, 4, 5))),
            r"The model returns shape \(12, 5\) but `y` has shape \(5,\)",
        ),
        (
            dict(xdata=np.ones((2, 3, 5)), ydata=np.ones((4, 5))),
            r"`xdata` must be \(5,\) or \(k, 5\).*got shape \(2, 3, 5\)",
        ),
        (
            dict(xdata=np.ones(5), ydata=np.ones((3, 4, 5)), p0=np.ones((12, 3))),
            r"`p0` must be \(n,\), one start for all, or \(3, 4, n\)",
        ),
        (
            dict(xdata=np.ones(5), ydata=np.ones((3, 5)), sigma=np.ones((5, 5))),
            r"`sigma` must be None, \(5,\) or \(3, 5\)",
        ),
        (dict(xdata=np.ones(5), ydata=np.ones(5)), r"`ydata` must have batch axes"),
    ],
)
def test_wrong_shapes_raise_naming_the_argument(arguments, message):
    arguments = {"p0": P0, **arguments}
    with pytest.raises(ValueError, match=message):
        nf.curve_fit_batch(decay, **arguments, progress=False)


def test_bad_values_name_the_member():
    """NaN data or a non-positive sigma name the member as the user indexes it: its
    position in the map, or in the lists (whatever group of lengths it is fitted in)."""
    x = np.linspace(0.0, 4.0, 10)
    image = np.ones((2, 3, 10))
    image[1, 2, 4] = np.nan
    with pytest.raises(ValueError, match=r"`ydata\[1, 2\]`: `y` contains NaN"):
        nf.curve_fit_batch(decay, x, image, P0, progress=False)
    xs = [x, x[:7], x, x[:7]]
    ys = [np.ones(10), np.ones(7), np.ones(10), np.ones(7)]
    sigmas = [np.ones(10), np.ones(7), np.ones(10), np.r_[np.ones(6), 0.0]]
    with pytest.raises(ValueError, match=r"^Dataset 3: .*sigma"):
        nf.curve_fit_batch(decay, xs, ys, P0, sigma=sigmas, progress=False)


@pytest.mark.extended  # a chunked batch compiles its own programs (~15 s)
def test_chunked_members_get_their_covariance_from_the_factor():
    """A chunked fit keeps no Jacobian (``solution.jac`` None, as for members long
    enough for ``chunk_size="auto"``): the covariance comes from its R factor, and is
    the one-shot fit's (``JᵀJ = RᵀR``)."""
    xs, ys, _ = _decays([25] * 12, seed=5)
    y = np.stack(ys).reshape(3, 4, 25)
    whole = nf.curve_fit_batch(decay, xs[0], y, P0, progress=False, **TIGHT)
    chunked = nf.curve_fit_batch(decay, xs[0], y, P0, progress=False, chunk_size=8, **TIGHT)
    assert chunked[2].jac is None and chunked[1].shape == (3, 4, 3, 3)
    errors = np.sqrt(np.diagonal(whole[1], axis1=-2, axis2=-1))
    np.testing.assert_allclose(chunked[0], whole[0], rtol=1e-8)
    np.testing.assert_allclose(
        np.sqrt(np.diagonal(chunked[1], axis1=-2, axis2=-1)), errors, rtol=1e-8
    )


@pytest.mark.extended  # a 40,000-point member: its group is chunked ("auto")
def test_a_chunked_group_among_short_ones():
    """The long member's group is chunked alone (no Jacobian), the short ones' are not:
    the batch has no `jac` (as a chunked fit), and every member is SciPy's fit."""
    lengths = [30, 40_000, 30]
    xs, ys, _ = _decays(lengths, seed=6)
    popt, pcov, solution = nf.curve_fit_batch(decay, xs, ys, P0, progress=False, **TIGHT)
    assert solution.jac is None and solution.fun.shape == (3, 40_000)
    for index in range(3):
        _assert_scipys_fit(popt[index], pcov[index], _scipy(xs[index], ys[index]))


def _gauss2d(x, a, u, v, w, b):
    return a * jnp.exp(-((x[0] - u) ** 2 + (x[1] - v) ** 2) / (2 * w**2)) + b


@pytest.mark.extended  # (compiles a batch of its own: CI's extended step)
def test_a_shared_xdata_of_several_variables_is_scipys():
    """`xdata` (k, m) shared by every member, as SciPy's `curve_fit` takes it (Gpufit's
    2-D Gaussians on 5 x 5 pixels: k = 2)."""
    grid = np.arange(5.0)
    u, v = np.meshgrid(grid, grid, indexing="ij")
    x = np.stack([u.ravel(), v.ravel()])
    rng = np.random.default_rng(4)
    shifts = rng.uniform(-0.5, 0.5, (6, 2))
    y = np.stack([np.asarray(_gauss2d(x, 10.0, 2 + a, 2 + b, 1.0, 1.0)) for a, b in shifts])
    y = y + 0.3 * rng.standard_normal(y.shape)
    p0 = [8.0, 2.0, 2.0, 1.2, 1.5]
    popt, pcov, _ = nf.curve_fit_batch(_gauss2d, x, y, p0, progress=False)
    assert popt.shape == (6, 5) and pcov.shape == (6, 5, 5)

    def model_np(x, a, u, v, w, b):
        return a * np.exp(-((x[0] - u) ** 2 + (x[1] - v) ** 2) / (2 * w**2)) + b

    for member in range(6):
        reference, reference_cov = scipy.optimize.curve_fit(
            model_np, x, y[member], p0=p0, xtol=1e-12, ftol=1e-12, gtol=1e-12
        )
        se = np.sqrt(np.diag(reference_cov))
        np.testing.assert_allclose(popt[member], reference, atol=1e-4 * se.min())
        np.testing.assert_allclose(np.sqrt(np.diag(pcov[member])), se, rtol=1e-4)
