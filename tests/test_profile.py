"""`profile_interval` of fits with bounds, a robust loss and fixed / tied parameters
against a brute-force loop of fits with the profiled parameter fixed (`CurveFit` with
``fixed=``, the same bounds, loss and ties): the profile's ``χ²`` at its grid points,
and at each end of the interval the threshold (or the bound, flagged, where the profile
stays below the threshold up to it)."""

import warnings

import jax.numpy as jnp
import numpy as np
import pytest

import nlsq_fn as nf

TIGHT = dict(ftol=1e-12, xtol=1e-12, gtol=1e-12)
P0 = {"a": 1.0, "k": 1.0, "c": 0.0, "d": 0.0}


def decay(x, a, k, c, d):
    return a * jnp.exp(-k * x) + c + d * x


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(3)
    x = np.linspace(0, 4, 40)
    y = np.asarray(decay(x, 2.0, 1.3, 0.2, 0.03)) + 0.05 * rng.normal(size=x.size)
    y[[7, 23]] += 0.8  # outliers, for the robust loss
    return x, y


def check_against_fixed_fits(interval, x, y, options, p0):
    """The profile at three grid points and each end that is not a bound = fits with
    ``k`` fixed there (same `options`)."""

    def fixed_chi2(value):
        fixed = options.get("fixed", {})
        rest = {key: v for key, v in options.items() if key != "fixed"}
        fit = nf.CurveFit(decay, fixed=fixed | {"k": value}, **rest, **TIGHT).fit(x, y, p0=p0)
        assert fit.success
        return 2 * fit.cost

    for i in (2, 9, 15):
        np.testing.assert_allclose(interval.chi2[i], fixed_chi2(interval.grid[i]), rtol=1e-8)
    for end, at_bound in (
        (interval.lower, interval.lower_at_bound),
        (interval.upper, interval.upper_at_bound),
    ):
        if not at_bound:
            np.testing.assert_allclose(fixed_chi2(end), interval.threshold, rtol=1e-7)


@pytest.mark.extended  # (~10 s each: a profile and a loop of fits)
@pytest.mark.parametrize(
    "options",
    [
        pytest.param(dict(loss="soft_l1", f_scale=0.1), id="robust loss"),
        pytest.param(
            dict(fixed={"d": 0.03}, ties={"c": lambda p: 0.1 * p["a"]}), id="fixed and tied"
        ),
    ],
)
def test_profile_interval_keeps_the_fits_loss_and_structure(points, options):
    x, y = points
    result = nf.CurveFit(decay, **options, **TIGHT).fit(x, y, p0=P0)
    interval = nf.profile_interval(result, "k")
    assert interval.lower < result.params["k"] < interval.upper
    assert not (interval.lower_at_bound or interval.upper_at_bound)
    check_against_fixed_fits(interval, x, y, dict(options), P0)


@pytest.mark.extended  # (~20 s)
def test_profile_interval_stops_at_a_bound(points):
    """``k`` bounded one standard error below its unbounded fit: the profile reaches the
    bound below the threshold, so the lower end is the bound (flagged, warned); ``c``
    capped just above its fit, so the profile fits hold it at its bound for some ``k``."""
    x, y = points
    free = nf.CurveFit(decay, **TIGHT).fit(x, y, p0=P0)
    k, c = free.params["k"], free.params["c"]
    bounds = {"k": (k - free.perr[1], np.inf), "c": (-np.inf, c + 0.3 * free.perr[2])}
    result = nf.CurveFit(decay, bounds=bounds, **TIGHT).fit(x, y, p0=P0)
    with pytest.warns(nf.OptimizeWarning, match="lower bound"):
        interval = nf.profile_interval(result, "k")
    assert interval.lower_at_bound and not interval.upper_at_bound
    assert interval.lower == bounds["k"][0] == interval.grid[0]
    assert interval.chi2[0] < interval.threshold
    assert result.params["k"] < interval.upper
    check_against_fixed_fits(interval, x, y, dict(bounds=bounds), P0)


def test_profile_interval_of_a_fixed_or_tied_parameter_is_refused(points):
    x, y = points
    result = nf.CurveFit(decay, fixed={"d": 0.0}, ties={"c": lambda p: 0.1 * p["a"]}).fit(
        x, y, p0=P0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name, kind in (("d", "fixed"), ("c", "tied")):
            with pytest.raises(ValueError, match=f"'{name}' is {kind} in this fit"):
                nf.profile_interval(result, name)


def test_profile_of_the_only_free_parameter_of_a_line_is_the_covariance_interval():
    """With the other parameter fixed nothing is left to fit at a held value: the
    profile is the objective itself, and on a linear model its interval is the
    covariance interval exactly."""
    rng = np.random.default_rng(1)
    x = np.linspace(0, 4, 30)
    y = 0.3 + 0.7 * x + 0.1 * rng.normal(size=x.size)

    def line(x, a, b):
        return a + b * x

    result = nf.CurveFit(line, fixed={"a": 0.3}).fit(x, y, p0=[0.0, 1.0])
    lower, upper = nf.profile_interval(result, "b", level=0.9)
    np.testing.assert_allclose([lower, upper], result.conf_intervals(0.9)["b"], rtol=1e-9)
