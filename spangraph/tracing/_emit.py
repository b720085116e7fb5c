"""Turning a run's events into OpenTelemetry spans (GenAI semantic conventions).

Mapping:

- the run → one span ``invoke_workflow {name}`` (CHAIN), a child of the
  application's current span;
- each executed node (generation, task; each attempt of it) → one span whose
  parent is the run span (or, for a sampler's attempts, the sampler's span);
  generations are named ``{gen_ai.operation.name} {gen_ai.request.model}``,
  of kind INTERNAL for in-process engines and CLIENT for remote ones;
- each data dependency → a span link to the upstream producer's span, with
  ``spangraph.edge.kind`` (``part``, ``dynamic``, ``retry``, ``sample``); the
  upstream node ids (and edge kinds) are also in ``spangraph.node.upstream``
  (``spangraph.node.upstream_kinds``), since some viewers drop links and the
  SDK keeps at most 128 links per span;
- nodes skipped after a failure → zero-length spans with status ``skipped``.

Spans are created when a node ends, with the start and end times recorded
by the events, so that every upstream span context already exists (they
are reported finished, through ``SpanSink``: see ``_provider``). Prompt
and output text are recorded only when content capture is on
(``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=SPAN_ONLY`` or
``spangraph.tracing.capture_content``), each message cut at
``CONTENT_LIMIT`` characters. Secrets are never recorded: engines do not
put them in their records.
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
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from .. import events as ev
from . import _semconv as sc
from ._provider import SpanSink

#: Longest message text recorded when content capture is on (characters).
CONTENT_LIMIT = 16_384

#: (upstream node id, edge kind) pairs of a node.
UpstreamFn = Callable[[str], Sequence[tuple[str, str]]]


class NodeMeta:
    """What a node's span says about it besides its outcome (read-only)."""

    __slots__ = ("kind", "label", "parent", "path", "upstream", "upstream_ids", "upstream_kinds")

    def __init__(
        self,
        kind: str,
        path: str,
        label: str,
        upstream: tuple[tuple[str, str], ...] = (),
        parent: str | None = None,  # a sampler node id, for attempts
    ) -> None:
        self.kind, self.path, self.label, self.parent = kind, path, label, parent
        self.upstream = upstream
        # ``upstream`` split in two, as the span attributes carry it.
        self.upstream_ids: tuple[str, ...] = ()
        self.upstream_kinds: tuple[str, ...] = ()
        if upstream:
            self.upstream_ids, self.upstream_kinds = map(tuple, zip(*upstream, strict=True))

    def __repr__(self) -> str:
        return f"NodeMeta({self.kind!r}, {self.path!r}, {self.label!r}, {self.upstream!r})"


#: One attribute mapping per edge kind, shared by every link of that kind.
_EDGE_ATTRIBUTES = {
    kind: MappingProxyType({sc.EDGE_KIND: kind}) for kind in ("part", "dynamic", "retry", "sample")
}
_UNSET = Status(StatusCode.UNSET)


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


@dataclass(slots=True)
class _Attempt:
    started: float
    attempt: int
    record: ev.GenerationRecord | None = None


