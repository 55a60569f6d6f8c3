"""The curve-fitting notebook runs top to bottom (slow: run with -m slow)."""

import json
import pathlib

import pytest

NOTEBOOK = pathlib.Path(__file__).parents[1] / "notebooks" / "curve_fitting.ipynb"


@pytest.mark.slow
def test_notebook_runs(monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    source = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    exec(compile(source, str(NOTEBOOK), "exec"), {"__name__": "__notebook__"})
