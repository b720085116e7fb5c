"""Pictures a person can read: node labels (the user's, or structural with a content
hint only with capture on), the legend, a sampler's attempts marked passed, rejected
or chosen (with scores, judge calls linked to what they judged), the producers' span
ids on node spans, and ``render``'s formats. Counts and structure, not pixels."""

from __future__ import annotations

import importlib.util
import itertools
import json
import pathlib
import shutil
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import spangraph.tracing
from spangraph import CBlock, Component, Span, compile, generate, options, run, task
from spangraph.engines import ScriptedEngine
from spangraph.nodes import Requirement
from spangraph.sampling import BestOfN, RejectionSampler, ValidationResult, sample
from spangraph.tracing import LogDAG, LogNode
from spangraph.tracing import _provider as provider_module
from spangraph.tracing import _semconv as sc

from ..cli_helpers import spangraph as spangraph_cli
from .test_semconv import check_against_table
from .test_tracing import run_scenario

ROOT = pathlib.Path(__file__).resolve().parents[2]
CAPTURE = pytest.mark.parametrize("captured", [False, True], ids=["capture-off", "capture-on"])

DOCUMENT = "The shared document, held in the KV cache: " + "lorem ipsum " * 40
QUESTIONS = [
    "Which version of the License is this?",
    "Does the License grant a patent license?",
    "Is the Work provided with a warranty?",
    "Must a redistribution include a copy of the License?",
]
REPLY = '{"answer": "the secret output text"}'


class Answer(Component[str]):
    template = "{document}\n\nQuestion: {question}\nAnswer as JSON:"
    document: Span
    question: Span


class Combine(Component[str]):
    template = "Facts:\n{answers}\n\nIn one sentence:"
    answers: list[Span]


@pytest.fixture(autouse=True)
def capture_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with content capture off, whatever the environment says."""
    monkeypatch.delenv(sc.CAPTURE_CONTENT_ENV, raising=False)
    monkeypatch.setattr(spangraph.tracing, "capture_content", None)


def set_capture(monkeypatch: pytest.MonkeyPatch, captured: bool) -> None:
    monkeypatch.setattr(spangraph.tracing, "capture_content", "SPAN_ONLY" if captured else None)


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(provider_module.trace, "get_tracer_provider", lambda: provider)
    yield memory
    provider.shutdown()


def demo_shaped(labels: list[str] | None = None) -> Any:
    """The demo's shape: four questions over one cached document, combined."""
    document = CBlock(DOCUMENT, cache=True)
    with options(temperature=0, max_tokens=20):
        answers = [
            generate(
                Answer(document=document, question=CBlock(q)),
                label=labels[i] if labels else None,
            )
            for i, q in enumerate(QUESTIONS)
        ]
        return generate(Combine(answers=answers))


def answer_nodes(log: LogDAG) -> list[LogNode]:
    combine = max(log.nodes.values(), key=lambda n: n.end)
    return [n for n in log.nodes.values() if n is not combine]


def load_demo() -> ModuleType:
    name = "spangraph_example_demo"
    if name not in sys.modules:  # (pydantic looks a generic's module up there)
        spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / "demo.py")
        assert spec is not None and spec.loader is not None
        sys.modules[name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]


# -- labels ---------------------------------------------------------------------------------


def test_the_demos_questions_have_distinct_labels_everywhere() -> None:
    """The demo labels its questions: they differ on the spans, in the LogDAG, in its
    drawing and in the graph's, with content capture off."""
    demo = load_demo()
    summary = demo.build()
    graph = compile(summary)
    result = run(graph, engine=ScriptedEngine(lambda r: REPLY), progress=False)
    labels = [n.label for n in result.log]
    assert sorted(labels) == sorted([*demo.QUESTIONS, "one-sentence summary"])
    drawing = result.log.to_graphviz().source
    graph_drawing = graph.to_graphviz().source
    for label in demo.QUESTIONS:
        assert drawing.count(f'"{label}\\n') == 1
        assert graph_drawing.count(f'"{label}"') == 1


@CAPTURE
def test_default_labels_carry_a_hint_only_with_capture_on(
    monkeypatch: pytest.MonkeyPatch, captured: bool
) -> None:
    """Without ``label=``: with capture on, each answer's label carries the first words
    of its question (not of the cached document), within the hint's width; with it
    off, the four are ``generate(Answer)`` alike, and no question is anywhere."""
    from spangraph.nodes._label import HINT_CHARS

    set_capture(monkeypatch, captured)
    top = demo_shaped()
    graph = compile(top)
    result = run(graph, engine=ScriptedEngine(lambda r: REPLY), progress=False)
    labels = [n.label for n in answer_nodes(result.log)]
    if captured:
        assert len(set(labels)) == 4
        for label in labels:
            base, _, hint = label.partition(" “")
            assert base == "generate(Answer)" and hint.endswith("”")
            assert len(hint) - 1 <= HINT_CHARS
            assert any(q.startswith(hint[:-1].rstrip("…")) for q in QUESTIONS)
        assert "lorem" not in " ".join(labels)
    else:
        assert labels == ["generate(Answer)"] * 4
        sources = result.log.to_graphviz().source + graph.to_graphviz().source
        assert not any(q[:12] in sources for q in QUESTIONS)


