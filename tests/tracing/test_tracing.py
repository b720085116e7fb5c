from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import spangraph.tracing
from spangraph import CBlock, Component, RetryPolicy, Span, generate, options, run, task
from spangraph.engines import OpenAIEngine, ScriptedEngine, TransientEngineError
from spangraph.tracing import LogDAG
from spangraph.tracing import _provider as provider_module

ROOT = pathlib.Path(__file__).resolve().parents[2]
GOLDEN = pathlib.Path(__file__).with_name("golden_small.dot")


class Op(Component[str]):
    template = "{label}: {inputs}"
    inputs: list[Span]
    label: str


async def _no_sleep(seconds: float) -> None:
    return None


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """An application-configured SDK provider (as if set globally) with an in-memory exporter."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(provider_module.trace, "get_tracer_provider", lambda: provider)
    yield memory
    provider.shutdown()


def scenario(
    engine_fails: bool = True, latency: Callable[[Any], float] | float = 0.0
) -> tuple[list[Any], dict[str, Any], ScriptedEngine]:
    """Fan-out from src, fan-in at top, a retried node, and a failing branch."""
    state = {"flaky": 1}

    def reply(request: Any) -> str:
        label = request.text.split(":")[0]
        if label == "flaky" and state["flaky"]:
            state["flaky"] -= 1
            raise TransientEngineError("503 overloaded")
        if label == "bad" and engine_fails:
            raise ValueError("refused")
        return label.upper()

    with options(temperature=0, max_tokens=5):
        src = generate(Op(inputs=["doc"], label="src"))
        fan = [generate(Op(inputs=[src, str(i)], label=f"fan{i}")) for i in range(3)]
        flaky = generate(Op(inputs=[src], label="flaky"))
        bad = generate(Op(inputs=[src], label="bad"))
        after = generate(Op(inputs=[bad], label="after"))
        top = generate(Op(inputs=[*fan, flaky], label="top"))
    nodes = {"src": src, "flaky": flaky, "bad": bad, "after": after, "top": top}
    nodes.update({f"fan{i}": t for i, t in enumerate(fan)})
    return [top, after], nodes, ScriptedEngine(reply, latency=latency)


def run_scenario(latency: Callable[[Any], float] | float = 0.0) -> Any:
    roots, nodes, engine = scenario(latency=latency)
    result = run(
        *roots,
        engine=engine,
        on_error="continue",
        progress=False,
        name="scenario",
        retry=RetryPolicy(sleep=_no_sleep, jitter=0),
    )
    return result, nodes


def test_spans_parentage_links_and_attributes(exporter: InMemorySpanExporter) -> None:
    tracer = trace.get_tracer("app")
    app_provider = provider_module.trace.get_tracer_provider()
    with app_provider.get_tracer("app").start_as_current_span("application") as app_span:
        result, nodes = run_scenario()
    assert tracer is not None
    spans = [s for s in exporter.get_finished_spans() if s.name != "application"]
    by_kind: dict[str, list[Any]] = {}
    for span in spans:
        by_kind.setdefault(span.attributes["spangraph.node.kind"], []).append(span)
    # 1 run + src, 3 fans, flaky (2 attempts), bad, top, after (skipped) = 10 spans
    assert len(spans) == 10
    (run_span,) = by_kind["run"]
    assert run_span.name == "invoke_workflow scenario"
    assert run_span.parent.span_id == app_span.get_span_context().span_id
    assert run_span.attributes["openinference.span.kind"] == "CHAIN"
    for span in by_kind["generation"]:
        assert span.parent.span_id == run_span.context.span_id
        assert span.context.trace_id == app_span.get_span_context().trace_id
    by_label = {}
    for span in by_kind["generation"]:
        node_id = span.attributes["spangraph.node.id"]
        label = next(k for k, t in nodes.items() if t.id == node_id)
        by_label.setdefault(label, []).append(span)
    ok = by_label["top"][0]
    assert ok.name == "text_completion scripted"
    assert ok.kind == trace.SpanKind.INTERNAL
    attrs = ok.attributes
    assert attrs["gen_ai.operation.name"] == "text_completion"
    assert attrs["gen_ai.provider.name"] == "spangraph"
    assert attrs["gen_ai.request.model"] == "scripted"
    assert attrs["gen_ai.request.temperature"] == 0.0
    assert attrs["gen_ai.request.max_tokens"] == 5
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == ("stop",)
    for key in (
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.cache_read.input_tokens",
    ):
        assert isinstance(attrs[key], int)
    assert attrs["gen_ai.usage.input_tokens"] > 0
    assert attrs["spangraph.cache.hit"] is False
    assert attrs["spangraph.span.path"] == "roots[0]:generate(Op)"
    assert attrs["openinference.span.kind"] == "LLM"
    # Links are the graph's producer edges; the upstream ids are also an attribute.
    span_by_id = {s.context.span_id: s for s in spans}
    linked = {span_by_id[link.context.span_id].attributes["spangraph.node.id"] for link in ok.links}
    expected = {nodes[k].id for k in ("fan0", "fan1", "fan2", "flaky")}
    assert linked == expected == set(attrs["spangraph.node.upstream"])
    assert {link.attributes["spangraph.edge.kind"] for link in ok.links} == {"part"}
    # The retry: two attempts, the second linked to the first.
    first, second = sorted(by_label["flaky"], key=lambda s: s.attributes["spangraph.node.attempt"])
    assert first.attributes["spangraph.node.status"] == "retried"
    assert first.status.status_code == trace.StatusCode.ERROR
    assert first.attributes["error.type"] == "TransientEngineError"
    assert any(
        link.context.span_id == first.context.span_id
        and link.attributes["spangraph.edge.kind"] == "retry"
        for link in second.links
    )
    # The failure and what it skipped.
    (bad,) = by_label["bad"]
    assert bad.status.status_code == trace.StatusCode.ERROR
    assert bad.attributes["error.type"] == "ValueError"
    (after,) = by_label["after"]
    assert after.attributes["spangraph.node.status"] == "skipped"
    assert "failed" in after.attributes["spangraph.skip.reason"]
    # No content by default.
    assert all("gen_ai.input.messages" not in s.attributes for s in spans)
    assert result.log is not None and len(result.log) == 9


def test_content_only_when_opted_in(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    run_scenario()
    spans = [
        s
        for s in exporter.get_finished_spans()
        if s.attributes.get("spangraph.node.status") == "done"
        and s.attributes.get("spangraph.node.kind") == "generation"
    ]
    assert spans
    for span in spans:
        messages = json.loads(span.attributes["gen_ai.input.messages"])
        assert messages[0]["role"] == "user" and messages[0]["parts"][0]["content"]
        output = json.loads(span.attributes["gen_ai.output.messages"])
        assert output[0]["role"] == "assistant"
    exporter.clear()
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
    monkeypatch.setattr(spangraph.tracing, "capture_content", "SPAN_ONLY")
    run_scenario()
    assert any("gen_ai.input.messages" in s.attributes for s in exporter.get_finished_spans())


def test_api_key_never_in_any_attribute(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    secret = "sk-trace-secret-987"
    monkeypatch.setattr(spangraph.tracing, "capture_content", "SPAN_ONLY")
    engine = OpenAIEngine(f"http://127.0.0.1:{port}/v1", api_key=secret, model="m")
    thunk = generate(CBlock("hello"), options={"max_tokens": 2})
    run(thunk, engine=engine, on_error="continue", progress=False)
    spans = exporter.get_finished_spans()
    generation = [s for s in spans if s.attributes.get("spangraph.node.kind") == "generation"]
    assert generation and generation[0].kind == trace.SpanKind.CLIENT
    assert generation[0].attributes["server.address"] == "127.0.0.1"
    assert generation[0].attributes["server.port"] == port
    assert generation[0].attributes["error.type"] == "EngineUnavailable"
    for span in spans:
        assert secret not in json.dumps(dict(span.attributes), default=str)
        assert secret not in (span.status.description or "")


USER_PROVIDER = textwrap.dedent(
    """
    import json
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from spangraph import CBlock, generate, run, task
    from spangraph.engines import ScriptedEngine

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(memory))
    trace.set_tracer_provider(provider)

    @task(thread=True)
    def in_a_thread(text):
        with trace.get_tracer("user").start_as_current_span("user work in thread"):
            return text.upper()

    with trace.get_tracer("app").start_as_current_span("request"):
        thunk = generate(CBlock("hi"))
        result = run(in_a_thread(thunk), engine=ScriptedEngine("yo"), progress=False)
    provider.force_flush()
    spans = {s.name: s for s in memory.get_finished_spans()}
    run_span = spans["invoke_workflow spangraph"]
    user = spans["user work in thread"]
    print(json.dumps({
        "names": sorted(spans),
        "run_parent_is_request": run_span.parent.span_id == spans["request"].context.span_id,
        "thread_span_under_run": user.parent.span_id == run_span.context.span_id,
        "log_nodes": len(result.log),
    }))
    """
)


def test_user_configured_provider_receives_the_spans() -> None:
    out = subprocess.run(
        [sys.executable, "-c", USER_PROVIDER], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    data = json.loads(out.strip().splitlines()[-1])
    assert "invoke_workflow spangraph" in data["names"]
    assert "text_completion scripted" in data["names"]
    assert data["run_parent_is_request"] and data["thread_span_under_run"]
    assert data["log_nodes"] == 2


def test_no_global_provider_is_installed_behind_the_apps_back() -> None:
    result, _ = run_scenario()
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    assert result.log is not None and result.log.totals().generations == 7


def test_logdag_queries() -> None:
    # The chain through top takes 20 ms more than any other: instant generations alone
    # leave the longest chain to a few microseconds of chance (the failing branch's, once).
    result, nodes = run_scenario(lambda request: 0.02 if request.text.startswith("top") else 0.0)
    dag = result.log
    totals = dag.totals()
    assert (totals.generations, totals.attempts, totals.failures, totals.skipped) == (7, 8, 1, 1)
    assert totals.input_tokens > 0 and totals.cache_hits == 0
    path = dag.critical_path()
    assert path[0].node_id == nodes["src"].id and path[-1].node_id == nodes["top"].id
    assert {n.node_id for n in dag.filter(status="failed")} == {nodes["bad"].id}
    assert len(dag.filter(kind="generation")) == 9
    kinds = {e.kind for e in dag.edges}
    assert kinds == {"part", "retry"}


def test_state_logs_map_spans_to_their_logdags() -> None:
    engine = ScriptedEngine(lambda r: "ok")
    state = options(temperature=0)
    with state:
        a = generate(Op(inputs=["x"], label="a"))
        b = generate(Op(inputs=[a], label="b"))
    run(b, engine=engine, progress=False)
    logs = state.logs()
    assert list(logs) == [a, b]
    assert isinstance(logs[b], LogDAG) and len(logs[b]) == 2 and len(logs[a]) == 1


def test_otlp_json_round_trip(tmp_path: pathlib.Path) -> None:
    result, _ = run_scenario()
    path = result.log.write_otlp_json(tmp_path / "trace.otlp.jsonl")
    raw = json.loads(path.read_text().splitlines()[0])
    span = raw["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert re.fullmatch(r"[0-9a-f]{32}", span["traceId"])
    assert re.fullmatch(r"[0-9a-f]{16}", span["spanId"])
    assert isinstance(span["kind"], int) and isinstance(span["status"]["code"], int)
    again = LogDAG.from_otlp_json(path)
    assert again == result.log
    assert again.records == result.log.records
    bad = tmp_path / "bad.jsonl"
    bad.write_text(path.read_text().replace(span["spanId"], "AAECAwQFBgc=", 1))
    with pytest.raises(ValueError, match="16 hex digits"):
        LogDAG.from_otlp_json(bad)


def _normalise(dot_source: str) -> str:
    names: dict[str, str] = {}

    def rename(match: re.Match[str]) -> str:
        return names.setdefault(match.group(0), f"n{len(names)}")

    return re.sub(r"[ng]_[0-9a-f]{16}", rename, dot_source)


def test_dot_matches_golden_file() -> None:
    engine = ScriptedEngine(lambda r: r.text.split(":")[0].upper())
    src = generate(Op(inputs=["doc"], label="src"))
    pair = [generate(Op(inputs=[src], label=f"p{i}")) for i in range(2)]
    top = generate(Op(inputs=pair, label="top"))
    result = run(top, engine=engine, progress=False)
    # Timings (and so the critical path, which depends on them) are left out.
    source = _normalise(result.log.to_graphviz(timings=False, critical_path=False).source)
    if os.environ.get("SPANGRAPH_UPDATE_GOLDEN"):
        GOLDEN.write_text(source)
    assert source == GOLDEN.read_text()


def test_only_the_critical_path_s_own_edges_are_highlighted() -> None:
    """a -> b -> c is the chain; the edge a -> c joins two of its nodes but is not on it."""
    from spangraph.tracing._render import CRITICAL_COLOUR

    engine = ScriptedEngine(lambda r: "x")
    a = generate(Op(inputs=["doc"], label="a"), label="a")
    b = generate(Op(inputs=[a], label="b"), label="b")
    c = generate(Op(inputs=[a, b], label="c"), label="c")
    dag = run(c, engine=engine, progress=False).log
    assert [n.label for n in dag.critical_path()] == ["a", "b", "c"]
    graph = dag.to_graphviz(timings=False)
    ids = {n.label: n.key for n in dag.nodes.values()}
    edges = [line.strip() for line in graph.body if "->" in line]
    coloured = {line.split(" [")[0] for line in edges if CRITICAL_COLOUR in line}
    assert coloured == {f"n_{ids['a']} -> n_{ids['b']}", f"n_{ids['b']} -> n_{ids['c']}"}
    assert len(edges) == 3


def test_svg_renders_and_falls_back_without_dot(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, _ = run_scenario()
    svg = result.log.render(tmp_path / "trace.svg")
    assert svg.suffix == ".svg" and "<svg" in svg.read_text()
    assert "image/svg+xml" in result.log._repr_mimebundle_()
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    bundle = result.log._repr_mimebundle_()
    assert "image/svg+xml" not in bundle and bundle["text/plain"].startswith("digraph")
    fallback = result.log.render(tmp_path / "again.svg")
    assert fallback.suffix == ".dot" and fallback.read_text().startswith("digraph")


def test_large_fan_out_collapses_siblings() -> None:
    from spangraph.tracing import COLLAPSE_THRESHOLD

    engine = ScriptedEngine(lambda r: "x")
    src = generate(Op(inputs=["doc"], label="src"))
    many = [generate(Op(inputs=[src, str(i)], label="leaf")) for i in range(1000)]
    top = generate(Op(inputs=many, label="top"))
    result = run(top, engine=engine, progress=False)
    source = result.log.to_graphviz().source
    assert "1000× generate(Op)" in source and "collapsed" in source
    assert source.count("->") < 10
    assert COLLAPSE_THRESHOLD < 1000


def test_tasks_and_dynamic_edges_in_the_log() -> None:
    engine = ScriptedEngine(lambda r: r.text.upper())

    @task
    def fan(words: list[str]) -> list[Any]:
        return [generate(CBlock(w)) for w in words]

    top = fan(["a", "b"])
    result = run(top, engine=engine, progress=False)
    dag = result.log
    (task_node,) = dag.filter(kind="task")
    assert task_node.label.startswith("task(")
    dynamic = [e for e in dag.edges if e.kind == "dynamic"]
    assert len(dynamic) == 2 and all(e.target == task_node.key for e in dynamic)


@pytest.mark.real
def test_real_engine_spans_carry_real_usage(llama: Any) -> None:
    thunk = generate(CBlock("The capital of France is"), options={"max_tokens": 5})
    result = run(thunk, engine=llama, progress=False)
    (node,) = result.log.filter(kind="generation")
    assert node.input_tokens > 0 and node.output_tokens > 0
    assert node.attributes["gen_ai.provider.name"] == "llama.cpp"
    assert node.name.startswith("text_completion gemma-3-270m")


def test_trace_off_has_no_log() -> None:
    result = run(generate(CBlock("x")), engine=ScriptedEngine("y"), trace=False, progress=False)
    assert result.log is None and result.events == []
    anyio.run(anyio.sleep, 0)


def _app_provider(
    monkeypatch: pytest.MonkeyPatch, **settings: Any
) -> tuple[TracerProvider, InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(**settings)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(provider_module.trace, "get_tracer_provider", lambda: provider)
    return provider, memory


def test_node_spans_follow_the_providers_link_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace import SpanLimits

    provider, memory = _app_provider(monkeypatch, span_limits=SpanLimits(max_links=2))
    result, nodes = run_scenario()
    provider.shutdown()
    top_id = nodes["top"].id
    spans = memory.get_finished_spans()
    scopes = {(s.instrumentation_scope.name, s.instrumentation_scope.version) for s in spans}
    assert len(scopes) == 1  # run span (tracer API) and node spans (sink) alike
    (top,) = [s for s in spans if (s.attributes or {}).get("spangraph.node.id") == top_id]
    upstream = top.attributes["spangraph.node.upstream"]
    assert isinstance(upstream, tuple) and len(upstream) == 4  # three fans and flaky
    assert len(top.links) == 2  # cut to the provider's limit; the attribute keeps all
    assert result.log is not None
    (logged,) = [n for n in result.log if n.node_id == top_id]
    assert len(result.log.upstream(logged.key)) == 4


def test_unsampled_run_exports_nothing_but_keeps_its_log(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    provider, memory = _app_provider(monkeypatch, sampler=ALWAYS_OFF)
    result, _ = run_scenario()
    provider.shutdown()
    assert memory.get_finished_spans() == ()
    assert result.log is not None and result.log.totals().generations == 7


def test_spans_go_through_the_tracer_without_the_sdks_processor_fan_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With an SDK that has no ``_active_span_processor``, no SpanSink: the tracer API."""
    monkeypatch.setattr(provider_module, "hasattr", lambda obj, name: False, raising=False)
    provider, memory = _app_provider(monkeypatch)
    assert isinstance(provider_module.emission().sink, provider_module.TracerSink)
    result, nodes = run_scenario()
    provider.shutdown()
    spans = memory.get_finished_spans()
    top_id = nodes["top"].id
    (top,) = [s for s in spans if (s.attributes or {}).get("spangraph.node.id") == top_id]
    assert len(top.links) == 4 and top.parent is not None
    assert result.log is not None and result.log.totals().generations == 7


