"""The notebooks in docs/notebooks execute top to bottom (nbclient), so they never rot."""

from __future__ import annotations

from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient", reason="pip install nbclient nbformat ipykernel")
nbformat = pytest.importorskip("nbformat")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "docs" / "notebooks").glob("*.ipynb"))


def test_there_are_the_four_notebooks() -> None:
    names = [p.name for p in NOTEBOOKS]
    assert names == [
        "01_explore_data_and_indicators.ipynb",
        "02_compile_from_drawings.ipynb",
        "03_backtest_and_compare.ipynb",
        "04_replay_a_log.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError with the failing cell and traceback
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]  # fmt: skip
    assert errors == []
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code")
