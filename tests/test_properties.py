"""Property-based tests on random bounded problems (hypothesis)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from helpers import exp_decay
from hypothesis import given, settings, strategies as st

import nlsq_fn as nf

X = np.linspace(0, 4, 40)


@functools.cache
def _fitter(dtype, loss_name):
    """One compiled fit per dtype and loss; problems differ only in array values."""
    loss = nf._loss.as_loss(loss_name, 0.3)

    @jax.jit
    def fit(y, p0, lower, upper):
        data = nf.Data(jnp.asarray(X, dtype), y)
        state = nf.init(exp_decay, data, p0, nf.Solver(bounds=(lower, upper), loss=loss))
        return nf.solve(exp_decay, data, state)

    return fit


@st.composite
def bounded_problems(draw):
    """Truth, noise, a box (which may exclude the truth) and a start inside the box."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    truth = np.array([rng.uniform(0.5, 4), rng.uniform(0.2, 3), rng.uniform(-1, 1)])
    y = exp_decay(X, truth) + draw(st.floats(0.0, 0.2)) * rng.standard_normal(X.size)
    lower = truth - rng.uniform(-0.3, 2.0, 3)  # may cut the truth off: active bounds
    upper = np.maximum(truth + rng.uniform(-0.3, 2.0, 3), lower + 0.05)
    p0 = lower + rng.uniform(0, 1, 3) * (upper - lower)
    loss = draw(st.sampled_from(["linear", "huber", "cauchy"]))
    return np.asarray(y), p0, lower, upper, loss


def _run(problem, dtype):
    y, p0, lower, upper, loss = problem
    cast = functools.partial(jnp.asarray, dtype=dtype)
    return _fitter(dtype, loss)(cast(y), cast(p0), cast(lower), cast(upper))


@settings(max_examples=40, deadline=None)
@given(bounded_problems())
def test_result_stays_in_bounds_and_never_raises_the_cost(problem):
    _, _, lower, upper, _ = problem
    solution = _run(problem, jnp.float64)
    x = np.asarray(solution.x)
    assert np.all(x >= lower) and np.all(x <= upper)
    assert float(solution.cost) <= float(solution.initial_cost)
    assert int(solution.status) >= 0
    # active_mask agrees with where the parameters actually are.
    at_bound = np.isclose(x, lower, rtol=1e-8, atol=1e-10) | np.isclose(
        x, upper, rtol=1e-8, atol=1e-10
    )
    assert np.all(at_bound[np.asarray(solution.active_mask) != 0])


@settings(max_examples=25, deadline=None)
@given(bounded_problems())
def test_float32_succeeds_where_float64_does(problem):
    """Well-conditioned problems (3 parameters, 40 points, O(1) values) fitted in float32
    reach the float64 cost to float32 accuracy."""
    y, p0, lower, upper, loss = problem
    wide = _run(problem, jnp.float64)
    narrow = _run(problem, jnp.float32)
    assert narrow.x.dtype == jnp.float32
    x32 = np.asarray(narrow.x)
    assert np.all(x32 >= lower.astype(np.float32)) and np.all(x32 <= upper.astype(np.float32))
    if bool(wide.success):
        assert bool(narrow.success), narrow.message
        assert float(narrow.cost) <= float(wide.cost) * (1 + 1e-3) + 1e-5