def _top_span(memory: InMemorySpanExporter, nodes: dict[str, Any]) -> Any:
    (top,) = [
        s
        for s in memory.get_finished_spans()
        if (s.attributes or {}).get("spangraph.node.id") == nodes["top"].id
    ]
    return top


def test_sink_spans_are_the_sdks_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sink's shortcuts (a span context built as its tuple, ``ReadableSpan`` built
    positionally, links made without their constructor) hold for this SDK, and make
    what the SDK's constructors make."""
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import Link, SpanContext

    assert provider_module._FAST_CONTEXT and provider_module._POSITIONAL
    assert provider_module._FAST_LINK
    provider, memory = _app_provider(monkeypatch)
    result, nodes = run_scenario()
    top = _top_span(memory, nodes)
    context, parent = top.context, top.parent
    assert type(context) is SpanContext and type(top) is ReadableSpan
    assert context == SpanContext(
        parent.trace_id, context.span_id, False, parent.trace_flags, parent.trace_state
    )
    assert context.is_valid and not context.is_remote and context.trace_flags.sampled
    assert top.start_time < top.end_time and top.instrumentation_scope.name == "spangraph"
    assert top.resource is provider.resource and top.events == ()
    for link in top.links:
        assert type(link) is Link and vars(link) == vars(Link(link.context, link.attributes))
        assert link.context.is_valid and link.attributes["spangraph.edge.kind"] == "part"
    # Without the shortcuts (another API or SDK version), the same spans.
    monkeypatch.setattr(provider_module, "_FAST_CONTEXT", False)
    monkeypatch.setattr(provider_module, "_POSITIONAL", False)
    monkeypatch.setattr(provider_module, "_FAST_LINK", False)
    memory.clear()
    again, slow_nodes = run_scenario()
    slow = _top_span(memory, slow_nodes)
    assert slow.context.is_valid and slow.parent.trace_id == slow.context.trace_id
    assert dict(slow.attributes).keys() == dict(top.attributes).keys()
    assert len(slow.links) == len(top.links) == 4
    assert again.log is not None and len(again.log) == len(result.log) == 9
    provider.shutdown()


