"""Span attributes against the pinned table of the conventions (``semconv_table``), on
the scripted engine and on the real embedded one, with content capture off and on;
and the OTLP/JSON file's resources and instrumentation scope."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

import spangraph.tracing
from spangraph import CBlock, arun, arun_stream, generate, run
from spangraph.engines import ScriptedEngine
from spangraph.tracing import LogDAG, SpanRecord
from spangraph.tracing import _provider as provider_module
from spangraph.tracing import _semconv as sc

from .semconv_table import OWN, TABLE, VALUES
from .workflow import program, scripted_reply

CAPTURE = pytest.mark.parametrize("captured", [False, True], ids=["capture-off", "capture-on"])


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """An application's SDK provider with an in-memory exporter; capture mode unset."""
    monkeypatch.delenv(sc.CAPTURE_CONTENT_ENV, raising=False)
    monkeypatch.setattr(spangraph.tracing, "capture_content", None)
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(provider_module.trace, "get_tracer_provider", lambda: provider)
    yield memory
    provider.shutdown()


def sort_of(attributes: dict[str, Any]) -> str | None:
    """The table's span sort (``semconv_table``): ``None`` for a generation that never
    reached its engine (skipped, cancelled)."""
    kind = attributes[sc.NODE_KIND]
    if kind != "generation":
        return str(kind)
    ran = attributes[sc.NODE_STATUS] in ("done", "failed", "retried")
    return "inference" if ran else None


def type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, tuple | list) and all(isinstance(v, str) for v in value):
        return "string[]"
    return type(value).__name__


def check_against_table(spans: list[ReadableSpan], captured: bool) -> dict[str, list[Any]]:
    """Every attribute that is not spangraph's own is in the table, with its type, on a
    span of a sort that carries it, with a value the conventions allow; every required
    attribute is on every span of its sorts; content (opt-in) only with capture on.
    The spans by sort."""
    by_sort: dict[str, list[Any]] = {}
    problems: list[str] = []
    for span in spans:
        attributes = dict(span.attributes or {})
        sort = sort_of(attributes)
        by_sort.setdefault(str(sort), []).append(span)
        own_sort = sort or "unrun"
        for name, value in attributes.items():
            own = name.startswith("spangraph.")
            where = f"{span.name!r} ({own_sort if own else sort}): {name}"
            convention = (OWN if own else TABLE).get(name)
            if convention is None:
                problems.append(f"{where} is not in the table")
                continue
            if (own_sort if own else sort) not in convention.sorts:
                problems.append(f"{where} is not carried by {sort} spans")
            if type_of(value) != convention.type:
                problems.append(f"{where} is {type_of(value)}, not {convention.type}")
            if name in VALUES and value not in VALUES[name]:
                problems.append(f"{where}={value!r} is not one of {sorted(VALUES[name])}")
            if convention.presence == "opt-in" and not captured:
                problems.append(f"{where} is content, with capture off")
        problems.extend(
            f"{span.name!r} ({sort}) lacks {c.name}"
            for c in TABLE.values()
            if c.presence == "required" and sort in c.sorts and c.name not in attributes
        )
        problems.extend(
            f"{span.name!r} ({own_sort}) lacks {c.name}"
            for c in OWN.values()
            if c.presence == "required" and own_sort in c.sorts and c.name not in attributes
        )
        ids = attributes.get(sc.NODE_UPSTREAM_SPAN_IDS)
        if ids is not None and len(ids) != len(attributes[sc.NODE_UPSTREAM]):
            problems.append(f"{span.name!r}: upstream_span_ids is not one per upstream node")
    assert problems == []
    return by_sort


def attributes_of(spans: list[Any]) -> list[dict[str, Any]]:
    return [dict(s.attributes or {}) for s in spans]


