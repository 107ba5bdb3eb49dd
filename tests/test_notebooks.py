"""Every notebook in notebooks/ runs top to bottom (on a short horizon) and is stored without
outputs, so that the files in git are the clean, commit-ready versions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.notebook
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = {"quickstart.ipynb", "batch_vs_online.ipynb", "streaming_features.ipynb",
            "retraining_cadence.ipynb", "serving_at_scale.ipynb"}
# Short runs: the notebooks read these and default to the scenario's own horizon and warm-up.
SHORT = {"PREDSIM_NOTEBOOK_HORIZON": "2h", "PREDSIM_NOTEBOOK_WARMUP": "30m"}


def test_the_notebooks_are_there():
    assert EXPECTED <= {p.name for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"{path.name}: cell {i} has outputs; clear them before committing"
        assert cell.execution_count is None, f"{path.name}: cell {i} has an execution count"
    assert "widgets" not in nb.metadata


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path, monkeypatch):
    for key, value in SHORT.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()   # raises CellExecutionError, with the cell and the traceback, on failure
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    if path.name in EXPECTED:
        # The short horizon reached the kernel: the setup cell shows the overrides it read.
        setup = next(c for c in nb.cells if c.cell_type == "code" and "overrides" in c.source)
        shown = "".join(o.get("data", {}).get("text/plain", "") for o in setup.outputs)
        assert "'horizon': '2h'" in shown
    # The file on disk is untouched by running it.
    assert all(c.outputs == [] for c in nbformat.read(path, as_version=4).cells
               if c.cell_type == "code")
    assert os.environ["PREDSIM_NOTEBOOK_HORIZON"] == "2h"