def test_a_processor_added_later_receives_node_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    provider, first = _app_provider(monkeypatch)
    run_scenario()
    later = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(later))
    first.clear()
    result, nodes = run_scenario()
    provider.shutdown()
    assert len(later.get_finished_spans()) == 10  # the run span and nine node spans
    assert _top_span(later, nodes) is _top_span(first, nodes)
    assert result.log is not None and len(result.log) == 9


def test_spans_reach_another_fan_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """With another fan-out than the SDK's own (a subclass, say), spans go through it
    (the run's collector among its processors)."""
    from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor

    class Fanout(SynchronousMultiSpanProcessor):
        pass

    memory = InMemorySpanExporter()
    provider = TracerProvider(active_span_processor=Fanout())
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(provider_module.trace, "get_tracer_provider", lambda: provider)
    sink = provider_module.emission().sink
    assert sink is not None and not sink._direct
    result, nodes = run_scenario()
    provider.shutdown()
    assert len(memory.get_finished_spans()) == 10
    assert len(_top_span(memory, nodes).links) == 4
    assert result.log is not None and result.log.totals().generations == 7


def test_upstream_fast_path_agrees_with_the_walk() -> None:
    """``_producers`` (two levels deep, the usual node) gives the ids the general walk
    (``upstream``) gives, all ``part`` edges, and declines (None) for deeper nodes."""
    from spangraph import compile
    from spangraph.graph._traced import TracedSpanGraph
    from spangraph.tracing._graph import NodeFacts, _producers, upstream

    src = generate(Op(inputs=["doc"], label="src"))
    nested = Op(inputs=[Op(inputs=[src, CBlock("deep")], label="inner"), "x"], label="outer")
    mid = generate(Op(inputs=[src, CBlock("leaf"), src], label="mid"))
    deep = generate(nested)
    top = generate(Op(inputs=[mid, deep, Op(inputs=[mid], label="wrap")], label="top"))
    graph = compile(top)
    nodes = TracedSpanGraph(graph).nodes
    fast = declined = 0
    for info in graph.nodes():
        ids, kinds = upstream(nodes, info)
        quick = _producers(nodes, info.inputs)
        if quick is None:
            declined += 1
        else:
            fast += 1
            assert quick == ids and set(kinds) <= {"part"}
        facts = NodeFacts.of(TracedSpanGraph(graph), info.id)
        assert (facts.upstream, facts.upstream_kinds) == (ids, kinds)
    assert fast and declined  # both ways were taken
    assert _producers(nodes, graph.node(mid).inputs) == (graph.node(src).id,)
    assert _producers(nodes, graph.node(top).inputs) is None  # "wrap" is a level deeper


