"""The notebooks (``notebooks/``) run fresh on the embedded engine, cell by cell with a
timeout, in a kernel of this interpreter: no cell raises or writes to stderr (where
warnings go), and every drawing they show is SVG."""

from __future__ import annotations

import pathlib
import time
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook extra is not installed")
nbclient = pytest.importorskip("nbclient", reason="the notebook extra is not installed")

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
#: Each notebook, and how many drawings (graphs, LogDAGs) it shows at least.
DRAWINGS = {"quickstart": 2, "tracing": 3, "caching-and-samplers": 3}
#: Seconds a cell may take (the first loads the model; each run is a few short generations).
CELL_TIMEOUT = 120


def test_every_notebook_is_checked() -> None:
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(DRAWINGS)


@pytest.mark.real
@pytest.mark.parametrize("name", sorted(DRAWINGS))
def test_notebook_runs_clean_with_svg_drawings(
    name: str, spangraph_home: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPANGRAPH_HOME", str(spangraph_home))
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    path = NOTEBOOKS / f"{name}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)  # cell ids included: no MissingIDFieldWarning on read
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first cell that raises
    print(f"{name}: {time.perf_counter() - started:.1f} s")
    problems: list[str] = []
    drawings = 0
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            where = f"{name} cell {index}"
            if output.output_type == "error":
                problems.append(f"{where} raised {output.ename}: {output.evalue}")
            elif output.output_type == "stream" and output.name == "stderr":
                problems.append(f"{where} wrote to stderr: {output.text[:300]!r}")
            elif output.output_type in ("display_data", "execute_result"):
                drawings += _is_drawing(output.data, where, problems)
    assert problems == []
    assert drawings >= DRAWINGS[name]


def _is_drawing(data: dict[str, Any], where: str, problems: list[str]) -> int:
    """1 for a drawing (a ``SpanGraph`` or ``LogDAG`` display); a drawing without SVG
    (DOT source instead, or an image of another type) is a problem."""
    text = str(data.get("text/plain", ""))
    drawn = "image/svg+xml" in data or text.startswith(("digraph", "<graph:"))
    drawn = drawn or any(kind.startswith("image/") for kind in data)
    if drawn and "image/svg+xml" not in data:
        problems.append(f"{where} shows a drawing as {sorted(data)}, not image/svg+xml")
    return int(drawn)
