"""``spangraph export FILE --endpoint URL``, through the console script, to a real OTLP/HTTP
collector on 127.0.0.1 that decodes what it gets with opentelemetry-proto."""

from __future__ import annotations

import json
import pathlib
import socket

import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from spangraph import CBlock, Component, Span, generate, run
from spangraph.engines import ScriptedEngine
from spangraph.tracing import LogDAG
from tests.cli_helpers import Collector, spangraph


class Ask(Component[str]):
    template = "Question: {q}"
    q: Span


@pytest.fixture
def home(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "home"


@pytest.fixture
def trace(tmp_path: pathlib.Path) -> pathlib.Path:
    first = generate(Ask(q=CBlock("What is red?")))
    result = run(generate(Ask(q=first)), engine=ScriptedEngine("a colour"), progress=False)
    assert result.log is not None
    return result.log.write_otlp_json(tmp_path / "run.otlp.jsonl")


def _value(item: object) -> object:
    value = item.value  # type: ignore[attr-defined]
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [getattr(v, v.WhichOneof("value")) for v in value.array_value.values]
    return getattr(value, kind)


def test_sends_every_span_as_protobuf(trace: pathlib.Path, home: pathlib.Path) -> None:
    with Collector() as collector:
        result = spangraph(
            "export", trace, "--endpoint", collector.url, "--header", "x-api-key = secret",
            home=home,
        )  # fmt: skip
    assert result.code == 0, result
    assert result.out.strip() == f"sent 3 spans in 1 request to {collector.url}/v1/traces"
    [received] = collector.received
    assert received.path == "/v1/traces"
    assert received.headers["content-type"] == "application/x-protobuf"
    assert received.headers["x-api-key"] == "secret"
    sent = {span.span_id.hex(): span for span in received.spans()}
    dag = LogDAG.from_otlp_json(trace)
    assert set(sent) == {r.span_id for r in dag.records}
    for record in dag.records:
        span = sent[record.span_id]
        assert span.name == record.name and span.trace_id.hex() == record.trace_id
        assert (span.parent_span_id.hex() or None) == record.parent_id
        assert {a.key: _value(a) for a in span.attributes} == dict(record.attributes)
        assert [(link.span_id.hex(), link.trace_id.hex()) for link in span.links] == [
            (s, t) for t, s, _ in record.links
        ]
        assert span.start_time_unix_nano == record.start
    resource = {a.key: _value(a) for a in received.request.resource_spans[0].resource.attributes}
    assert resource == dict(dag.records[0].resource)


def test_each_line_is_one_request(
    trace: pathlib.Path, tmp_path: pathlib.Path, home: pathlib.Path
) -> None:
    line = trace.read_text().strip()
    twice = tmp_path / "twice.otlp.jsonl"
    twice.write_text(f"{line}\n\n{line}\n")
    with Collector() as collector:
        result = spangraph("export", twice, "--endpoint", f"{collector.url}/", home=home)
    assert result.code == 0 and "sent 6 spans in 2 requests" in result.out, result
    assert [len(r.spans()) for r in collector.received] == [3, 3]


def test_a_refusal_exits_1_with_the_collectors_reason(
    trace: pathlib.Path, home: pathlib.Path
) -> None:
    status = Status(code=3, message="this collector takes no spans today")
    with Collector(status=400, body=status.SerializeToString()) as collector:
        result = spangraph("export", trace, "--endpoint", collector.url, home=home)
    assert result.code == 1, result
    assert "HTTP 400" in result.err and "this collector takes no spans today" in result.err
    assert "Traceback" not in result.err
    partial = ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(rejected_spans=2, error_message="too old")
    )
    with Collector(body=partial.SerializeToString()) as collector:
        result = spangraph("export", trace, "--endpoint", collector.url, home=home)
    assert result.code == 1 and "too old" in result.err and "rejected 2 of the 3" in result.err


def test_no_collector_exits_1(trace: pathlib.Path, home: pathlib.Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = spangraph("export", trace, "--endpoint", f"http://127.0.0.1:{port}", home=home)
    assert result.code == 1 and "cannot reach" in result.err and "Traceback" not in result.err


def test_ids_that_are_not_otlp_json_hex_are_refused(
    trace: pathlib.Path, tmp_path: pathlib.Path, home: pathlib.Path
) -> None:
    request = json.loads(trace.read_text())
    span = request["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["spanId"] = "AAECAwQFBgc="  # base64, as protobuf's own JSON mapping writes bytes
    bad = tmp_path / "base64.otlp.jsonl"
    bad.write_text(json.dumps(request) + "\n")
    with Collector() as collector:
        result = spangraph("export", bad, "--endpoint", collector.url, home=home)
    assert result.code == 2 and "spanId must be 16 hex digits" in result.err, result
    assert collector.received == []