@dataclass
class RunTracer:
    """Listens to one run's events and emits its spans."""

    tracer: trace.Tracer
    run_id: str
    name: str
    meta: Callable[[str], NodeMeta]
    capture: str = "NO_CONTENT"
    #: Where finished node spans go (``None``: through ``tracer``, span by span).
    sink: SpanSink | None = None
    _offset: int = field(default_factory=lambda: time.time_ns() - time.perf_counter_ns())
    _run_span: Any = None
    _run_ctx: Any = None
    _attempts: dict[str, _Attempt] = field(default_factory=dict)
    _contexts: dict[str, trace.SpanContext] = field(default_factory=dict)
    _previous: dict[str, trace.SpanContext] = field(default_factory=dict)
    _span_of_node: dict[str, Any] = field(default_factory=dict)
    _declared: dict[str, NodeMeta] = field(default_factory=dict)
    _last_request: (
        tuple[tuple[Any, ...], dict[str, Any], tuple[str, SpanKind, dict[str, Any]]] | None
    ) = None

    def start(self) -> None:
        self._run_span = self.tracer.start_span(
            f"{sc.OP_INVOKE_WORKFLOW} {self.name}",
            kind=SpanKind.INTERNAL,
            attributes={
                sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_WORKFLOW,
                sc.RUN_ID: self.run_id,
                sc.NODE_KIND: "run",
                sc.OPENINFERENCE_SPAN_KIND: "CHAIN",
            },
        )
        self._run_ctx = trace.set_span_in_context(self._run_span)

    def end(self, status: str, error: BaseException | None = None) -> None:
        span = self._run_span
        if span is None:
            return
        span.set_attribute(sc.NODE_STATUS, status)
        if error is not None:
            span.set_attribute(sc.ERROR_TYPE, type(error).__name__)
            span.set_status(Status(StatusCode.ERROR, str(error)[:500]))
        span.end()
        self._run_span = None

    @property
    def run_span(self) -> Any:
        return self._run_span

    # -- events ------------------------------------------------------------------------

    def _meta(self, node_id: str) -> NodeMeta:
        declared = self._declared.get(node_id)
        return declared if declared is not None else self.meta(node_id)

    def __call__(self, event: ev.Event) -> None:
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def listen(self, bus: ev.EventBus) -> None:
        """Subscribe to ``bus``: each handler for its own event type only (what
        ``__call__`` does, without a call and a lookup per event)."""
        for kind, handler in _HANDLERS.items():
            bus.subscribe(MethodType(handler, self), only=(kind,))

    def _on_declared(self, event: ev.NodeDeclared) -> None:
        self._declared[event.node_id] = NodeMeta(
            event.kind, event.path, event.label, (), event.parent
        )

    def _on_started(self, event: ev.NodeStarted) -> None:
        self._attempts[event.node_id] = _Attempt(event.time, event.attempt)
        if self._meta(event.node_id).kind == "sampler":
            self._open_sampler(event.node_id, event.time)

    def _on_record(self, event: ev.GenerationRecord) -> None:
        current = self._attempts.get(event.node_id)
        if current is not None:
            current.record = event

    def _on_finished(self, event: ev.NodeFinished) -> None:
        if event.node_id in self._attempts:
            self._emit(
                event.node_id, event.time, "done", cache_hit=event.cache_hit, extra=event.attributes
            )

    def _on_failed(self, event: ev.NodeFailed) -> None:
        if event.node_id in self._attempts:
            self._emit(event.node_id, event.time, "failed", error=event.error)

    def _on_retried(self, event: ev.NodeRetried) -> None:
        if event.node_id in self._attempts:
            self._emit(event.node_id, event.time, "retried", error=event.error)

    def _on_cancelled(self, event: ev.NodeCancelled) -> None:
        if event.node_id in self._attempts:
            self._emit(event.node_id, event.time, "cancelled")

    def _on_skipped(self, event: ev.NodeSkipped) -> None:
        if self._meta(event.node_id).kind in ("generation", "task", "sampler"):
            self._attempts[event.node_id] = _Attempt(event.time, 0)
            self._emit(event.node_id, event.time, "skipped", reason=event.reason)

    # -- spans ---------------------------------------------------------------------------

    def _ns(self, perf_seconds: float) -> int:
        return int(perf_seconds * 1e9) + self._offset

    def _emit(
        self,
        node_id: str,
        ended: float,
        status: str,
        *,
        cache_hit: bool = False,
        error: BaseException | None = None,
        reason: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        attempt = self._attempts.pop(node_id)
        meta = self._meta(node_id)
        record = attempt.record
        links: list[Link] = []
        contexts = self._contexts
        for source, edge_kind in meta.upstream:
            context = contexts.get(source)
            if context is not None:
                links.append(Link(context, _edge_attributes(edge_kind)))
        previous = self._previous.get(node_id)
        if previous is not None:
            links.append(Link(previous, _EDGE_ATTRIBUTES["retry"]))
        attributes: dict[str, Any] = {
            sc.RUN_ID: self.run_id,
            sc.NODE_ID: node_id,
            sc.NODE_KIND: meta.kind,
            sc.NODE_LABEL: meta.label,
            sc.NODE_STATUS: status,
            sc.NODE_ATTEMPT: attempt.attempt,
            sc.SPAN_PATH: meta.path,
            sc.CACHE_HIT: cache_hit,
            sc.NODE_UPSTREAM: meta.upstream_ids,
            sc.NODE_UPSTREAM_KINDS: meta.upstream_kinds,
            sc.OPENINFERENCE_SPAN_KIND: "LLM" if meta.kind == "generation" else "CHAIN",
        }
        kind = SpanKind.INTERNAL
        name = meta.label
        if meta.kind == "generation" and record is not None:
            name, kind = self._generation_attributes(attributes, record)
        if reason:
            attributes[sc.SKIP_REASON] = reason[:500]
        if extra:
            attributes.update({k: v for k, v in extra.items() if v is not None})
        span_status = _UNSET
        failure = error or (record.error if record is not None else None)
        if status in ("failed", "retried") and failure is not None:
            attributes[sc.ERROR_TYPE] = type(failure).__name__
            attributes[sc.ERROR_MESSAGE] = str(failure)[:500]
            span_status = Status(StatusCode.ERROR, str(failure)[:500])
        elif status == "cancelled":
            attributes[sc.ERROR_TYPE] = "cancelled"
            span_status = Status(StatusCode.ERROR, "cancelled")
        span = self._span_of_node.pop(node_id, None) if meta.kind == "sampler" else None
        if span is not None:  # a sampler's span, open since it started
            span.set_attributes(attributes)
            for link in links:
                span.add_link(link.context, link.attributes)
            if span_status is not _UNSET:
                span.set_status(span_status)
            span.end(end_time=self._ns(ended))
            context = span.get_span_context()
        else:
            parent = self._run_span
            if parent is None:
                return  # the run span has ended: nothing can nest under it any more
            if meta.parent is not None and meta.parent in self._span_of_node:
                parent = self._span_of_node[meta.parent]
            start, end = self._ns(attempt.started), self._ns(ended)
            if self.sink is not None:
                context = self.sink.emit(
                    name,
                    parent.get_span_context(),
                    kind,
                    attributes,
                    links,
                    span_status,
                    start,
                    end,
                )
            else:
                span = self.tracer.start_span(
                    name,
                    context=trace.set_span_in_context(parent),
                    kind=kind,
                    attributes=attributes,
                    links=links,
                    start_time=start,
                )
                if span_status is not _UNSET:
                    span.set_status(span_status)
                span.end(end_time=end)
                context = span.get_span_context()
        if status == "retried":
            self._previous[node_id] = context
        else:
            contexts[node_id] = context
            self._previous.pop(node_id, None)

    def _generation_attributes(
        self, attributes: dict[str, Any], record: ev.GenerationRecord
    ) -> tuple[str, SpanKind]:
        name, kind, request = self._request_attributes(record)
        attributes.update(request)
        if record.finish_reason:
            attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] = (record.finish_reason,)
        usage = record.usage
        attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] = usage.input_tokens
        attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = usage.output_tokens
        attributes[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cached_input_tokens
        if self.capture == "SPAN_ONLY":
            attributes[sc.GEN_AI_INPUT_MESSAGES] = json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": _cut(record.prompt)}]}]
            )
            if record.output is not None:
                attributes[sc.GEN_AI_OUTPUT_MESSAGES] = json.dumps(
                    [
                        {
                            "role": "assistant",
                            "parts": [{"type": "text", "content": _cut(record.output)}],
                            "finish_reason": record.finish_reason or "",
                        }
                    ]
                )
        return name, kind

    def _request_attributes(
        self, record: ev.GenerationRecord
    ) -> tuple[str, SpanKind, dict[str, Any]]:
        """Span name, kind and the attributes of the request: the engine, model and
        options. The last ones made are reused: most generations of a run share them."""
        key = (record.mode, record.provider, record.engine, record.model, record.server)
        last = self._last_request
        if last is not None and last[0] == key and last[1] == record.options:
            return last[2]
        operation = sc.OP_CHAT if record.mode == "chat" else sc.OP_TEXT_COMPLETION
        options = record.options
        attributes: dict[str, Any] = {
            sc.GEN_AI_OPERATION_NAME: operation,
            sc.GEN_AI_PROVIDER_NAME: record.provider or record.engine,
            sc.GEN_AI_REQUEST_MODEL: record.model,
        }
        for option, name in (
            ("temperature", sc.GEN_AI_REQUEST_TEMPERATURE),
            ("max_tokens", sc.GEN_AI_REQUEST_MAX_TOKENS),
            ("top_p", sc.GEN_AI_REQUEST_TOP_P),
            ("top_k", sc.GEN_AI_REQUEST_TOP_K),
            ("seed", sc.GEN_AI_REQUEST_SEED),
        ):
            value = options.get(option)
            if isinstance(value, bool | int | float | str):  # what an attribute may hold
                attributes[name] = value
        attributes[sc.OPTIONS] = json.dumps(
            {
                k: list(v) if isinstance(v, tuple) else v
                for k, v in options.items()
                if k != "system"
            },
            sort_keys=True,
            default=str,
        )
        kind = SpanKind.INTERNAL
        if record.server is not None:
            kind = SpanKind.CLIENT
            attributes[sc.SERVER_ADDRESS] = record.server[0]
            attributes[sc.SERVER_PORT] = record.server[1]
        made = (f"{operation} {record.model}", kind, attributes)
        self._last_request = (key, dict(options), made)
        return made

    def _open_sampler(self, node_id: str, started: float) -> None:
        """A sampler's span is opened when it starts: its attempts are its children."""
        meta = self._meta(node_id)
        self._span_of_node[node_id] = self.tracer.start_span(
            meta.label,
            context=self._run_ctx,
            kind=SpanKind.INTERNAL,
            attributes={sc.RUN_ID: self.run_id, sc.NODE_KIND: "sampler"},
            start_time=self._ns(started),
        )


#: What each event type does to the run's spans (other events are ignored).
_HANDLERS: dict[type, Callable[[RunTracer, Any], None]] = {
    ev.NodeDeclared: RunTracer._on_declared,
    ev.NodeStarted: RunTracer._on_started,
    ev.GenerationRecord: RunTracer._on_record,
    ev.NodeFinished: RunTracer._on_finished,
    ev.NodeFailed: RunTracer._on_failed,
    ev.NodeRetried: RunTracer._on_retried,
    ev.NodeCancelled: RunTracer._on_cancelled,
    ev.NodeSkipped: RunTracer._on_skipped,
}


def _cut(text: str) -> str:
    return text if len(text) <= CONTENT_LIMIT else text[:CONTENT_LIMIT] + "…[truncated]"
