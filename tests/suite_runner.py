"""What `scipy_suite/run.py` and `nlsq_suite/run.py` share: run another project's test
files, copied and patched into a temporary folder, under pytest in a subprocess, and
read its JUnit report (pass counts, each failure's test id and the first line of its
error). Not a test file (not named ``test_*.py``)."""

import json
import pathlib
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator

CONFTEST = """import jax

jax.config.update("jax_enable_x64", True)
"""


def run_pytest(folder: pathlib.Path, selection: list[str], extra: list[str]) -> pathlib.Path:
    """Run pytest on `selection` in `folder` (no plugins, no warnings, no repository
    options) and return its JUnit report; stop with pytest's error if there is none."""
    report = folder / "report.xml"
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
        str(report),
        "-o",
        "addopts=",
        "--rootdir",
        str(folder),
        "-W",
        "ignore",
        *extra,
    ]
    done = subprocess.run(
        command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    if not report.exists():
        raise SystemExit(
            f"pytest ended with code {done.returncode} before writing its report:\n"
            + "\n".join(done.stderr.strip().splitlines()[-25:])
        )
    return report


def cases(report: pathlib.Path) -> Iterator[tuple[ET.Element, dict | None]]:
    """Each test that ran (skipped ones left out) and its failure (None if it passed):
    ``dict(test=..., reason=...)``, the reason the first line of its error."""
    for case in ET.parse(report).getroot().iter("testcase"):
        if case.find("skipped") is not None:
            continue
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is None:
            yield case, None
            continue
        message = (problem.get("message") or problem.text or "").strip().splitlines()
        yield (
            case,
            dict(
                test=f"{case.get('classname')}::{case.get('name')}",
                reason=message[0][:200] if message else "",
            ),
        )


def report_failures(summary: dict, failed: list[dict], out: str | None) -> None:
    """Print each failure; with `out`, write `summary` and the failures as JSON lines."""
    for failure in failed:
        print(f"FAIL {failure['test']}: {failure['reason']}")
    if out:
        with open(out, "w") as handle:
            handle.write(json.dumps(summary) + "\n")
            for failure in failed:
                handle.write(json.dumps(failure) + "\n")