@CAPTURE
def test_a_given_label_is_shown_in_both_modes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path, captured: bool
) -> None:
    """``label=`` on ``generate``, ``@task`` and ``sample`` names the node on its span,
    in the LogDAG's drawing and in ``spangraph log``, whatever the capture mode."""
    set_capture(monkeypatch, captured)

    @task(label="count words")
    def count(text: str) -> int:
        return len(text.split())

    asked = generate(CBlock("Say something."), label="say it")
    counted = count(asked)
    sampled = sample(
        CBlock("Give a number."),
        RejectionSampler([Requirement("A number.", validate=str.isdigit)], loop_budget=2),
        label="a number",
    )
    result = run(counted, sampled, engine=ScriptedEngine(lambda r: "42"), progress=False)
    labels = {n.label for n in result.log if n.parent not in result.log.nodes}
    assert labels == {"say it", "count words", "a number"}
    drawing = result.log.to_graphviz().source
    assert all(f'"{label}\\n' in drawing for label in labels)
    trace = result.log.write_otlp_json(tmp_path / "run.otlp.jsonl")
    listed = spangraph_cli("log", trace, "--nodes", home=tmp_path / "home")
    assert listed.code == 0, listed
    assert all(label in listed.out for label in labels)
    shown = spangraph_cli("log", trace, "--node", "count words", home=tmp_path / "home")
    assert shown.code == 0 and "task(" in shown.out, shown


def test_labels_are_checked() -> None:
    with pytest.raises(TypeError, match="label"):
        generate(CBlock("x"), label=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="label"):
        task(label=["x"])  # type: ignore[arg-type]


def test_siblings_with_hints_still_collapse(monkeypatch: pytest.MonkeyPatch) -> None:
    """A large fan-out collapses by structural label: hints (capture on) do not stop it."""
    set_capture(monkeypatch, True)
    src = CBlock("doc")
    many = [generate(Answer(document=src, question=CBlock(f"question {i}"))) for i in range(30)]
    result = run(*many, engine=ScriptedEngine(lambda r: "x"), progress=False)
    source = result.log.to_graphviz().source
    assert "30× generate(Answer)" in source and "question 7" not in source


# -- the legend -----------------------------------------------------------------------------


def legend_of(source: str) -> str:
    (line,) = [line for line in source.splitlines() if line.strip().startswith("legend ")]
    return line


def test_the_legend_lists_what_the_drawing_uses() -> None:
    """A run with a failure, a retry and a skip: each has a legend entry, as has the
    critical path; a clean run's legend has no failure entry; ``legend=False`` none."""
    result, _ = run_scenario()
    legend = legend_of(result.log.to_graphviz().source)
    for entry in ("Legend", ">done<", ">failed<", "retried", "skipped", "critical path"):
        assert entry in legend
    assert "cache hit" not in legend and "chosen" not in legend

    clean = run(demo_shaped(), engine=ScriptedEngine(lambda r: REPLY), progress=False)
    legend = legend_of(clean.log.to_graphviz().source)
    assert ">done<" in legend and ">failed<" not in legend and "skipped" not in legend
    assert "legend" not in clean.log.to_graphviz(legend=False).source


def test_the_legend_shows_cache_hits_and_kv_prefixes(tmp_path: pathlib.Path) -> None:
    """A rerun from the memo draws cache hits (a double outline, said in the legend);
    a generation that reused KV-cached prompt tokens says how many."""
    from spangraph.cache import MemoryStore

    store = MemoryStore()
    first = run(demo_shaped(), engine=ScriptedEngine(lambda r: REPLY), cache=store, progress=False)
    again = run(demo_shaped(), engine=ScriptedEngine(lambda r: REPLY), cache=store, progress=False)
    assert first.cache_hits == 0 and again.cache_hits == 5
    source = again.log.to_graphviz().source
    assert "cache hit" in legend_of(source) and source.count("peripheries=2") == 5
    kv = LogDAG.from_spans(
        [
            _with(r, {sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 300})
            if r.attributes.get(sc.NODE_KIND) == "generation"
            else r
            for r in first.log.records
        ]
    )
    source = kv.to_graphviz().source
    assert "KV 300 tok" in source and "prompt tokens reused" in legend_of(source)


