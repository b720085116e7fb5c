"""Where spangraph's spans go, and how a run's spans are collected for its LogDAG.

If the application configured an SDK ``TracerProvider`` (``trace.set_tracer_provider``),
spangraph's spans are created there, so they reach the application's
exporters, nested under the application's current span. A passive span
processor (``RunCollector``) is added to that provider once: it keeps only
spans that belong to a spangraph run in progress, for that run's LogDAG
(node spans made by ``SpanSink`` go to their run's buffer directly).

If the application configured nothing, spangraph uses a private SDK
provider that only collects (no exporter), and never installs a global
provider behind the application's back.

Node spans are reported finished. A node's span is made when the node has
ended, with the start and end times its events recorded, so there is no
live span to track; ``SpanSink`` builds it as an SDK ``ReadableSpan`` and
hands it to the provider's span processors (``on_end``; there is no
``on_start`` for a span that is already over). This skips what the tracer
API spends on a span whose attributes spangraph itself built with valid
types: re-checking every attribute value, a sampler call, locks, a copy at
``end()`` (an order of magnitude per span: ``docs/design/tracing.md``).
``TracerSink`` makes the same spans through ``start_span``/``end``: it is
the reference (``test_span_sink_agrees_with_the_tracer_sink``), and what an
SDK without the processor fan-out ``SpanSink`` reads gets. The run span (and
a sampler's span, which is open while its attempts run) always goes through
the tracer, so it is the current span for user code. Node spans follow the
run span's sampling decision, as the SDK's parent-based samplers do; an
unsampled run still collects its node spans, so ``Run.log`` is whole. The
SDK's span limits apply: at most ``max_links`` links, the attribute count
and value length limits.

Three shortcuts, each checked once against the installed API and SDK (and
not taken if the check fails): a span context is built as the tuple that
``SpanContext.__new__`` builds (its id checks made here), ``ReadableSpan``
is called positionally, and the link to a span that its users' spans carry
is made with the two attributes ``Link.__init__`` sets. All are the SDK's
own types; ``test_sink_spans_are_the_sdks_own`` checks each shortcut and
the spans made without them.
"""

from __future__ import annotations

