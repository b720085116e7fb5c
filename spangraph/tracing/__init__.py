"""Tracing: OpenTelemetry spans for every run, the LogDAG built from them, and its drawing.

``capture_content`` turns on recording of free text on spans (``"SPAN_ONLY"``):
prompts and outputs, error messages, skip and validation reasons, text
options; ``None`` defers to the environment variable
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``. Without it, spans
carry such a text's length and ``text_digest`` instead.
"""

from ._emit import RunTracer, capture_mode
from ._logdag import LogDAG, LogEdge, LogNode, SpanRecord, Totals
from ._provider import Emission, RunCollector, SpanSink, emission
from ._render import COLLAPSE_THRESHOLD
from ._text import CONTENT_LIMIT, text_digest

#: ``"SPAN_ONLY"`` records message content on spans; ``None`` defers to the environment.
capture_content: str | None = None

__all__ = [
    "COLLAPSE_THRESHOLD",
    "CONTENT_LIMIT",
    "Emission",
    "LogDAG",
    "LogEdge",
    "LogNode",
    "RunCollector",
    "RunTracer",
    "SpanRecord",
    "SpanSink",
    "Totals",
    "capture_content",
    "capture_mode",
    "emission",
    "text_digest",
]