def check_program_spans(
    spans: list[ReadableSpan], *, captured: bool, model: str, workflow: str
) -> dict[str, list[Any]]:
    """What ``program()``'s run says beyond the table: the workflow's name, each
    generation's output type and response model, the request options as the
    conventions type them, and where content is with capture on."""
    by_sort = check_against_table(spans, captured)
    (run_span,) = by_sort["run"]
    assert run_span.name == f"invoke_workflow {workflow}"
    assert run_span.attributes[sc.GEN_AI_WORKFLOW_NAME] == workflow
    inference = attributes_of(by_sort["inference"])
    assert len(inference) == 2
    by_type = {a[sc.GEN_AI_OUTPUT_TYPE]: a for a in inference}
    assert set(by_type) == {"json", "text"}
    assert "Extract" in by_type["json"][sc.NODE_LABEL]
    for a in inference:
        assert a[sc.OPENINFERENCE_SPAN_KIND] == "LLM"
        assert a[sc.GEN_AI_REQUEST_TOP_K] == 40.0 and a[sc.GEN_AI_REQUEST_TEMPERATURE] == 0.0
        assert a[sc.GEN_AI_REQUEST_SEED] == 7 and a[sc.GEN_AI_REQUEST_TOP_P] == 0.5
        if a[sc.NODE_STATUS] == "done":
            assert a[sc.GEN_AI_RESPONSE_MODEL] == model
        if captured:
            assert a[sc.GEN_AI_REQUEST_STOP_SEQUENCES] == ("END",)
            assert a[sc.INPUT_MIME_TYPE] == "text/plain"
            assert (
                a[sc.INPUT_VALUE]
                in json.loads(a[sc.GEN_AI_INPUT_MESSAGES])[0]["parts"][0]["content"]
            )
            if a[sc.NODE_STATUS] == "done":
                json_out = a[sc.GEN_AI_OUTPUT_TYPE] == "json"
                assert a[sc.OUTPUT_MIME_TYPE] == ("application/json" if json_out else "text/plain")
                assert a[sc.OUTPUT_VALUE]
    if captured:
        assert "Ada Lovelace wrote it." in json.loads(run_span.attributes[sc.INPUT_VALUE])
        assert run_span.attributes[sc.INPUT_MIME_TYPE] == "application/json"
        assert sc.OUTPUT_VALUE in run_span.attributes
        for a in attributes_of(by_sort.get("task", [])):
            assert a[sc.INPUT_MIME_TYPE] == "application/json"
            args, kwargs = json.loads(a[sc.INPUT_VALUE])  # its arguments, as values
            assert len(args) == 2 and kwargs == {}
            if a[sc.NODE_STATUS] == "done":
                assert a[sc.OUTPUT_VALUE].startswith("hello ")
                assert a[sc.OUTPUT_MIME_TYPE] == "text/plain"
    return by_sort


@CAPTURE
def test_scripted_run_follows_the_pinned_conventions(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch, captured: bool
) -> None:
    if captured:
        monkeypatch.setattr(spangraph.tracing, "capture_content", "SPAN_ONLY")
    result = run(
        *program(max_tokens=8),
        engine=ScriptedEngine(scripted_reply),
        progress=False,
        name="pinned",
    )
    assert result.outputs[0].value == "hello Ada: hello there"
    spans = list(exporter.get_finished_spans())
    by_sort = check_program_spans(spans, captured=captured, model="scripted", workflow="pinned")
    (task_span,) = by_sort["task"]
    assert task_span.attributes[sc.OPENINFERENCE_SPAN_KIND] == "CHAIN"
    if captured:
        given = json.loads(task_span.attributes[sc.INPUT_VALUE])
        assert given == [[{"name": "Ada"}, "hello there"], {}]
        assert task_span.attributes[sc.OUTPUT_VALUE] == "hello Ada: hello there"
        assert json.loads(by_sort["run"][0].attributes[sc.OUTPUT_VALUE]) == [
            "hello Ada: hello there"
        ]