def test_span_sink_agrees_with_the_tracer_sink(monkeypatch: pytest.MonkeyPatch) -> None:
    """The spans ``SpanSink`` builds as finished ``ReadableSpan``s are those the tracer
    API makes (``TracerSink``, its reference, used without the SDK's fan-out): the
    same names, kinds, attributes, statuses, parents, and links to the same spans
    with the same attributes; and the two runs' LogDAGs agree."""

    def traced_run() -> tuple[dict[tuple[Any, ...], Any], Any]:
        provider, memory = _app_provider(monkeypatch)
        result, _ = run_scenario()
        provider.shutdown()
        spans = memory.get_finished_spans()
        node_of = {s.context.span_id: _node_key(s) for s in spans}
        seen = {}
        for span in spans:
            attributes = dict(span.attributes or {})
            attributes.pop("spangraph.run.id")
            # Span ids differ between runs: the nodes whose spans they are stand in.
            attributes["spangraph.node.upstream_span_ids"] = tuple(
                node_of[int(h, 16)] if h else None
                for h in attributes.get("spangraph.node.upstream_span_ids", ())
            )
            seen[_node_key(span)] = (
                span.name,
                span.kind,
                attributes,
                (span.status.status_code, span.status.description),
                node_of.get(span.parent.span_id) if span.parent is not None else None,
                [
                    (node_of[link.context.span_id], dict(link.attributes or {}))
                    for link in span.links
                ],
                span.start_time <= span.end_time,
            )
        return seen, result.log

    through_sink, sink_log = traced_run()
    assert isinstance(provider_module.emission().sink, provider_module.SpanSink)
    monkeypatch.setattr(provider_module, "hasattr", lambda obj, name: False, raising=False)
    through_tracer, tracer_log = traced_run()
    assert isinstance(provider_module.emission().sink, provider_module.TracerSink)
    assert len(through_sink) == 10  # the run span and nine node spans
    assert through_sink == through_tracer
    assert sink_log is not None and tracer_log is not None
    assert len(sink_log) == len(tracer_log) == 9
    assert sink_log.totals() == tracer_log.totals()
    assert sorted(e.kind for e in sink_log.edges) == sorted(e.kind for e in tracer_log.edges)