def _with(record: Any, attributes: dict[str, Any]) -> Any:
    import dataclasses

    return dataclasses.replace(record, attributes={**record.attributes, **attributes})


# -- a sampler's attempts ------------------------------------------------------------------


def replies(*texts: str) -> ScriptedEngine:
    """Replies in turn; a judge is always asked the same way and says yes."""
    turn = itertools.cycle(texts)
    return ScriptedEngine(lambda r: "yes" if "Answer yes or no" in r.text else next(turn))


def attempts_of(log: LogDAG) -> list[LogNode]:
    (sampler,) = log.filter(kind="sampler")
    return sorted(
        (n for n in log if n.parent == sampler.key and n.label.startswith("attempt")),
        key=lambda n: n.attributes[sc.SAMPLE_INDEX],
    )


def test_rejection_attempts_are_marked_rejected_passed_and_chosen() -> None:
    """The first attempt fails its validator (rejected, its own fill); the second
    passes and is chosen (marked, with its outline); judge calls hang off the attempt
    they judged."""
    thunk = sample(
        CBlock("Give a number."),
        RejectionSampler(
            [Requirement("A number.", validate=str.isdigit), Requirement("Polite.")],
            loop_budget=3,
        ),
    )
    result = run(thunk, engine=replies("no", "42"), progress=False)
    assert thunk.value == "42"
    first, second = attempts_of(result.log)
    assert first.attributes[sc.VALIDATION_PASSED] is False
    assert first.attributes[sc.SAMPLE_CHOSEN] is False
    assert second.attributes[sc.VALIDATION_PASSED] is True
    assert second.attributes[sc.SAMPLE_CHOSEN] is True
    source = result.log.to_graphviz().source
    from spangraph.tracing._render import CHOSEN_COLOUR, STATUS_COLOURS

    node_lines = {n.key: _line_of(source, n.key) for n in (first, second)}
    assert STATUS_COLOURS["rejected"] in node_lines[first.key]
    assert "rejected" in node_lines[first.key]
    assert CHOSEN_COLOUR in node_lines[second.key]
    assert "chosen · passed" in node_lines[second.key]
    judges = [n for n in result.log if n.label.startswith("judge of ")]
    judge_edges = [e for e in result.log.edges if e.kind == "judge"]
    assert len(judges) == len(judge_edges) == 2
    assert {e.source for e in judge_edges} == {first.key, second.key}
    legend = legend_of(source)
    assert "rejected" in legend and "chose" in legend


def test_best_of_n_scores_and_validation() -> None:
    """BestOfN with a scorer: every sample has its ``facts.validation`` (the score, as a
    passed verdict) and its score on its span and in the drawing; the best is chosen."""
    thunk = sample(CBlock("Say it."), BestOfN(3, lambda text: float(len(text))))
    result = run(thunk, engine=replies("ab", "abcd", "abc"), progress=False)
    assert thunk.value == "abcd"
    for attempt in thunk.facts.attempts:
        ((requirement, verdict),) = attempt.facts.validation or ()
        assert verdict.passed and verdict.score == attempt.facts.score
        assert "<lambda>" in requirement.description
    nodes = attempts_of(result.log)
    assert [n.attributes[sc.SAMPLE_SCORE] for n in nodes] == [2.0, 4.0, 3.0]
    assert [n.attributes[sc.SAMPLE_CHOSEN] for n in nodes] == [False, True, False]
    source = result.log.to_graphviz().source
    assert "chosen · passed · score 4" in source and "score 2" in source


@CAPTURE
def test_sampler_spans_follow_the_pinned_conventions(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch, captured: bool
) -> None:
    set_capture(monkeypatch, captured)
    thunk = sample(
        CBlock("Give a number."),
        RejectionSampler([Requirement("A number.", validate=str.isdigit)], loop_budget=3),
    )
    best = sample(CBlock("Say it."), BestOfN(2, lambda text: 1.0))
    run(thunk, best, engine=replies("no", "42"), progress=False)
    by_sort = check_against_table(list(exporter.get_finished_spans()), captured)
    attempts = [s.attributes for s in by_sort["inference"] if sc.SAMPLE_INDEX in s.attributes]
    assert len(attempts) == 4 and sum(a[sc.SAMPLE_CHOSEN] for a in attempts) == 2


# -- upstream span ids ------------------------------------------------------------------------


