from __future__ import annotations

import pathlib

import pytest

from spangraph import CBlock, generate, run
from spangraph.cli import main
from spangraph.engines import ScriptedEngine


def test_log_command(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(generate(CBlock("hello")), engine=ScriptedEngine("hi"), progress=False)
    assert result.log is not None
    path = result.log.write_otlp_json(tmp_path / "trace.jsonl")
    assert main(["log", str(path), "--render", str(tmp_path / "t.svg")]) == 0
    out = capsys.readouterr().out
    assert "generations 1" in out and "critical path" in out
    assert main(["log", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