def _node_key(span: Any) -> tuple[Any, ...]:
    attributes = span.attributes or {}
    return (
        attributes.get("spangraph.node.id"),
        attributes.get("spangraph.node.attempt"),
        attributes.get("spangraph.node.status"),
    )


def test_a_node_s_traceparent_names_the_span_its_attempt_gets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``node_traceparent`` during an attempt (what an executor sends with a remote
    generation) gives the span id that the attempt's span is then made with, in the
    run's trace, a new one per attempt; outside an attempt, and with the tracer API's
    sink (which makes its own ids), there is none."""
    from spangraph.tracing._internal import node_traceparent

    def traced_run() -> tuple[list[tuple[str, str | None]], Any]:
        seen: list[tuple[str, str | None]] = []
        tries = {"flaky": 1}

        def reply(request: Any) -> str:
            seen.append((request.text, node_traceparent(request.thunk._id)))
            if request.text.startswith("flaky") and tries["flaky"]:
                tries["flaky"] -= 1
                raise TransientEngineError("overloaded")
            return "ok"

        with options(temperature=0):
            roots = [generate(Op(inputs=[f"x{i}"], label=f"n{i}")) for i in range(3)]
            roots.append(generate(Op(inputs=["y"], label="flaky")))
        retry = RetryPolicy(attempts=2, backoff=0.0, sleep=_no_sleep)
        result = run(*roots, engine=ScriptedEngine(reply), retry=retry, progress=False)
        return seen, result

    assert node_traceparent("no-such-node") is None  # no traced run here
    _app_provider(monkeypatch)
    seen, result = traced_run()
    assert result.status == "done" and len(seen) == 5  # the flaky one ran twice
    log = result.log
    assert log.run is not None
    allotted = [parent.split("-") for _, parent in seen if parent is not None]
    assert len(allotted) == 5
    assert {trace_id for _, trace_id, _, _ in allotted} == {log.run.trace_id}
    spans = sorted(node.key for node in log.filter(kind="generation"))
    assert sorted(span_id for _, _, span_id, _ in allotted) == spans and len(set(spans)) == 5
    monkeypatch.setattr(provider_module, "hasattr", lambda obj, name: False, raising=False)
    _app_provider(monkeypatch)
    seen, result = traced_run()
    assert isinstance(provider_module.emission().sink, provider_module.TracerSink)
    assert result.status == "done" and [parent for _, parent in seen] == [None] * 5


def test_every_span_path_is_cut_a_sampler_s_attempts_too(exporter: InMemorySpanExporter) -> None:
    """A span carries the end of its node's path (``TRACE_PATH_CHARS``), however deep
    the node: the attempts a sampler declares while it runs too."""
    from spangraph.sampling import BestOfN, sample
    from spangraph.tracing._graph import TRACE_PATH_CHARS

    sampled = sample(CBlock("Say it."), BestOfN(2, lambda text: float(len(text))))
    top = sampled
    for depth in range(30):  # the sampler 30 generations down: a path of ~550 characters
        top = generate(Op(inputs=[top], label=f"d{depth}"))
    assert run(top, engine=ScriptedEngine("ok"), progress=False).status == "done"
    paths = [
        span.attributes["spangraph.span.path"]
        for span in exporter.get_finished_spans()
        if "spangraph.span.path" in span.attributes
    ]
    attempts = sorted(path for path in paths if ".attempts[" in path)
    assert len(attempts) == 2
    for path in paths:
        assert len(path) <= TRACE_PATH_CHARS + 1, path  # the end, after "…"
    for index, path in enumerate(attempts):
        assert path.startswith("…") and path.endswith(f".action.parts()[0].attempts[{index}]")
