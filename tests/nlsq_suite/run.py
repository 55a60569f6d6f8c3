"""Run NLSQ's own public-API tests against nlsq_fn, with only their imports changed.

NLSQ's test files are not copied into this repository: they are read from NLSQ's
source distribution (``pip download nlsq==0.7.6 --no-binary :all: --no-deps``, cached
in ``~/.cache/nlsq_fn/``; or ``--sdist PATH`` to a downloaded ``.tar.gz``), copied to a
temporary folder with each ``from nlsq... import`` pointed at nlsq_fn (NLSQ's function
library ``nlsq.core.functions`` at ``nlsq_fn.models``), and run with pytest, float64 on,
slow tests included. Not part of the default test run (this file is not named
``test_*.py``):

    .venv/bin/python tests/nlsq_suite/run.py [--sdist FILE] [-k EXPR] [--out FILE]

Prints the pass count per file and overall and, for each failure, its test id and the
last line of its error; ``--out`` also writes them as JSON lines.

The files counted are `FILES`: NLSQ's tests of its public API (`curve_fit`, `CurveFit`,
`LeastSquares`, bounds, sigma and covariance, the result object, the function library,
`curve_fit_large` / `LargeDatasetFitter` and memory estimates). Left out: tests of NLSQ's
internals (TRF helpers, caches, validators, sparse Jacobians, CLI, GUI) and of NLSQ's own
features beyond that API (fallback / stability / auto-bounds switches, `nlsq.callbacks`,
diagnostics, global optimisation, the hybrid streaming optimizer, workflow presets).
Within a counted file, names NLSQ has and nlsq_fn lacks (its internals, e.g.
`DataChunker`) are imported from a placeholder module, so only the tests using them fail.
"""

import argparse
import ast
import pathlib
import subprocess
import sys
import tarfile
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))  # tests/, for suite_runner
from suite_runner import (  # noqa: E402
    CONFTEST as SHARED_CONFTEST,
    cases,
    report_failures,
    run_pytest,
)

VERSION = "0.7.6"
# Each file with its test count under NLSQ 0.7.6 itself (pytest's collection there), so
# that a file nlsq_fn cannot even import counts all its tests as failed.
FILES = {
    "core/test_minpack.py": 18,
    "core/test_least_squares.py": 35,
    "core/test_least_squares_comprehensive.py": 14,
    "core/test_result.py": 35,
    "core/test_functions.py": 42,
    "core/test_curvefit_golden_master.py": 35,
    "core/test_minpack_prepare_inputs_comprehensive.py": 22,
    "integration/test_integration.py": 14,
    "streaming/test_large_dataset.py": 35,
    "scientific/test_numerical_correctness.py": 24,
    "utils/test_validators_simple.py": 9,
    "core/test_trf_refactoring_validation.py": 5,
    "core/test_numerical_validation_task2.py": 14,
}
# NLSQ module -> nlsq_fn module, for ``from X import ...`` and ``import X``.
MODULES = {"nlsq.core.functions": "nlsq_fn.models"}

CONFTEST = (
    SHARED_CONFTEST
    + """
import sys

import nlsq_fn  # noqa: E402

# `nlsq_fn.models` is an attribute of the package; make it importable by that name.
sys.modules.setdefault("nlsq_fn.models", nlsq_fn.models)
"""
)


MISSING = '''"""NLSQ's names that nlsq_fn does not have (its internals): using one raises."""


class Missing:
    def __init__(self, name):
        self.name = name

    def __getattr__(self, attribute):
        raise NotImplementedError(f"nlsq_fn has no {self.name} (an NLSQ internal)")

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(f"nlsq_fn has no {self.name} (an NLSQ internal)")


def __getattr__(name):
    return Missing(name)
'''


def sdist(path: str | None) -> pathlib.Path:
    if path:
        return pathlib.Path(path)
    cache = pathlib.Path.home() / ".cache" / "nlsq_fn"
    archive = cache / f"nlsq-{VERSION}.tar.gz"
    if not archive.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                f"nlsq=={VERSION}",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                str(cache),
                "-q",
            ],
            check=True,
        )
    return archive


def patched(text: str) -> str:
    """Each ``from nlsq... import names`` becomes ``from nlsq_fn import names``; names
    nlsq_fn lacks (NLSQ's internals) come from ``missing``, where using one raises, so
    that only the tests that use them fail."""
    import importlib

    lines = text.splitlines(keepends=True)
    for node in sorted(ast.walk(ast.parse(text)), key=_line, reverse=True):
        if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("nlsq"):
            continue
        if node.module != "nlsq" and not node.module.startswith("nlsq."):
            continue
        target = MODULES.get(node.module, "nlsq_fn")
        module = importlib.import_module("nlsq_fn")
        for part in target.split(".")[1:]:
            module = getattr(module, part)
        found = [a for a in node.names if hasattr(module, a.name)]
        lacking = [a for a in node.names if not hasattr(module, a.name)]
        indent = lines[node.lineno - 1][: node.col_offset]
        statements = []
        for source, names in ((target, found), ("missing", lacking)):
            if names:
                listed = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in names)
                statements.append(f"{indent}from {source} import {listed}\n")
        start, end = node.lineno - 1, node.end_lineno
        lines[start:end] = statements or [f"{indent}pass\n"]
    return "".join(lines)


def _line(node) -> int:
    return getattr(node, "lineno", 0)


def copy_patched(archive: pathlib.Path, folder: pathlib.Path) -> None:
    with tarfile.open(archive) as tar:
        for name in FILES:
            member = tar.extractfile(f"nlsq-{VERSION}/tests/{name}")
            text = patched(member.read().decode())
            (folder / name.replace("/", "__")).write_text(text)
    (folder / "conftest.py").write_text(CONFTEST)
    (folder / "missing.py").write_text(MISSING)


def results(report: pathlib.Path) -> tuple[dict, list[dict]]:
    counts, failed = {}, []
    for case, failure in cases(report):
        file = (case.get("classname") or "").split(".")[0].replace("__", "/") + ".py"
        passed, total = counts.get(file, (0, 0))
        counts[file] = (passed + (failure is None), total + 1)
        if failure is not None:
            failed.append(failure)
    return counts, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sdist", default=None, help="NLSQ's source distribution")
    parser.add_argument("-k", default=None, help="pytest -k expression")
    parser.add_argument("--out", default=None, help="write failures as JSON lines here")
    args = parser.parse_args()
    archive = sdist(args.sdist)
    with tempfile.TemporaryDirectory() as folder:
        folder = pathlib.Path(folder)
        copy_patched(archive, folder)
        extra = ["--continue-on-collection-errors"] + (["-k", args.k] if args.k else [])
        report = run_pytest(folder, [n.replace("/", "__") for n in FILES], extra)
        counts, failed = results(report)
    counts = {file: counts.get(file, (0, 0))[0] for file in FILES}
    passed, total = sum(counts.values()), sum(FILES.values())
    for file, p in counts.items():
        print(f"{file}: {p} of {FILES[file]}")
    print(f"NLSQ's tests against nlsq_fn: {passed} of {total} pass")
    report_failures(dict(passed=passed, total=total, passed_by_file=counts), failed, args.out)


if __name__ == "__main__":
    main()