def test_upstream_span_ids_are_the_producers_span_ids() -> None:
    """Each node span's ``upstream_span_ids`` are the span ids of the final spans of the
    nodes in its ``upstream``, in that order (a trace viewer's search finds them)."""
    result, _ = run_scenario()
    log = result.log
    final = {n.node_id: n.key for n in log if n.status != "retried"}
    checked = 0
    for node in log:
        upstream = node.attributes[sc.NODE_UPSTREAM]
        ids = node.attributes[sc.NODE_UPSTREAM_SPAN_IDS]
        assert len(ids) == len(upstream)
        if node.status == "skipped":
            continue
        assert ids == [final[u] for u in upstream]
        checked += len(ids)
    assert checked >= 7
    top = next(n for n in log if len(n.attributes[sc.NODE_UPSTREAM]) == 4)
    assert sorted(top.attributes[sc.NODE_UPSTREAM_SPAN_IDS]) == sorted(
        e.source for e in log.edges if e.target == top.key
    )


# -- privacy -------------------------------------------------------------------------------


def privacy_run(exporter: InMemorySpanExporter) -> tuple[str, str]:
    """The demo shape and a sampler whose validator quotes its output; all spans'
    attribute values and status texts, and the DOT sources of the graph and the log."""
    top = demo_shaped()

    def quoted(text: str) -> ValidationResult:
        return ValidationResult(False, f"the validator quotes {text!r}")

    sampled = sample(
        Answer(document=CBlock("doc"), question=CBlock("Which colour?")),
        RejectionSampler([Requirement("Quoted.", validate=quoted)], loop_budget=2),
    )
    graph = compile(top, sampled)
    result = run(graph, engine=ScriptedEngine(lambda r: REPLY), progress=False)
    texts = []
    for span in exporter.get_finished_spans():
        texts.append(span.name + " " + (span.status.description or ""))
        texts.extend(json.dumps(v) for v in (span.attributes or {}).values())
    drawings = graph.to_graphviz().source + result.log.to_graphviz().source
    return " ".join(texts), drawings


@CAPTURE
def test_content_reaches_spans_and_drawings_only_with_capture_on(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch, captured: bool
) -> None:
    set_capture(monkeypatch, captured)
    spans, drawings = privacy_run(exporter)
    prompt_words = [q[:14] for q in QUESTIONS] + ["Which colour", "lorem ipsum"]
    secrets = ["secret output", "validator quotes"]
    if captured:
        assert all(q[:14] in drawings for q in QUESTIONS)  # the hints
        assert "validator quotes" in drawings  # the validation reason
        assert "secret output" in spans
    else:
        for text in prompt_words + secrets:
            assert text not in spans, text
            assert text not in drawings, text


# -- render ----------------------------------------------------------------------------------


def test_render_infers_the_format_from_the_suffix(tmp_path: pathlib.Path) -> None:
    graph = compile(demo_shaped())
    result = run(graph, engine=ScriptedEngine(lambda r: REPLY), progress=False)
    for drawn in (graph, result.log):
        dot = drawn.render(tmp_path / "x.dot")
        assert dot.suffix == ".dot" and dot.read_text().startswith("digraph")
        forced = drawn.render(tmp_path / "y.txt", format="dot")
        assert forced.read_text().startswith("digraph")
        with pytest.raises(ValueError, match="format"):
            drawn.render(tmp_path / "z.svg", format="gif")
        if shutil.which("dot") is not None:
            png = drawn.render(tmp_path / "x.png")
            assert png.read_bytes().startswith(b"\x89PNG")
            assert drawn.render(tmp_path / "x.pdf").read_bytes().startswith(b"%PDF")
            assert "<svg" in drawn.render(tmp_path / "noext").read_text()


def test_the_demo_uses_only_public_names() -> None:
    source = (ROOT / "examples" / "demo.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("from ", "import "))]
    assert not [line for line in imports if "._" in line or "import _" in line]


def _line_of(source: str, key: str) -> str:
    (line,) = [line for line in source.splitlines() if line.strip().startswith(f"n_{key} [")]
    return line


def test_a_run_shows_its_summary_and_drawing_in_a_notebook(tmp_path: pathlib.Path) -> None:
    result = run(demo_shaped(), engine=ScriptedEngine(lambda r: REPLY), progress=False)
    bundle = result._repr_mimebundle_()
    assert bundle["text/plain"] == repr(result)
    if shutil.which("dot") is not None:
        assert bundle["image/svg+xml"].lstrip().startswith(("<?xml", "<svg", "<!DOCTYPE"))
        assert result.summary() in bundle["text/html"] and "<svg" in bundle["text/html"]
    untraced = run(generate(CBlock("x")), engine=ScriptedEngine("y"), trace=False, progress=False)
    assert set(untraced._repr_mimebundle_()) == {"text/plain"}
