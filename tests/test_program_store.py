"""The model-independent programs stored on disk (`nlsq_fn._evaluation.program_store`): a second
process loads them instead of compiling, with the same fit; a damaged entry is compiled
again; storing can be switched off."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from nlsq_fn._evaluation import program_store as _program_store

ROOT = pathlib.Path(__file__).resolve().parent.parent

FIT = r"""
import json
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
import scipy.optimize
import nlsq_fn as nf
from nlsq_fn._drivers import steps as _steps
import os
if os.environ.get("TEST_JAX_CACHE"):
    nf.enable_compilation_cache(os.environ["TEST_JAX_CACHE"])

programs = (_steps.propose_step, _steps.judge_step, _steps.start_loop)
traces = []  # a loaded program learns its outputs' structure from the store, untraced
for program in programs:
    program.function = (lambda f: lambda *a: traces.append(1) or f(*a))(program.function)
x = np.linspace(0.0, 4.0, 60)
y = 2.5 * np.exp(-1.3 * x) + 0.5 + 0.01 * np.sin(7 * x)
popt, pcov = nf.curve_fit(lambda x, a, b, c: a * jnp.exp(-b * x) + c, x, y, p0=[1, 1, 0])
expected, _ = scipy.optimize.curve_fit(
    lambda x, a, b, c: a * np.exp(-b * x) + c, x, y, p0=[1, 1, 0]
)
print(json.dumps(dict(
    popt=np.asarray(popt).tolist(), pcov=np.asarray(pcov).tolist(),
    scipy=expected.tolist(), loads=[program.loads for program in programs],
    traces=len(traces),
)))
"""


def _fit_in_fresh_process(folder, jax_cache=None):
    env = dict(os.environ, NLSQ_FN_PROGRAM_CACHE=str(folder), PYTHONPATH=str(ROOT))
    if jax_cache is not None:
        env["TEST_JAX_CACHE"] = str(jax_cache)
    done = subprocess.run(
        [sys.executable, "-c", FIT], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.extended
def test_a_second_process_loads_the_steps_and_fits_the_same(tmp_path):
    first = _fit_in_fresh_process(tmp_path)
    assert first["loads"] == [0, 0, 0]
    names = {path.name.split("-")[0] for path in tmp_path.glob("*.bin")}
    assert {"propose_step", "judge_step", "start"} <= names

    second = _fit_in_fresh_process(tmp_path)
    assert second["loads"] == [1, 1, 1]
    assert first["traces"] >= 3 and second["traces"] == 0
    # The same executables on the same machine: the same fit, to the last bit.
    assert second["popt"] == first["popt"]
    assert second["pcov"] == first["pcov"]
    for value, expected in zip(second["popt"], second["scipy"], strict=True):
        assert value == pytest.approx(expected, rel=1e-6)

    for path in tmp_path.glob("*.bin"):
        path.write_bytes(b"not an executable")
    damaged = _fit_in_fresh_process(tmp_path)
    assert damaged["loads"] == [0, 0, 0]
    assert damaged["popt"] == first["popt"]
    assert all(path.stat().st_size > 100 for path in tmp_path.glob("*.bin"))  # rewritten


@pytest.mark.extended
def test_with_jaxs_own_cache_on_the_stored_programs_stay_valid(tmp_path):
    """With `nf.enable_compilation_cache`, a program may come out of JAX's cache; such an
    executable, serialized again, used to be stored and then fail when loaded ("Function
    ... not found"). A third process, without JAX's cache, must fit from the store."""
    jax_cache, store = tmp_path / "jax", tmp_path / "programs"
    first = _fit_in_fresh_process(tmp_path / "other", jax_cache=jax_cache)  # fills JAX's
    second = _fit_in_fresh_process(store, jax_cache=jax_cache)  # from JAX's cache
    third = _fit_in_fresh_process(store)
    for fit in (first, second, third):
        for value, expected in zip(fit["popt"], fit["scipy"], strict=True):
            assert value == pytest.approx(expected, rel=1e-6)


BATCH = r"""
import json
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
import nlsq_fn as nf
from nlsq_fn._drivers import batched_steps as _batched_steps

x = np.linspace(0.0, 4.0, 30)
rates = np.linspace(0.5, 2.0, 12)
y = 2.5 * np.exp(-rates[:, None] * x) + 0.5 + 0.01 * np.sin(7 * x)
popt, pcov, solution = nf.curve_fit_batch(
    lambda x, a, b, c: a * jnp.exp(-b * x) + c, x, y, [1.0, 1.0, 0.0]
)
programs = (_batched_steps.step_lanes, _batched_steps.finish_lanes)
print(json.dumps(dict(
    popt=np.asarray(popt).tolist(), nfev=np.asarray(solution.nfev).tolist(),
    loads=[program.loads for program in programs],
)))
"""


@pytest.mark.extended
def test_a_second_process_loads_a_batchs_steps_and_fits_the_same(tmp_path):
    """A compacted batch compiles only the model's evaluation once its model-independent
    programs (`step_lanes`, `finish_lanes`) are on disk: loaded, they fit the same."""
    env = dict(os.environ, NLSQ_FN_PROGRAM_CACHE=str(tmp_path), PYTHONPATH=str(ROOT))
    fits = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", BATCH], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-2000:]
        fits.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert fits[0]["loads"] == [0, 0] and fits[1]["loads"] == [1, 1]
    assert fits[1]["popt"] == fits[0]["popt"] and fits[1]["nfev"] == fits[0]["nfev"]
    for popt, rate in zip(fits[1]["popt"], np.linspace(0.5, 2.0, 12), strict=True):
        assert popt == pytest.approx([2.5, rate, 0.5], abs=0.05)


@pytest.mark.parametrize("setting", ["off", "0", "false"])
def test_storing_can_be_switched_off(monkeypatch, setting):
    monkeypatch.setenv("NLSQ_FN_PROGRAM_CACHE", setting)
    assert _program_store.cache_folder() is None


def test_the_default_folder_is_the_users_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("NLSQ_FN_PROGRAM_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    folder = _program_store.cache_folder()
    assert folder == pathlib.Path.home() / ".cache" / "nlsq_fn" / "programs"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _program_store.cache_folder() == tmp_path / "nlsq_fn" / "programs"


def test_the_folder_is_trimmed_oldest_first(tmp_path, monkeypatch):
    monkeypatch.setattr(_program_store, "MAX_BYTES", 2500)
    for age, name in enumerate(["old", "middle", "new"]):
        path = tmp_path / f"{name}.bin"
        path.write_bytes(b"x" * 1000)
        os.utime(path, (1000 + age, 1000 + age))
    _program_store._trim(tmp_path)
    assert sorted(path.name for path in tmp_path.glob("*.bin")) == ["middle.bin", "new.bin"]


def test_a_folder_that_cannot_be_written_fails_nothing(tmp_path):
    blocked = tmp_path / "a file, not a folder"
    blocked.write_text("")
    _program_store._store(blocked / "entry.bin", executable=None, out_tree=None)  # raises nothing
    assert _program_store._load(blocked / "entry.bin") is None


def test_numpy_arguments_are_taken_as_jax_arrays():
    """NumPy arrays have no weak type and stay float64 with x64 off: a stored program
    takes them as the JAX arrays they become, in either precision."""
    import jax
    import numpy as np

    program = _program_store.stored(lambda a, b: a * b + 1.0)
    values = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(program(values, np.float64(2.0)), [3.0, 5.0, 7.0])
    with jax.enable_x64(False):
        result = program(values, np.float64(2.0))
        assert result.dtype == np.float32
        np.testing.assert_allclose(result, [3.0, 5.0, 7.0])
