"""Several processes under `jax.distributed` (coordinator on localhost): each reads its
own part of the source, the summaries are combined with JAX's collectives, and every
process ends at the single-process fit."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

import nlsq_fn as nf

WORKER = textwrap.dedent(
    """
    import json
    import os
    import signal
    import sys

    import jax

    jax.config.update("jax_enable_x64", True)
    port, index, directory, methods, modes = sys.argv[1:6]
    index = int(index)
    jax.distributed.initialize(
        coordinator_address=f"localhost:{port}", num_processes=2, process_id=index,
        initialization_timeout=60, heartbeat_timeout_seconds=10,
    )
    assert jax.process_count() == 2 and jax.process_index() == index
    calls, how = 0, modes
    if how == "fail" and index == 1:
        raise SystemExit("this peer fails before the fit")

    import jax.numpy as jnp
    import numpy as np
    import nlsq_fn as nf

    def damped(t, a, k, w, c):
        return a * jnp.exp(-k * t) * jnp.cos(w * t) + c

    t_path, y_path = f"{directory}/t.npy", f"{directory}/y.npy"
    t, y = np.load(t_path), np.load(y_path)

    def every_process_reads_all():  # split=True: each folds every other chunk
        for start in range(0, t.size, 3_000):
            yield t[start:start + 3_000], y[start:start + 3_000]

    def my_own_pieces():  # split=False: this process's own pieces, interleaved
        global calls
        calls += 1
        if how == "killed" and index == 1 and calls == 3:  # in the second pass
            os.kill(os.getpid(), signal.SIGKILL)
        for start in range(index * 1_000, t.size, 2_000):
            yield t[start:start + 1_000], y[start:start + 1_000]

    sources = {
        "npy": (nf.NpySource(t_path, y_path, piece_size=2_500), True),
        "memmap": ((np.load(t_path, mmap_mode="r"), np.load(y_path, mmap_mode="r")), True),
        "callable": (every_process_reads_all, True),
        "own": (my_own_pieces, False),
        "npy-devices": (nf.NpySource(t_path, y_path, piece_size=2_500), True),
        "checkpoint": (nf.NpySource(t_path, y_path, piece_size=2_500), True),
    }
    options = {
        "trf": dict(bounds=([0, 0, 0, -1], [10, 5, 10, 1]), method="trf", loss="huber",
                    f_scale=0.1),
        "lm": dict(method="lm"),
    }
    if modes in ("fail", "killed"):  # process 0 fits while its peer is gone
        modes = "own"
    out = {}
    for method in methods.split(","):
        for mode in modes.split(","):
            source, split = sources[mode]
            devices = jax.local_devices() if mode == "npy-devices" else None
            if devices is not None:
                assert len(devices) == 2
                try:  # other processes' devices are refused
                    nf.StreamingOptimizer(damped, [1.5, 0.2, 2.9, 0.0],
                                          devices=jax.devices()).fit(source)
                except ValueError as error:
                    assert "jax.local_devices()" in str(error), error
                else:
                    raise AssertionError("global devices were accepted")
            optimizer = nf.StreamingOptimizer(
                damped, [1.5, 0.2, 2.9, 0.0], chunk_size=2_048, verbose=0,
                devices=devices, **options[method],
            )
            fit = optimizer.fit(source, split=split)
            if mode == "checkpoint":  # only process 0 saves; resuming, all take its
                path = f"{directory}/{method}{index}.eqx"
                first = optimizer.fit(source, checkpoint=path)
                assert os.path.exists(path) == (index == 0)
                again = nf.StreamingOptimizer(
                    damped, [1.5, 0.2, 2.9, 0.0], chunk_size=2_048, verbose=0,
                    **options[method],
                )
                fit = again.fit(source, checkpoint=path)  # resumed at its end: no pass
                assert again.passes == optimizer.passes, (again.passes, optimizer.passes)
                assert fit.x.tolist() == first.x.tolist()
            out[f"{method}/{mode}"] = dict(
                x=fit.x.tolist(), cost=float(fit.cost), pcov=fit.pcov.tolist(),
                nfev=int(fit.nfev), n_points=fit.n_points, passes=optimizer.passes,
            )
    print(json.dumps(out))
    """
)

OPTIONS = {
    "trf": dict(bounds=([0, 0, 0, -1], [10, 5, 10, 1]), method="trf", loss="huber", f_scale=0.1),
    "lm": dict(method="lm"),
}
P0 = [1.5, 0.2, 2.9, 0.0]


def damped(t, a, k, w, c):
    return a * jnp.exp(-k * t) * jnp.cos(w * t) + c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_two_processes(
    tmp_path, methods, modes, timeout=600, meanwhile=lambda: None, devices_each=1
):
    """Both processes' outputs (stdout, stderr, return code), run concurrently, and
    what `meanwhile()` returns (computed while they run)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices_each}"
    port = free_port()
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), str(port), str(index), str(tmp_path), methods, modes],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for index in (0, 1)
    ]
    outputs = []
    try:
        result = meanwhile()
        for worker in workers:
            out, err = worker.communicate(timeout=timeout)
            outputs.append((out, err, worker.returncode))
    finally:  # a peer that hangs is killed, never waited for forever
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    return outputs, result


