"""Run SciPy's own tests of `least_squares` and `curve_fit` against nlsq_fn's drop-ins.

The test files ship in SciPy's wheel (``scipy/optimize/tests``). They are copied to a
temporary folder with only their imports changed (``least_squares`` and ``curve_fit``
come from nlsq_fn; everything else, including SciPy's own helpers, stays SciPy's) and
run with pytest, float64 on. Dogbox tests are deselected unless ``--dogbox`` is given;
of test_minpack.py only ``TestCurveFit`` runs. Not part of the default test run (this
file is not named ``test_*.py``):

    .venv/bin/python tests/scipy_suite/run.py [--dogbox] [-k EXPR] [--out FILE]

Prints the pass count and, for each failure, its test id and the last line of its
error; ``--out`` also writes them as JSON lines.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

import scipy

TESTS = pathlib.Path(scipy.__file__).parent / "optimize" / "tests"

PATCHES = {
    "test_least_squares.py": [
        (
            "from scipy.optimize import least_squares, Bounds, minimize\n",
            "from scipy.optimize import Bounds, minimize\nfrom nlsq_fn import least_squares\n",
        ),
    ],
    "test_minpack.py": [
        (
            "from scipy.optimize._minpack_py import leastsq, curve_fit, fixed_point\n",
            "from scipy.optimize._minpack_py import leastsq, fixed_point\n"
            "from nlsq_fn import curve_fit\n",
        ),
        ("optimize.curve_fit(", "curve_fit("),
    ],
}

CONFTEST = """import jax

jax.config.update("jax_enable_x64", True)
"""


def copy_patched(folder: pathlib.Path) -> None:
    for name, patches in PATCHES.items():
        text = (TESTS / name).read_text()
        for old, new in patches:
            if old not in text:
                raise SystemExit(f"{name}: expected import not found: {old!r}")
            text = text.replace(old, new)
        (folder / name).write_text(text)
    (folder / "conftest.py").write_text(CONFTEST)


def failures(report: pathlib.Path) -> tuple[int, int, list[dict]]:
    passed, total, failed = 0, 0, []
    for case in ET.parse(report).getroot().iter("testcase"):
        if case.find("skipped") is not None:
            continue
        total += 1
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is None:
            passed += 1
            continue
        message = (problem.get("message") or problem.text or "").strip().splitlines()
        failed.append(
            dict(
                test=f"{case.get('classname')}::{case.get('name')}",
                reason=message[0][:200] if message else "",
            )
        )
    return passed, total, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dogbox", action="store_true", help="include dogbox tests")
    parser.add_argument("-k", default=None, help="extra pytest -k expression")
    parser.add_argument("--out", default=None, help="write failures as JSON lines here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = pathlib.Path(folder)
        copy_patched(folder)
        selection = ["test_least_squares.py", "test_minpack.py::TestCurveFit"]
        expression = [] if args.dogbox else ["not dogbox and not Dogbox"]
        if args.k:
            expression.append(f"({args.k})")
        command = [
            sys.executable,
            "-m",
            "pytest",
            *selection,
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "--junitxml",
            str(folder / "report.xml"),
            "-o",
            "addopts=",
            "--rootdir",
            str(folder),
            "-W",
            "ignore",
        ]
        if expression:
            command += ["-k", " and ".join(expression)]
        done = subprocess.run(
            command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        if not (folder / "report.xml").exists():
            raise SystemExit(
                f"pytest ended with code {done.returncode} before writing its report:\n"
                + "\n".join(done.stderr.strip().splitlines()[-25:])
            )
        passed, total, failed = failures(folder / "report.xml")
    print(f"SciPy's tests against nlsq_fn: {passed} of {total} pass")
    for failure in failed:
        print(f"FAIL {failure['test']}: {failure['reason']}")
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(json.dumps(dict(passed=passed, total=total)) + "\n")
            for failure in failed:
                handle.write(json.dumps(failure) + "\n")


if __name__ == "__main__":
    main()
