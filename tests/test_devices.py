"""In-memory points placed over four (host) devices: the jitted `solve` gives the
single-device fit."""

import textwrap

import pytest
from helpers import run_on_host_devices

SCRIPT = textwrap.dedent(
    """
    import jax
    jax.config.update("jax_enable_x64", True)
    import equinox as eqx
    import jax.numpy as jnp
    import numpy as np
    import nlsq_fn as nf
    from helpers import assert_same_optimum

    def damped(t, p):
        a, k, w, c = p
        return a * jnp.exp(-k * t) * jnp.cos(w * t) + c

    assert len(jax.devices()) == 4
    n = 20_000
    t = np.linspace(0.0, 10.0, n)
    y = np.asarray(damped(t, jnp.array([2.0, 0.3, 3.0, 0.5])))
    y = y + 0.05 * np.random.default_rng(0).standard_normal(n)
    y[::97] += 3.0
    sigma = 0.05 * (1.0 + 0.5 * np.sin(t))
    huber = dict(loss=nf.Huber(0.1), bounds=([0, 0, 0, -1], [10, 5, 10, 1]))
    solvers = {
        "trf-huber-bounds": nf.Solver(**huber, chunk_size=None),
        "lm": nf.Solver(strategy=nf.LevenbergMarquardt(), chunk_size=None),
        "trf-huber-bounds-chunked": nf.Solver(**huber, chunk_size=2_048),
    }
    fit = eqx.filter_jit(nf.solve)
    one_device = nf.Data(t, y, sigma=sigma)
    four_devices = nf.shard_points(one_device, jax.devices())
    assert len(four_devices.y.sharding.device_set) == 4
    assert len(four_devices.x.sharding.device_set) == 4
    for name, solver in solvers.items():
        state = nf.init(damped, one_device, jnp.array([1.5, 0.2, 2.9, 0.0]), solver)
        one, four = fit(damped, one_device, state), fit(damped, four_devices, state)
        assert int(one.status) > 0 and int(four.status) > 0, name
        # Four devices sum in another order: the same optimum, not the same bits (a
        # termination test at its threshold may flip on some CPUs).
        jac = jax.jacfwd(lambda p: (damped(t, p) - y) / sigma)(one.x)
        assert_same_optimum(four.x, one.x, four.cost, one.cost, jac=jac, err_msg=name)
        # The per-point residuals stay where their points are.
        assert len(four.fun.sharding.device_set) == 4
    try:
        nf.shard_points(nf.Data(t[:-1], y[:-1]), jax.devices())
    except ValueError as error:
        assert "19999 points" in str(error), error
    else:
        raise AssertionError("19,999 points over 4 devices were accepted")
    print("ok")
    """
)


@pytest.mark.slow  # a subprocess with 4 host devices, six compilations: ~30 s
def test_in_memory_points_over_four_devices_give_the_single_device_fit(tmp_path):
    run_on_host_devices(SCRIPT, tmp_path)


BAD_DEVICES = textwrap.dedent(
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    import nlsq_fn as nf

    d = jax.devices()
    assert len(d) == 4
    data = nf.Data(np.arange(8.0), np.arange(8.0))
    batch = nf.Data(np.ones((8, 5)), np.ones((8, 5)))
    placed = nf.shard_batch(batch, d)
    assert len(placed.y.sharding.device_set) == 4

    def message(make):
        try:
            make()
        except ValueError as error:
            return str(error)
        raise AssertionError("accepted")

    # One error for both functions (and StreamingOptimizer), naming the sizes.
    uneven = message(lambda: nf.shard_batch(nf.Data(np.ones((6, 5)), np.ones((6, 5))), d))
    assert "6 members of the batch" in uneven and "multiple of the 4 devices" in uneven
    uneven = message(lambda: nf.shard_points(nf.Data(np.arange(6.0), np.arange(6.0)), d))
    assert "6 points of `data`" in uneven and "multiple of the 4 devices" in uneven
    for make in (
        lambda: nf.shard_batch(batch, [d[0], d[0]]),
        lambda: nf.shard_points(data, [d[0], d[1], d[0]]),
        lambda: nf.StreamingOptimizer(lambda x, a: a * x, p0=[1.0], devices=[d[1], d[1]]),
    ):
        assert "lists cpu:" in message(make) and "more than once" in message(make)
    assert "empty" in message(lambda: nf.shard_batch(batch, []))
    print("ok")
    """
)


def test_uneven_or_repeated_devices_get_clear_errors(tmp_path):
    run_on_host_devices(BAD_DEVICES, tmp_path)