import copy
import inspect
import random
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import (
    ReadableSpan,
    SpanLimits,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from . import _semconv as sc

TRACER_NAME = "spangraph"


class RunCollector(SpanProcessor):
    """Routes ended spans carrying ``spangraph.run.id`` to that run's buffer."""

    def __init__(self) -> None:
        self._runs: dict[str, list[ReadableSpan]] = {}
        self._lock = threading.Lock()

    def open(self, run_id: str) -> list[ReadableSpan]:
        buffer: list[ReadableSpan] = []
        with self._lock:
            self._runs[run_id] = buffer
        return buffer

    def close(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        attributes = span.attributes or {}
        run_id = attributes.get(sc.RUN_ID)
        if run_id is None:
            return
        buffer = self._runs.get(str(run_id))
        if buffer is not None:
            buffer.append(span)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class SpanSink:
    """Delivers finished node spans straight to a provider's span processors.

    Per span it does what the SDK's tracer would, less what spangraph's spans
    do not need: it makes the span's context (under the parent's trace, flags
    and state, worked out once per parent), applies the span limits, builds
    the ``ReadableSpan`` and hands it to the provider's processors. With the
    SDK's own fan-out (``SynchronousMultiSpanProcessor``) the span is added to
    its run's buffer directly and given to the other processors, instead of
    having the ``RunCollector`` look its run up by attribute.
    """

    def __init__(self, provider: TracerProvider, collector: RunCollector) -> None:
        # The SDK's fan-out to every processor added with add_span_processor().
        self._processors: SpanProcessor = provider._active_span_processor
        self._collector = collector
        # Whether the fan-out's processors can be read (and the collector left out).
        self._direct = type(self._processors) is SynchronousMultiSpanProcessor
        self._others: tuple[Any, tuple[SpanProcessor, ...]] = (None, ())
        self._resource = provider.resource
        self._scope = InstrumentationScope(TRACER_NAME, _version())
        generator = provider.id_generator
        # The SDK's default generator draws random.getrandbits(64) until it is not 0 (an
        # invalid id; emit() then asks the generator): called directly, no method call.
        self._new_span_id: Callable[[], int] = (
            partial(random.getrandbits, 64)
            if type(generator) is RandomIdGenerator
            else generator.generate_span_id
        )
        self._generator = generator
        self._parent: tuple[SpanContext, int, TraceFlags, TraceState, bool, bool] | None = None
        limits = getattr(provider, "_span_limits", None)
        limits = limits if isinstance(limits, SpanLimits) else SpanLimits()
        self._max_links = _limit(limits.max_links)
        self._max_attributes = _limit(limits.max_span_attributes)
        self._max_length = limits.max_span_attribute_length

    def emit(
        self,
        *,
        name: str,
        parent: SpanContext,
        kind: SpanKind,
        attributes: dict[str, Any],
        links: Sequence[Link],
        status: Status,
        start: int,
        end: int,
        collected: list[ReadableSpan],
        link_attributes: Mapping[str, Any],
    ) -> Link:
        """Report one finished span under ``parent``; add it to ``collected`` (its run's
        spans); return a link to it with ``link_attributes``."""
        known = self._parent
        if known is None or known[0] is not parent:  # one tuple: threads may share the sink
            known = self._parent = (
                parent,
                parent.trace_id,
                parent.trace_flags,
                parent.trace_state,
                parent.trace_flags.sampled,
                _FAST_CONTEXT and parent.is_valid,
            )
        _, trace_id, flags, state, sampled, fast = known
        span_id = self._new_span_id()
        if fast and 0 < span_id <= _MAX_SPAN_ID:
            context = _new_tuple(SpanContext, (trace_id, span_id, False, flags, state, True))
        else:
            if not span_id:
                span_id = self._generator.generate_span_id()
            context = SpanContext(
                trace_id=trace_id,
                span_id=span_id,
                is_remote=False,
                trace_flags=flags,
                trace_state=state,
            )
        if len(links) > self._max_links:
            links = links[: self._max_links]
        if len(attributes) > self._max_attributes or self._max_length is not None:
            attributes = _bounded(attributes, self._max_attributes, self._max_length)
        if _POSITIONAL:
            span = ReadableSpan(
                name, context, parent, self._resource, attributes, (), tuple(links), kind, None,
                status, start, end, self._scope,
            )  # fmt: skip
        else:
            span = ReadableSpan(
                name,
                context,
                parent,
                self._resource,
                attributes,
                links=tuple(links),
                kind=kind,
                status=status,
                start_time=start,
                end_time=end,
                instrumentation_scope=self._scope,
            )
        if _FAST_LINK:
            link = _new_object(Link)
            link._context, link._attributes = context, link_attributes
        else:
            link = Link(context, link_attributes)
        if not self._direct:
            # An unsampled run's spans are not exported, but the run's LogDAG keeps them.
            (self._processors if sampled else self._collector).on_end(span)
            return link
        collected.append(span)
        if sampled:
            current = self._processors._span_processors  # type: ignore[attr-defined]
            others = self._others
            if others[0] is not current:  # a processor was added since the last span
                others = self._others = (
                    current,
                    tuple(p for p in current if p is not self._collector),
                )
            for processor in others[1]:
                processor.on_end(span)
        return link

    def new_span_id(self) -> int:
        """A span id for a span made later (``allotted``), from the provider's id
        generator."""
        return self._new_span_id() or self._generator.generate_span_id()

    def allotted(self, span_id: int) -> SpanSink:
        """This sink, for one span whose id was allotted beforehand (``new_span_id``):
        a copy that makes its span with ``span_id``. (A copy, so that ``emit`` takes
        no argument for it: only a remote generation's span has an allotted id.)"""
        sink = copy.copy(self)
        sink._new_span_id = partial(int, span_id)
        return sink


class TracerSink:
    """Delivers finished node spans through the tracer API, span by span: the
    reference ``SpanSink`` stands in for, and what an SDK without the processor
    fan-out that ``SpanSink`` reads gets. The provider's ``RunCollector`` adds
    each span to its run's spans, so ``collected`` is not needed here."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def emit(
        self,
        *,
        name: str,
        parent: SpanContext,
        kind: SpanKind,
        attributes: dict[str, Any],
        links: Sequence[Link],
        status: Status,
        start: int,
        end: int,
        collected: list[ReadableSpan],
        link_attributes: Mapping[str, Any],
    ) -> Link:
        """``SpanSink.emit``, through ``start_span`` and ``end``."""
        span = self._tracer.start_span(
            name,
            context=trace.set_span_in_context(trace.NonRecordingSpan(parent)),
            kind=kind,
            attributes=attributes,
            links=links,
            start_time=start,
        )
        if status.status_code is not StatusCode.UNSET:
            span.set_status(status)
        span.end(end_time=end)
        return Link(span.get_span_context(), link_attributes)

    def new_span_id(self) -> None:
        """None: the tracer API makes a span's id when it starts the span, so no id
        can be allotted beforehand."""
        return None

    def allotted(self, span_id: int) -> TracerSink:
        """This sink (it allots no id: ``new_span_id``, so this is never called)."""
        return self


_MAX_SPAN_ID = 2**64 - 1
_new_tuple = tuple.__new__


def _fast_context_works() -> bool:
    """Whether a ``SpanContext`` is the tuple ``(trace_id, span_id, is_remote,
    trace_flags, trace_state, is_valid)`` that the API's ``__new__`` builds, so
    that ``SpanSink`` may build one without the call (and its id checks, which
    it makes itself). Checked once, against this version of the API."""
    flags, state = TraceFlags(TraceFlags.SAMPLED), TraceState([("k", "v")])
    made = SpanContext(3, 5, False, flags, state)
    fast = _new_tuple(SpanContext, (3, 5, False, flags, state, True))
    return bool(
        made == fast
        and (fast.trace_id, fast.span_id, fast.is_remote) == (3, 5, False)
        and fast.trace_flags is flags
        and fast.trace_state is state
        and fast.is_valid
    )


_FAST_CONTEXT = _fast_context_works()
_new_object = object.__new__


def _fast_link_works() -> bool:
    """Whether a ``Link`` is an object holding its context and attributes in
    ``_context`` and ``_attributes`` (what its ``__init__`` sets, through its base
    class's), so that ``SpanSink`` may make one without the two calls."""
    context = SpanContext(3, 5, False)
    attributes = {"k": "v"}
    made, fast = Link(context, attributes), _new_object(Link)
    fast._context, fast._attributes = context, attributes
    return bool(
        vars(made) == vars(fast)
        and fast.context is context
        and fast.attributes is attributes
        and fast.dropped_attributes == made.dropped_attributes
    )


_FAST_LINK = _fast_link_works()
#: Whether ``ReadableSpan.__init__`` takes its arguments in the order ``SpanSink``
#: passes them (positionally: with keywords, the call costs the sink a sizeable
#: part of its time; ``docs/design/tracing.md``).
_POSITIONAL = list(inspect.signature(ReadableSpan.__init__).parameters)[1:14] == [
    "name",
    "context",
    "parent",
    "resource",
    "attributes",
    "events",
    "links",
    "kind",
    "instrumentation_info",
    "status",
    "start_time",
    "end_time",
    "instrumentation_scope",
]


def _limit(value: int | None) -> int:
    return value if value is not None else 1 << 62


def _bounded(attributes: Mapping[str, Any], count: int, length: int | None) -> dict[str, Any]:
    """Apply the SDK's attribute count and value length limits."""
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if len(out) >= count:
            break
        if length is not None:
            if isinstance(value, str):
                value = value[:length]
            elif isinstance(value, tuple):
                value = tuple(v[:length] if isinstance(v, str) else v for v in value)
        out[key] = value
    return out


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spangraph")
    except PackageNotFoundError:
        return "0"


class Emission(NamedTuple):
    """Where a run's spans go: the tracer (run and sampler spans), the run collector,
    and the sink for finished node spans."""

    tracer: trace.Tracer
    collector: RunCollector
    sink: SpanSink | TracerSink


_lock = threading.Lock()
_emissions: weakref.WeakKeyDictionary[Any, Emission] = weakref.WeakKeyDictionary()
_private: Emission | None = None


def emission() -> Emission:
    """Where this run's spans go (the application's SDK provider, else a private one)."""
    global _private
    provider = trace.get_tracer_provider()
    with _lock:
        if isinstance(provider, TracerProvider):
            found = _emissions.get(provider)
            if found is None:
                collector = RunCollector()
                provider.add_span_processor(collector)
                found = _emissions[provider] = _emission(provider, collector)
            return found
        if _private is None:
            own = TracerProvider(shutdown_on_exit=False)
            collector = RunCollector()
            own.add_span_processor(collector)
            _private = _emission(own, collector)
        return _private


def _emission(provider: TracerProvider, collector: RunCollector) -> Emission:
    tracer = provider.get_tracer(TRACER_NAME, _version())
    # Without the SDK's processor fan-out (another SDK version), spans go through the tracer.
    if hasattr(provider, "_active_span_processor"):
        return Emission(tracer, collector, SpanSink(provider, collector))
    return Emission(tracer, collector, TracerSink(tracer))
