"""Every notebook in notebooks/ runs top to bottom in a fresh Jupyter kernel.

Each notebook asserts its own key numbers (fitted parameters near the truth within a few
standard errors, peak areas, EC50, ...), so a notebook whose fit silently goes wrong fails
here. ``CI=true`` is set for the kernel: the notebooks then use their smaller sizes. The
committed copies are not modified (outputs are refreshed with ``jupyter nbconvert
--execute --inplace``)."""

import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("CI", "true")  # the kernel inherits the environment
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the failing cell, on any error
