"""Turning a run's events into OpenTelemetry spans (GenAI semantic conventions).

Mapping:

- the run → one span ``invoke_workflow {name}`` (CHAIN) with
  ``gen_ai.workflow.name``, a child of the application's current span;
- each executed node (generation, task; each attempt of it) → one span whose
  parent is the run span (or, for a sampler's attempts, the sampler's span);
  generations are named ``{gen_ai.operation.name} {gen_ai.request.model}``,
  of kind INTERNAL for in-process engines and CLIENT for remote ones;
- each data dependency → a span link to the upstream producer's span, with
  ``spangraph.edge.kind`` (``part``, ``dynamic``, ``retry``, ``sample``); the
  upstream node ids (and edge kinds) are also in ``spangraph.node.upstream``
  (``spangraph.node.upstream_kinds``), since some viewers drop links and the
  SDK keeps at most 128 links per span, and their span ids (hex, as trace
  viewers show them; ``""`` for one that has no span yet, e.g. the attempt a
  judge is judging) in ``spangraph.node.upstream_span_ids``;
- nodes skipped after a failure → zero-length spans with status ``skipped``.

Spans are created when a node's attempt ends, with the start and end times
recorded by the events, so that every upstream span context already exists
(they are reported finished, through ``SpanSink``: see ``_provider``). Work
done elsewhere for an attempt under way (a generation on a Dask worker)
asks for the attempt's ``traceparent`` first: the span id is allotted then,
and the attempt's span takes it when it is made, so that spans made there
are its children. What
a span says about its node (kind, label, span path, upstream) is read from
the graph the run executes (``_graph``); ``_traced_run`` wires a run's
tracing; ``docs/design/tracing.md`` has the walk from ``generate()`` to a
span, and the figures.

Content: no free text on a span unless the user opted in. Content capture
(``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=SPAN_ONLY`` or
``spangraph.tracing.capture_content = "SPAN_ONLY"``) is read once per run
(``capture_mode``), and the tracer's ``FreeText`` (``_text``) then sets
every attribute and status that could hold text the run did not make up
(off: the default; on: ``SPAN_ONLY``):

- prompt and output: off, nothing (the token counts are there); on,
  ``gen_ai.input.messages`` and ``gen_ai.output.messages``, and
  OpenInference's ``input.value`` / ``output.value`` (with their MIME
  types), each cut at ``CONTENT_LIMIT`` characters;
- a task's arguments and result, a run's input blocks and root values:
  off, nothing; on, ``input.value`` / ``output.value``;
- an error's message (a failed node's, a retried attempt's, the run's):
  ``error.type`` in both; off, ``spangraph.error.message_length`` and
  ``spangraph.error.message_digest``, and the span status says only the
  type; on, ``spangraph.error.message`` and the status (500 characters);
- a skip reason: off, ``input <span path> failed: <error type>``; on, the
  reason with the error's message;
- a sampler attempt's validation reasons (they quote outputs, judge
  verdicts, requirement descriptions): off,
  ``spangraph.validation.reason_length`` and ``_digest``; on,
  ``spangraph.validation.reason`` (1000 characters);
- options that hold text (``stop``, ``extra:``): off, each string as
  ``{"length": …, "digest": …}`` in ``spangraph.request.options``; on, the
  text, and the stops also as ``gen_ai.request.stop_sequences``.

A digest is ``text_digest`` of the text (blake2b, 16 hex digits), so a
caller who holds the text (an exception, ``Run.failed``) can find its
span. ``system`` is never in ``spangraph.request.options``: it is part of
the prompt. Every other attribute is structural in both modes: ids,
kinds, statuses, counts, engine and model names, numeric options, span
paths (class names, function names and part indexes, never parameters),
and labels: the user's ``label=``, else structural, with a hint of the
node's content only with capture on (``nodes._label``). No span gets an
exception event. Secrets are never recorded: engines do not put them in
their records.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType, MethodType
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from .. import events as ev
from ..nodes._internal import WORK_KINDS, cut_path
from . import _semconv as sc
from ._graph import TRACE_PATH_CHARS, NodeFacts, TracedGraph
from ._provider import SpanSink, TracerSink
from ._text import ERROR_LIMIT, FreeText

#: One attribute mapping per edge kind, shared by every link of that kind.
_EDGE_ATTRIBUTES = {
    kind: MappingProxyType({sc.EDGE_KIND: kind})
    for kind in ("part", "dynamic", "retry", "sample", "resume")
}
_RESUME = _EDGE_ATTRIBUTES["resume"]
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_PART = _EDGE_ATTRIBUTES["part"]
_RETRY = _EDGE_ATTRIBUTES["retry"]
_UNSET = Status(StatusCode.UNSET)
#: ``openinference.span.kind`` by node kind (``CHAIN`` for the others).
_OPENINFERENCE_KINDS = {"generation": "LLM", "tool": "TOOL"}
_INTERNAL = SpanKind.INTERNAL


def _edge_attributes(kind: str) -> Mapping[str, str]:
    return _EDGE_ATTRIBUTES.get(kind) or {sc.EDGE_KIND: kind}


def capture_mode(setting: str | None = None) -> str:
    """``NO_CONTENT`` (default) or ``SPAN_ONLY``, from the setting or the environment."""
    from . import capture_content

    value = setting or capture_content or os.environ.get(sc.CAPTURE_CONTENT_ENV) or ""
    value = value.strip().upper()
    if value in ("SPAN_ONLY", "SPAN_AND_EVENT", "TRUE", "1"):
        return "SPAN_ONLY"
    return "NO_CONTENT"


#: A span's name, kind and the attributes every span of its sort starts from.
_Base = tuple[str, SpanKind, dict[str, Any]]


@dataclass
class RunTracer:
    """Listens to one run's events and emits its spans.

    State, per node id: ``_starts`` holds the start event of each attempt under
    way, ``_records`` the generation record of such an attempt, ``_links`` the
    span of each finished node as a ``part`` link (one ``Link`` per span,
    shared by all its users: links are immutable) and ``_hex_ids`` its span id
    in hex (formatted once, however many users it has), ``_previous`` the span of
    an attempt that was retried, and ``_declared`` the facts of the nodes that
    are not in the graph (a sampler's attempts). Each span's attributes are a
    copy of a base dict made once per run and node kind (and, for
    generations, per request: engine, model and options) with the node's own
    values set on it.
    """

    tracer: trace.Tracer
    run_id: str
    name: str
    #: The graph the run executes: what each node's span says about it (``_graph``).
    graph: TracedGraph
    #: Where finished node spans go.
    sink: SpanSink | TracerSink
    capture: str = "NO_CONTENT"
    #: The run's collected spans (the sink adds node spans to it directly).
    collected: list[Any] = field(default_factory=list)
    _offset: int = field(default_factory=lambda: time.time_ns() - time.perf_counter_ns())
    _run_span: Any = None
    _run_ctx: Any = None
    _run_context: Any = None
    _starts: dict[str, ev.NodeStarted] = field(default_factory=dict)
    _records: dict[str, ev.GenerationRecord] = field(default_factory=dict)
    _links: dict[str, Link] = field(default_factory=dict)
    #: The span id of each of those spans, as 16 hex digits (``upstream_span_ids``).
    _hex_ids: dict[str, str] = field(default_factory=dict)
    _previous: dict[str, Link] = field(default_factory=dict)
    _span_of_node: dict[str, Any] = field(default_factory=dict)
    #: The span id allotted to an attempt under way (``traceparent``), which its span takes.
    _allotted: dict[str, int] = field(default_factory=dict)
    _declared: dict[str, NodeFacts] = field(default_factory=dict)
    _bases: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``gen_ai.response.finish_reasons`` values, one tuple per reason.
    _reasons: dict[str, tuple[str]] = field(default_factory=dict)
    _last_request: tuple[tuple[Any, ...], dict[str, Any], _Base] | None = None
    #: What free text the run's spans may carry (decided once, from ``capture``).
    _text: FreeText = field(init=False)

    def __post_init__(self) -> None:
        self._text = FreeText(self.capture)

    def start(self, resumes: Sequence[tuple[str, str]] = ()) -> None:
        """Open the run span; ``resumes``: the spans (hex trace and span ids) of the
        interrupted runs this one resumes, which it links to (edge kind ``resume``)."""
        attributes = {
            sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_WORKFLOW,
            sc.GEN_AI_WORKFLOW_NAME: self.name,
            sc.RUN_ID: self.run_id,
            sc.NODE_KIND: "run",
            sc.OPENINFERENCE_SPAN_KIND: "CHAIN",
        }
        if self._text.captured:
            self._text.values(attributes, given=self.graph.run_input())
        links = [
            Link(
                SpanContext(
                    int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=_SAMPLED
                ),
                _RESUME,
            )
            for trace_id, span_id in dict.fromkeys(resumes)
        ]
        self._run_span = self.tracer.start_span(
            f"{sc.OP_INVOKE_WORKFLOW} {self.name}",
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            links=links,
        )
        self._run_ctx = trace.set_span_in_context(self._run_span)
        self._run_context = self._run_span.get_span_context()

    def end(self, status: str, error: BaseException | None = None) -> None:
        span = self._run_span
        if span is None:
            return
        attributes: dict[str, Any] = {sc.NODE_STATUS: status}
        if self._text.captured:
            self._text.values(attributes, result=self.graph.run_output())
        if error is not None:
            span.set_status(self._text.error(attributes, error))
        span.set_attributes(attributes)
        span.end()
        self._run_span = None

    @property
    def run_span(self) -> Any:
        return self._run_span

    # -- events ------------------------------------------------------------------------

    def _facts(self, node_id: str) -> NodeFacts:
        return self._declared.get(node_id) or NodeFacts.of(
            self.graph, node_id, captured=self._text.captured
        )

    def __call__(self, event: ev.Event) -> None:
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def listen(self, bus: ev.EventBus) -> None:
        """Subscribe to ``bus``: each handler for its own event type only (what
        ``__call__`` does, without a call and a lookup per event), and for work
        nodes only (pure nodes have no span)."""
        for kind, handler in _HANDLERS.items():
            bus.subscribe(MethodType(handler, self), only=(kind,), work_only=True)

    def traceparent(self, node_id: str) -> str | None:
        """The W3C ``traceparent`` of the span that the attempt of ``node_id`` under way
        will have. Its span id is allotted now (the span is made when the attempt ends,
        and takes it), so that what runs elsewhere for the attempt (a generation on a
        Dask worker) makes its spans children of the node's span. ``None`` when the
        node has no attempt under way (a generation a task made on an engine), the
        run span has ended, or the sink makes its own span ids (``TracerSink``)."""
        if node_id not in self._starts or self._run_span is None:
            return None
        span_id = self._allotted.get(node_id)
        if span_id is None:
            span_id = self.sink.new_span_id()
            if span_id is None:
                return None
            self._allotted[node_id] = span_id
        context = self._run_context
        return f"00-{context.trace_id:032x}-{span_id:016x}-{int(context.trace_flags):02x}"

    def _on_declared(self, event: ev.NodeDeclared) -> None:
        self._declared[event.node_id] = NodeFacts.declared(
            kind=event.kind,
            path=cut_path(event.path, TRACE_PATH_CHARS),
            label=event.label,
            sampler=event.parent,
            upstream=event.upstream,
        )
        sampler = event.parent
        if sampler is not None and sampler not in self._span_of_node:
            started = self._starts.get(sampler)
            if started is not None:
                self._open_sampler(sampler, started.time)

    def _on_started(self, event: ev.NodeStarted) -> None:
        self._starts[event.node_id] = event

    def _on_record(self, event: ev.GenerationRecord) -> None:
        if event.node_id in self._starts:  # not a generation a task made on an engine
            self._records[event.node_id] = event

    def _on_attempt_ended(self, event: ev.Event) -> None:
        """Finished, failed, retried or cancelled: the attempt's span."""
        started = self._starts.pop(event.node_id, None)
        if started is not None:
            self._emit(started, event)

    def _on_skipped(self, event: ev.NodeSkipped) -> None:
        if self._facts(event.node_id).kind in WORK_KINDS:
            self._emit(None, event)

    # -- spans ---------------------------------------------------------------------------

    def _ns(self, perf_seconds: float) -> int:
        return int(perf_seconds * 1e9) + self._offset

    def _emit(self, started: ev.NodeStarted | None, ended: ev.Event) -> None:
        """Report the span of a node's attempt, from the event that started it to the
        one that ended it (``NodeFinished``, ``NodeFailed``, ``NodeRetried``,
        ``NodeCancelled``; a skipped node, never started, gets a zero-length span)."""
        node_id = ended.node_id
        status = _STATUS[type(ended)]
        facts = self._facts(node_id)
        record = self._records.pop(node_id, None)
        generation = record if facts.kind == "generation" else None
        name, span_kind, base = self._request(facts, generation)
        attributes = base.copy()
        attributes[sc.NODE_ID] = node_id
        attributes[sc.NODE_LABEL] = facts.label
        attributes[sc.NODE_STATUS] = status
        attributes[sc.NODE_ATTEMPT] = started.attempt if started is not None else 0
        attributes[sc.SPAN_PATH] = facts.path
        attributes[sc.CACHE_HIT] = isinstance(ended, ev.NodeFinished) and ended.cache_hit
        attributes[sc.NODE_UPSTREAM] = facts.upstream
        attributes[sc.NODE_UPSTREAM_KINDS] = facts.upstream_kinds
        if generation is not None:
            self._usage(attributes, generation)
        span_status = self._outcome(attributes, ended, record)
        if facts.kind == "tool" and node_id in self.graph.nodes:
            name, tool_status = self._tool(attributes, node_id)
            if tool_status is not None:
                span_status = tool_status
        elif self._text.captured and facts.kind == "task" and node_id in self.graph.nodes:
            given, result = self.graph.task_values(node_id)
            if isinstance(ended, ev.NodeFinished):
                self._text.values(attributes, given=given, result=result)
            else:
                self._text.values(attributes, given=given)
        links, attributes[sc.NODE_UPSTREAM_SPAN_IDS] = self._links_of(node_id, facts)
        end = self._ns(ended.time)
        start = self._ns(started.time) if started is not None else end
        span = self._span_of_node.pop(node_id, None) if facts.kind == "sampler" else None
        if span is not None:  # a sampler's span, open since its first attempt
            span.set_attributes(attributes)
            for link in links:
                span.add_link(link.context, link.attributes)
            if span_status is not _UNSET:
                span.set_status(span_status)
            span.end(end_time=end)
            link = Link(span.get_span_context(), _PART)
        else:
            if self._run_span is None:
                return  # the run span has ended: nothing can nest under it any more
            parent = self._run_context
            if facts.sampler is not None and facts.sampler in self._span_of_node:
                parent = self._span_of_node[facts.sampler].get_span_context()
            sink = self.sink
            if self._allotted:  # only a remote generation's span has an id allotted
                span_id = self._allotted.pop(node_id, 0)
                if span_id:
                    sink = sink.allotted(span_id)
            link = sink.emit(
                name=name,
                parent=parent,
                kind=span_kind,
                attributes=attributes,
                links=links,
                status=span_status,
                start=start,
                end=end,
                collected=self.collected,
                link_attributes=_PART,
            )
        if status == "retried":
            self._previous[node_id] = Link(link.context, _RETRY)
        else:
            self._links[node_id] = link
            self._hex_ids[node_id] = f"{link.context.span_id:016x}"
            if self._previous:
                self._previous.pop(node_id, None)

    def _request(self, facts: NodeFacts, record: ev.GenerationRecord | None) -> _Base:
        """A span's name, kind and the base of its attributes: its node kind's, and for
        a generation its request's (the last one made is reused if it matches: most
        generations of a run share it)."""
        if record is None:
            return facts.label, _INTERNAL, self._base(facts.kind)
        key = (record.mode, record.provider, record.engine, record.model, record.server)
        last = self._last_request
        if last is not None and last[0] == key and last[1] == record.options:
            return last[2]
        return self._request_base(key, record)

    def _usage(self, attributes: dict[str, Any], record: ev.GenerationRecord) -> None:
        """A generation's finish reason and token counts (and, with capture on, its
        prompt and output)."""
        reason_of = record.finish_reason
        if reason_of:
            reasons = self._reasons.get(reason_of)
            if reasons is None:
                reasons = self._reasons[reason_of] = (reason_of,)
            attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
        if record.output_type is not None:
            attributes[sc.GEN_AI_OUTPUT_TYPE] = record.output_type
        if record.response_model is not None:
            attributes[sc.GEN_AI_RESPONSE_MODEL] = record.response_model
        first_token_ms = record.timings.first_token_ms
        if first_token_ms is not None:  # streamed
            attributes[sc.GEN_AI_REQUEST_STREAM] = True
            attributes[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = first_token_ms / 1000.0
        usage = record.usage
        attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] = usage.input_tokens
        attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = usage.output_tokens
        attributes[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cached_input_tokens
        worker = record.worker
        if worker is not None:
            attributes[sc.WORKER] = worker[0]
            attributes[sc.WORKER_START] = int(worker[1] * 1e9)
            attributes[sc.WORKER_END] = int(worker[2] * 1e9)
        if self._text.captured:
            self._text.messages(attributes, record)

    def _outcome(
        self, attributes: dict[str, Any], ended: ev.Event, record: ev.GenerationRecord | None
    ) -> Status:
        """What the event that ended an attempt adds to its span's attributes (its own
        attributes, a skip reason, an error: free text, through ``self._text``), and
        the span's status."""
        if isinstance(ended, ev.NodeFinished):
            if ended.attributes:
                self._text.extra(attributes, ended.attributes)
            return _UNSET
        if isinstance(ended, ev.NodeSkipped):
            self._text.skip(attributes, ended)
            return _UNSET
        if isinstance(ended, ev.NodeInterrupted):
            attributes[sc.INTERRUPT_ID] = ended.interrupt_id
            self._text.put(attributes, sc.INTERRUPT_QUESTION, ended.question, ERROR_LIMIT)
            return _UNSET
        if isinstance(ended, ev.NodeCancelled):
            attributes[sc.ERROR_TYPE] = "cancelled"
            return Status(StatusCode.ERROR, "cancelled")
        if isinstance(ended, ev.NodeFailed | ev.NodeRetried):
            failure = ended.error or (record.error if record is not None else None)
            if failure is not None:
                return self._text.error(attributes, failure)
        return _UNSET

    def _tool(self, attributes: dict[str, Any], node_id: str) -> tuple[str, Status | None]:
        """A tool node's span: its name (``execute_tool {tool}``), the GenAI tool
        attributes, the call's arguments and result (capture on only), and an ERROR
        status when the tool raised or its arguments did not validate."""
        call = self.graph.tool_call(node_id)
        attributes[sc.GEN_AI_OPERATION_NAME] = sc.OP_EXECUTE_TOOL
        attributes[sc.GEN_AI_TOOL_NAME] = call.name
        attributes[sc.GEN_AI_TOOL_TYPE] = "function"
        if call.call_id:
            attributes[sc.GEN_AI_TOOL_CALL_ID] = call.call_id
        if self._text.captured:
            if call.arguments is not None:
                attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS] = json.dumps(call.arguments, default=str)
            if call.error is None and call.result is not None:
                attributes[sc.GEN_AI_TOOL_CALL_RESULT] = json.dumps(call.result, default=str)
        status = None
        if call.error is not None:
            attributes[sc.ERROR_TYPE] = call.error_type or "error"
            self._text.put(attributes, sc.ERROR_MESSAGE, call.error, ERROR_LIMIT)
            text = call.error[:ERROR_LIMIT] if self._text.captured else attributes[sc.ERROR_TYPE]
            status = Status(StatusCode.ERROR, text)
        return f"{sc.OP_EXECUTE_TOOL} {call.name}", status

    def _links_of(self, node_id: str, facts: NodeFacts) -> tuple[list[Link], tuple[str, ...]]:
        """A link to the span of each upstream node (each that has one by now), and to
        the attempt this one retries; and each upstream node's span id (16 hex digits,
        ``""`` for one without a span yet), in the order of ``facts.upstream``."""
        links: list[Link] = []
        ids: list[str] = []
        finished, hex_ids = self._links, self._hex_ids
        for source, edge in zip(facts.upstream, facts.upstream_kinds, strict=True):
            link = finished.get(source)
            if link is not None:
                links.append(link if edge == "part" else Link(link.context, _edge_attributes(edge)))
                ids.append(hex_ids[source])
            else:
                ids.append("")
        if self._previous:
            retried = self._previous.get(node_id)
            if retried is not None:
                links.append(retried)
        return links, tuple(ids)

    def _base(self, kind: str) -> dict[str, Any]:
        """The attributes every span of a node of ``kind`` starts from (made once)."""
        base = self._bases.get(kind)
        if base is None:
            base = self._bases[kind] = {
                sc.RUN_ID: self.run_id,
                sc.NODE_KIND: kind,
                sc.OPENINFERENCE_SPAN_KIND: _OPENINFERENCE_KINDS.get(kind, "CHAIN"),
            }
        return base

    def _request_base(self, key: tuple[Any, ...], record: ev.GenerationRecord) -> _Base:
        """Span name, kind and base attributes of a generation: the run's, and those
        of the request (the engine, model and options), kept as the last request."""
        operation = sc.OP_CHAT if record.mode == "chat" else sc.OP_TEXT_COMPLETION
        options = record.options
        attributes: dict[str, Any] = {
            **self._base("generation"),
            sc.GEN_AI_OPERATION_NAME: operation,
            sc.GEN_AI_PROVIDER_NAME: record.provider or record.engine,
            sc.GEN_AI_REQUEST_MODEL: record.model,
        }
        for option, name, as_type in _REQUEST_OPTIONS:
            value = options.get(option)
            # A number, as the type the conventions give the attribute (a bool is no number).
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes[name] = as_type(value)
        self._text.stop_sequences(attributes, options.get("stop"))
        attributes[sc.OPTIONS] = self._text.options(options)
        kind = SpanKind.INTERNAL
        if record.server is not None:
            kind = SpanKind.CLIENT
            attributes[sc.SERVER_ADDRESS] = record.server[0]
            attributes[sc.SERVER_PORT] = record.server[1]
        made = (f"{operation} {record.model}", kind, attributes)
        self._last_request = (key, dict(options), made)
        return made

    def _open_sampler(self, node_id: str, started: float) -> None:
        """A sampler's span is opened with its first attempt: its attempts are its children."""
        self._span_of_node[node_id] = self.tracer.start_span(
            self._facts(node_id).label,
            context=self._run_ctx,
            kind=SpanKind.INTERNAL,
            attributes={sc.RUN_ID: self.run_id, sc.NODE_KIND: "sampler"},
            start_time=self._ns(started),
        )


#: The request options that have a GenAI attribute: option, attribute, and the
#: attribute's type in the conventions (``top_k`` is a double there, like ``top_p``).
_REQUEST_OPTIONS: tuple[tuple[str, str, type[int] | type[float]], ...] = (
    ("temperature", sc.GEN_AI_REQUEST_TEMPERATURE, float),
    ("max_tokens", sc.GEN_AI_REQUEST_MAX_TOKENS, int),
    ("top_p", sc.GEN_AI_REQUEST_TOP_P, float),
    ("top_k", sc.GEN_AI_REQUEST_TOP_K, float),
    ("seed", sc.GEN_AI_REQUEST_SEED, int),
)

#: What each event type does to the run's spans (other events are ignored).
_HANDLERS: dict[type, Callable[[RunTracer, Any], None]] = {
    ev.NodeDeclared: RunTracer._on_declared,
    ev.NodeStarted: RunTracer._on_started,
    ev.GenerationRecord: RunTracer._on_record,
    ev.NodeFinished: RunTracer._on_attempt_ended,
    ev.NodeFailed: RunTracer._on_attempt_ended,
    ev.NodeRetried: RunTracer._on_attempt_ended,
    ev.NodeCancelled: RunTracer._on_attempt_ended,
    ev.NodeInterrupted: RunTracer._on_attempt_ended,
    ev.NodeSkipped: RunTracer._on_skipped,
}

#: A node span's ``spangraph.node.status``, by the event that ended its attempt.
_STATUS: dict[type, str] = {
    ev.NodeFinished: "done",
    ev.NodeFailed: "failed",
    ev.NodeRetried: "retried",
    ev.NodeCancelled: "cancelled",
    ev.NodeInterrupted: "interrupted",
    ev.NodeSkipped: "skipped",
}