@pytest.mark.real
@CAPTURE
def test_real_engine_run_follows_the_pinned_conventions(
    llama: Any, exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch, captured: bool
) -> None:
    if captured:
        monkeypatch.setattr(spangraph.tracing, "capture_content", "SPAN_ONLY")
    run(*program(max_tokens=16), engine=llama, on_error="continue", progress=False, name="real")
    spans = list(exporter.get_finished_spans())
    by_sort = check_program_spans(spans, captured=captured, model=llama.model, workflow="real")
    for a in attributes_of(by_sort["inference"]):
        assert a[sc.GEN_AI_USAGE_INPUT_TOKENS] > 0
        assert a[sc.GEN_AI_PROVIDER_NAME] == llama.provider


def test_otlp_json_keeps_every_resource_and_the_scopes_version(tmp_path: pathlib.Path) -> None:
    """Spans of two resources and two scopes (an application's span beside spangraph's)
    are written each under its own resource and scope, the scope's version kept, and
    read back as they were."""
    records: list[SpanRecord] = []
    for index, (service, scope, version) in enumerate(
        [("app-a", "spangraph", "1.2.3"), ("app-b", "spangraph", "1.2.3"), ("app-a", "app", "")]
    ):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        provider.get_tracer(scope, version).start_span(f"span{index}").end()
        (span,) = memory.get_finished_spans()
        assert span.instrumentation_scope == InstrumentationScope(scope, version)
        records.append(SpanRecord.from_readable(span))
    path = LogDAG.from_spans(records).write_otlp_json(tmp_path / "trace.otlp.jsonl")
    (request,) = [json.loads(line) for line in path.read_text().splitlines()]
    written = {
        next(
            a["value"]["stringValue"]
            for a in group["resource"]["attributes"]
            if a["key"] == "service.name"
        ): [(s["scope"], [span["name"] for span in s["spans"]]) for s in group["scopeSpans"]]
        for group in request["resourceSpans"]
    }
    assert written == {
        "app-a": [
            ({"name": "spangraph", "version": "1.2.3"}, ["span0"]),
            ({"name": "app"}, ["span2"]),
        ],
        "app-b": [({"name": "spangraph", "version": "1.2.3"}, ["span1"])],
    }
    again = {r.name: r for r in LogDAG.from_otlp_json(path).records}
    for record in records:
        assert again[record.name] == record


def test_a_runs_trace_file_names_spangraphs_scope_and_version(
    exporter: InMemorySpanExporter, tmp_path: pathlib.Path
) -> None:
    from importlib.metadata import version

    result = run(*program(max_tokens=8), engine=ScriptedEngine(scripted_reply), progress=False)
    assert result.log is not None
    path = result.log.write_otlp_json(tmp_path / "run.otlp.jsonl")
    (request,) = [json.loads(line) for line in path.read_text().splitlines()]
    (group,) = request["resourceSpans"]
    (scope_spans,) = group["scopeSpans"]
    assert scope_spans["scope"] == {"name": "spangraph", "version": version("spangraph")}
    assert len(scope_spans["spans"]) == len(result.log.records)
    assert {a["key"] for a in group["resource"]["attributes"]} >= {"service.name"}


def test_a_streamed_generation_carries_its_time_to_first_chunk(
    exporter: InMemorySpanExporter,
) -> None:
    async def main() -> None:
        leaves = [generate(CBlock("q1")), generate(CBlock("q2"))]
        engine = ScriptedEngine("one two three", latency=0.03)
        async with arun_stream(leaves[0], engine=engine, tokens=True, progress=False) as events:
            [event async for event in events]
        await arun(leaves[1], engine=engine, progress=False)  # not streamed

    anyio.run(main)
    spans = list(exporter.get_finished_spans())
    check_against_table(spans, captured=False)
    inference = [
        dict(s.attributes or {}) for s in spans if sort_of(dict(s.attributes or {})) == "inference"
    ]
    streamed = [a for a in inference if a.get(sc.GEN_AI_REQUEST_STREAM)]
    assert len(inference) == 2 and len(streamed) == 1
    assert 0 < streamed[0][sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] < 0.5
