import atexit
import os
import shutil
import tempfile

import jax
import numpy as np
import pytest
import scipy.optimize

jax.config.update("jax_enable_x64", True)

# The model-independent programs nlsq_fn stores on disk go to a folder of the test run,
# not the user's cache (each xdist worker has its own).
if "NLSQ_FN_PROGRAM_CACHE" not in os.environ:
    _programs_folder = tempfile.mkdtemp(prefix="nlsq_fn_programs_")
    os.environ["NLSQ_FN_PROGRAM_CACHE"] = _programs_folder
    atexit.register(shutil.rmtree, _programs_folder, ignore_errors=True)

from helpers import decay_np  # noqa: E402

from nlsq_fn._evaluation import compiled as _compiled  # noqa: E402


@pytest.fixture(params=[True, pytest.param(False, marks=pytest.mark.extended)], ids=["x64", "x32"])
def x64(request):
    """Run the test with JAX's x64 on (float64, the suite's default) and off (float32,
    JAX's own default; in CI's extended step: `test_float32.py` and a few rows of
    `test_scipy_agreement.py` cover float32 in the default run). `jax.enable_x64` is a
    context manager of JAX's configuration, which is part of every jit cache key:
    programs traced under one setting are never reused under the other."""
    if request.param:
        yield True
        return
    with jax.enable_x64(False):
        yield False


@pytest.fixture(scope="module")
def guide_data():
    """The NLSQ guide's decay (40 points, a deterministic ripple for noise), shared by the
    tests of its calling forms (`CurveFit()`, results, large-data names)."""
    x = np.linspace(0, 4, 40)
    noise = 0.02 * np.cos(5.3 * x)  # deterministic, not a model term
    return x, 2.0 * np.exp(-0.7 * x) + 0.3 + noise


@pytest.fixture(scope="module")
def guide_scipy_fit(guide_data):
    """SciPy's `curve_fit` of `guide_data` (p0 = [1, 1, 0])."""
    x, y = guide_data
    return scipy.optimize.curve_fit(decay_np, x, y, p0=[1, 1, 0])


# nlsq_fn's compiled programs are dropped whenever the tests switch between float64 and
# float32 (the `x64` fixture's x64 off): JAX's fast dispatch path was seen to run a
# program compiled under one setting on the other's arrays (INVALID_ARGUMENT: f32[40]
# expected, f64[40] given) once a model's fit was compiled in both, in one process. They
# are dropped on a switch only (not around every float32 test), and each module's float32
# cases run after its float64 ones, so that consecutive tests keep sharing programs.
_programs_compiled_with_x64 = [True]


def _uses_float32(item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("x64", True) is False


def pytest_collection_modifyitems(items):
    """Within each module, the float32 (x64 off) cases after the float64 ones: one switch
    between the two, and so one drop of the compiled programs, per module (a stable
    sort: the order is otherwise unchanged, and the same in every xdist worker)."""
    position = {}
    for item in items:
        position.setdefault(item.nodeid.split("::")[0], len(position))
    items.sort(key=lambda item: (position[item.nodeid.split("::")[0]], _uses_float32(item)))


def pytest_runtest_setup(item):
    x64 = not _uses_float32(item)
    if _programs_compiled_with_x64[0] != x64:
        _compiled.clear()
        # JAX's own (eager operations, programs cached by its dispatch) as well.
        jax.clear_caches()
        _programs_compiled_with_x64[0] = x64


def pytest_terminal_summary(terminalreporter):
    """Print the NIST StRD table (log relative errors) when those tests ran."""
    rows = [
        value
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if getattr(report, "when", "call") == "call"
        for name, value in getattr(report, "user_properties", [])
        if name == "nist_lre"
    ]
    if not rows:
        return
    write = terminalreporter.write_line
    write("")
    write("NIST StRD, log relative error of the worst parameter (capped at 11):")
    write(f"{'strategy':8} {'problem':10} {'start':>5} {'LRE':>6} {'nfev':>6} {'RSS':>12}")
    for strategy, name, start, lre, nfev, rss in sorted(rows):
        write(f"{strategy:8} {name:10} {start:>5} {lre:6.2f} {nfev:6d} {rss:12.5e}")
    write("")
    write("The accuracy table of docs/accuracy-performance.md (paste it from here):")
    write("| strategy | runs with LRE ≥ 6 | median LRE | minimum LRE |")
    write("|---|---|---|---|")
    for strategy in sorted({row[0] for row in rows}):
        lres = np.array([row[3] for row in rows if row[0] == strategy])
        write(
            f"| {strategy} | {np.sum(lres >= 6)}/{lres.size} | {np.median(lres):.2f} | "
            f"{np.min(lres):.2f} |"
        )
