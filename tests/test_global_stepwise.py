"""The global fit driven step by step (`block_stepwise`, what `global_fit` runs with TRF)
against the compiled `global_solve` on the same problem: the same steps, so the same
solution, counts and covariance up to rounding; and `init`'s start checks, which the
step-by-step fit makes from its first evaluation."""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TIGHT, peak

import nlsq_fn as nf
from nlsq_fn._drivers.block_stepwise import solve_blocks_stepwise
from nlsq_fn._frontends.global_fit import global_model


def problem(lengths=(30, 24, 30)):
    """Datasets of different lengths (padded and masked), outliers for a robust loss."""
    rng = np.random.default_rng(11)
    k, length = len(lengths), max(lengths)
    x = np.stack([np.linspace(-3, 3, length)] * k)
    y = np.zeros((k, length))
    mask = np.arange(length)[None, :] < np.array(lengths)[:, None]
    for i in range(k):
        y[i] = np.asarray(peak(x[i], 1 + 0.3 * i, 0.2 * i - 0.2, 0.8, 0.1))
    y += 0.02 * rng.normal(size=y.shape)
    y[0, 5] += 0.5
    return nf.Data(x, np.where(mask, y, 0.0), sigma=np.full(y.shape, 0.02), mask=mask), k


@pytest.mark.extended  # (~15 s each: both drivers compile)
@pytest.mark.parametrize(
    "options",
    [
        pytest.param({}, id="plain"),
        pytest.param(
            dict(loss=nf.SoftL1(f_scale=2.0), bounds=(-np.inf, np.r_[0.75, np.tile([5, 5, 5], 3)])),
            id="bounds and a robust loss",
        ),
    ],
)
def test_stepwise_global_fit_equals_the_compiled_one(options):
    data, k = problem()
    model = global_model(peak, ("width",), k)
    theta0 = np.r_[0.7, np.tile([1.0, 0.0, 0.0], k)]  # (inside the bound on the width)
    state = nf.init(model, data, theta0, nf.Solver(**options, **TIGHT))
    stepped = solve_blocks_stepwise(model, data, state)
    compiled = nf.global_solve(model, data, state)
    assert int(stepped.status) > 0 and int(stepped.nfev) == int(compiled.nfev)
    if "bounds" in options:  # the bound on the width holds it
        assert np.asarray(stepped.active_mask)[0] == 1
    np.testing.assert_allclose(stepped.x, compiled.x, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stepped.cost, compiled.cost, rtol=1e-9)
    np.testing.assert_allclose(stepped.fun, compiled.fun, rtol=1e-7, atol=1e-9)
    for name in ("shared", "local", "cross"):
        np.testing.assert_allclose(
            getattr(stepped.covariance, name),
            getattr(compiled.covariance, name),
            rtol=1e-7,
            atol=1e-14,
        )


@pytest.mark.parametrize("engine", ["block", "dense"])
def test_a_model_not_finite_at_the_start_is_named(engine):
    def root(x, a, b):
        return jnp.sqrt(a) * x + b

    datasets = [(np.arange(5.0), np.arange(5.0)), (np.arange(4.0), np.ones(4))]
    with pytest.raises(ValueError, match="NaN or inf at p0"):
        nf.global_fit(root, datasets, {"a": -1.0, "b": 0.0}, shared="a", engine=engine)
