"""Tracing: OpenTelemetry spans for every run, the LogDAG built from them, and its drawing.

``capture_content`` turns on recording of prompt and output text on
generation spans (``"SPAN_ONLY"``); ``None`` defers to the environment
variable ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``.
"""

from ._emit import CONTENT_LIMIT, NodeMeta, RunTracer, capture_mode
from ._logdag import LogDAG, LogEdge, LogNode, SpanRecord, Totals
from ._provider import RunCollector, tracer_and_collector
from ._render import COLLAPSE_THRESHOLD

#: ``"SPAN_ONLY"`` records message content on spans; ``None`` defers to the environment.
capture_content: str | None = None

__all__ = [
    "COLLAPSE_THRESHOLD",
    "CONTENT_LIMIT",
    "LogDAG",
    "LogEdge",
    "LogNode",
    "NodeMeta",
    "RunCollector",
    "RunTracer",
    "SpanRecord",
    "Totals",
    "capture_content",
    "capture_mode",
    "tracer_and_collector",
]
