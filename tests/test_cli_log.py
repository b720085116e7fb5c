"""``spangraph log FILE``, through the console script: summary and critical path, the node
table, failures, one node's details, and drawings with and without graphviz."""

from __future__ import annotations

import pathlib
import shutil

import pytest

from spangraph import CBlock, Component, Span, generate, run, task
from spangraph.engines import ScriptedEngine
from spangraph.tracing import LogDAG
from tests.cli_helpers import spangraph


class Ask(Component[str]):
    template = "Question: {q}"
    q: Span


@task
def check(text: str) -> str:
    raise RuntimeError("the check always fails")


@pytest.fixture
def home(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "home"


@pytest.fixture
def trace(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """A run with two generations (content captured) and a failed task."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    first = generate(Ask(q=CBlock("What is red?")))
    second = generate(Ask(q=first))
    result = run(
        second,
        check(first),
        engine=ScriptedEngine("a colour"),
        on_error="continue",
        progress=False,
    )
    assert result.log is not None and result.status == "partial"
    return result.log.write_otlp_json(tmp_path / "run.otlp.jsonl")


def test_summary_nodes_and_failures(trace: pathlib.Path, home: pathlib.Path) -> None:
    result = spangraph("log", trace, "--nodes", "--failed", home=home)
    assert result.code == 0, result
    lines = result.out.splitlines()
    assert "generations 2 (attempts 2), tasks 1" in result.out and "1 failed" in result.out
    assert any(line.startswith("critical path (") for line in lines)
    header = next(line for line in lines if line.startswith("SPAN "))
    assert header.split() == [
        "SPAN", "NODE", "KIND", "STATUS", "TRY", "SECONDS", "IN", "OUT", "CACHE", "LABEL"
    ]  # fmt: skip
    dag = LogDAG.from_otlp_json(trace)
    for node in dag:
        row = next(line for line in lines if line.startswith(node.key))
        assert row.split()[2:4] == [node.kind, node.status]
    failed = next(n for n in dag if n.status == "failed")
    assert f"{failed.key}  task(check)" in result.out
    assert "RuntimeError: the check always fails" in result.out


def test_one_node_with_its_prompt_and_output(trace: pathlib.Path, home: pathlib.Path) -> None:
    dag = LogDAG.from_otlp_json(trace)
    generations = [n for n in dag if n.kind == "generation"]
    second = next(n for n in generations if "a colour" in n.content.get("input", ""))
    for wanted in (second.key, second.node_id, second.node_id[:8]):
        result = spangraph("log", trace, "--node", wanted, home=home)
        assert result.code == 0, result
        assert f"span:      {second.key}" in result.out
        assert "  spangraph.node.kind = generation" in result.out
        assert "prompt:\n  user: Question: a colour\n" in result.out
        assert "output:\n  assistant: a colour\n" in result.out
    task = spangraph("log", trace, "--node", "task(check)", home=home)
    assert task.code == 0 and "error:     RuntimeError: the check always fails" in task.out
    several = spangraph("log", trace, "--node", "generate(Ask)", home=home)
    assert several.code == 2 and "names 2 nodes" in several.err and second.key in several.err
    assert several.out == ""  # refused before anything is printed


def test_without_content_capture_it_says_how_to_capture(
    tmp_path: pathlib.Path, home: pathlib.Path
) -> None:
    result = run(generate(CBlock("hello")), engine=ScriptedEngine("hi"), progress=False)
    assert result.log is not None
    trace = result.log.write_otlp_json(tmp_path / "plain.otlp.jsonl")
    shown = spangraph("log", trace, "--node", next(iter(result.log)).key, home=home)
    assert shown.code == 0, shown
    assert "prompt: not captured: run with OTEL_INSTRUMENTATION_GENAI_CAPTURE" in shown.out


def test_dot_needs_no_graphviz_and_svg_says_what_is_missing(
    trace: pathlib.Path, tmp_path: pathlib.Path, home: pathlib.Path
) -> None:
    no_graphviz = {"PATH": str(tmp_path / "empty-path")}  # no dot program on it
    dot = spangraph(
        "log", trace, "--format", "dot", "-o", tmp_path / "a.gv", home=home, env=no_graphviz
    )
    assert dot.code == 0, dot
    assert (tmp_path / "a.gv").read_text().startswith("digraph")
    legacy = spangraph("log", trace, "--render", tmp_path / "b.dot", home=home, env=no_graphviz)
    assert legacy.code == 0 and (tmp_path / "b.dot").read_text().startswith("digraph")
    svg = spangraph("log", trace, "-o", tmp_path / "c.svg", home=home, env=no_graphviz)
    assert svg.code == 1, svg
    assert "graphviz's dot program is not installed" in svg.err and "Traceback" not in svg.err
    assert not (tmp_path / "c.svg").exists()
    assert (tmp_path / "c.dot").read_text().startswith("digraph")


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is not installed")
def test_svg_png_and_pdf_with_graphviz(
    trace: pathlib.Path, tmp_path: pathlib.Path, home: pathlib.Path
) -> None:
    starts = {"svg": b"<?xml", "png": b"\x89PNG", "pdf": b"%PDF"}
    for fmt, magic in starts.items():
        out = tmp_path / f"drawing.{fmt}"
        result = spangraph("log", trace, "-o", out, home=home)
        assert result.code == 0 and f"drawn to {out}" in result.out, result
        assert out.read_bytes().startswith(magic)
    named = spangraph("log", trace, "--format", "svg", "-o", tmp_path / "drawing", home=home)
    assert named.code == 0 and (tmp_path / "drawing").read_bytes().startswith(b"<?xml")
