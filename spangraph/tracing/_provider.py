"""Where spangraph's spans go, and how a run's spans are collected for its LogDAG.

If the application configured an SDK ``TracerProvider`` (``trace.set_tracer_provider``),
spangraph's spans are created there, so they reach the application's
exporters, nested under the application's current span. A passive span
processor (``RunCollector``) is added to that provider once: it keeps only
spans that belong to a spangraph run in progress, for that run's LogDAG.

If the application configured nothing, spangraph uses a private SDK
provider that only collects (no exporter), and never installs a global
provider behind the application's back.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

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


_lock = threading.Lock()
_collectors: weakref.WeakKeyDictionary[Any, RunCollector] = weakref.WeakKeyDictionary()
_private: tuple[TracerProvider, RunCollector] | None = None


def tracer_and_collector() -> tuple[trace.Tracer, RunCollector, bool]:
    """The tracer to emit with, its run collector, and whether the provider is the app's."""
    global _private
    provider = trace.get_tracer_provider()
    with _lock:
        if isinstance(provider, TracerProvider):
            collector = _collectors.get(provider)
            if collector is None:
                collector = RunCollector()
                provider.add_span_processor(collector)
                _collectors[provider] = collector
            return provider.get_tracer(TRACER_NAME), collector, True
        if _private is None:
            own = TracerProvider()
            collector = RunCollector()
            own.add_span_processor(collector)
            _private = (own, collector)
        own, collector = _private
        return own.get_tracer(TRACER_NAME), collector, False
