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
import pathlib
import sys
import tempfile

import scipy

sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))  # tests/, for suite_runner
from suite_runner import CONFTEST, cases, report_failures, run_pytest  # noqa: E402

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
    outcomes = [failure for _, failure in cases(report)]
    failed = [failure for failure in outcomes if failure is not None]
    return len(outcomes) - len(failed), len(outcomes), failed


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
        extra = ["-k", " and ".join(expression)] if expression else []
        report = run_pytest(folder, selection, extra)
        passed, total, failed = failures(report)
    print(f"SciPy's tests against nlsq_fn: {passed} of {total} pass")
    report_failures(dict(passed=passed, total=total), failed, args.out)


if __name__ == "__main__":
    main()