def write_data(tmp_path, n=20_000):
    t = np.linspace(0.0, 10.0, n)
    y = np.asarray(damped(t, 2.0, 0.3, 3.0, 0.5))
    y = y + 0.05 * np.random.default_rng(3).standard_normal(n)
    y[::97] += 3.0
    np.save(tmp_path / "t.npy", t)
    np.save(tmp_path / "y.npy", y)
    return t, y


def check_against_one_process(tmp_path, methods, modes, in_memory=True, devices_each=1):
    t, y = write_data(tmp_path)

    def references():  # while the two processes run
        return {
            method: (
                nf.StreamingOptimizer(
                    damped, P0, chunk_size=2_048, verbose=0, **OPTIONS[method]
                ).fit((t, y)),
                nf.CurveFit(damped, t, y, p0=P0, **OPTIONS[method]).fit() if in_memory else None,
            )
            for method in methods
        }

    outputs, fits = run_two_processes(
        tmp_path,
        ",".join(methods),
        ",".join(modes),
        meanwhile=references,
        devices_each=devices_each,
    )
    for _, err, code in outputs:
        assert code == 0, err[-3000:]
    first, second = (json.loads(out.strip().splitlines()[-1]) for out, _, _ in outputs)
    for method in methods:
        one_process, in_memory_fit = fits[method]
        if in_memory:
            np.testing.assert_allclose(one_process.x, in_memory_fit.x, rtol=1e-10)
        for mode in modes:
            fit = first[f"{method}/{mode}"]
            # Both processes took the same steps from the same combined summaries.
            assert second[f"{method}/{mode}"] == fit
            assert fit["n_points"] == t.size
            assert fit["nfev"] == one_process.nfev == fit["passes"]
            # The same sums in another order: equal up to rounding.
            np.testing.assert_allclose(fit["x"], one_process.x, rtol=1e-10)
            if in_memory:
                np.testing.assert_allclose(fit["x"], in_memory_fit.x, rtol=1e-10)
            np.testing.assert_allclose(fit["cost"], one_process.cost, rtol=1e-12)
            np.testing.assert_allclose(fit["pcov"], one_process.pcov, rtol=1e-7)


@pytest.mark.extended
def test_two_processes_give_the_single_process_fit(tmp_path):
    # The fast variant: LM, the same `.npy` files in both processes (each reads only
    # its block of rows). The slow one below compares with the in-memory fit too.
    check_against_one_process(tmp_path, ["lm"], ["npy"], in_memory=False)


@pytest.mark.slow  # two processes, twelve fits: ~50 s
def test_two_processes_each_source_split(tmp_path):
    check_against_one_process(
        tmp_path, ["trf", "lm"], ["npy", "memmap", "callable", "own", "checkpoint"]
    )


@pytest.mark.slow  # two processes with two host devices each: ~30 s
def test_two_processes_of_two_devices_each(tmp_path):
    # Each process splits its chunks over its own two devices: two reductions a pass.
    check_against_one_process(tmp_path, ["trf"], ["npy-devices"], in_memory=False, devices_each=2)


@pytest.mark.slow  # ~30 s each: the survivor waits for the collective's timeout
@pytest.mark.parametrize("how", ["fail", "killed"])
def test_a_failed_peer_does_not_hang_the_fit(tmp_path, how):
    # "fail": the peer exits before the fit; "killed": it is SIGKILLed in its second
    # pass, after the first collective.
    write_data(tmp_path, n=4_000)
    outputs, _ = run_two_processes(tmp_path, "lm", how, timeout=300)
    (_, err0, code0), (_, _, code1) = outputs
    assert code1 != 0
    # The survivor waits for its peer in a collective, then stops with an error (the
    # collective's or the coordination service's timeout), long before the test's.
    assert code0 != 0 and "Error" in err0, err0[-3000:]


def test_part_of_a_source_reads_its_block(tmp_path):
    t, y = write_data(tmp_path, n=1_001)
    npy = nf.NpySource(tmp_path / "t.npy", tmp_path / "y.npy", piece_size=300)
    arrays = nf.ArraySource(t, y, piece_size=300)
    for source in (npy, arrays):
        parts = [source.part(i, 3) for i in range(3)]
        assert [len(p) for p in parts] == [333, 334, 334]
        read = [np.concatenate([piece[1] for piece in p.pieces()]) for p in parts]
        np.testing.assert_array_equal(np.concatenate(read), y)
        # A part of a part: rows counted from the part's start.
        inner = parts[1].part(1, 2)
        np.testing.assert_array_equal(
            np.concatenate([piece[0] for piece in inner.pieces()]), t[333 + 167 : 667]
        )
    with pytest.raises(ValueError, match="Block 3 of 3"):
        npy.part(3, 3)
    assert nf.CallableSource(lambda: iter([])).part(0, 2) is None
