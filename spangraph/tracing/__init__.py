"""Tracing: OpenTelemetry spans for every run, the LogDAG built from them, and its drawing.

``capture_content`` turns on recording of free text on spans (``"SPAN_ONLY"``):
prompts and outputs, error messages, skip and validation reasons, text
options; ``None`` defers to the environment variable
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``. Without it, spans
carry such a text's length and ``text_digest`` instead.

If the application configured an SDK ``TracerProvider``, a run's spans go to
its exporters; if not, spangraph collects them privately. There is nothing
to wire: how a run's events become spans (``RunTracer``, ``SpanSink``,
``emission``) is private to this package.
"""

from ._logdag import LogDAG as LogDAG
from ._logdag import LogEdge as LogEdge
from ._logdag import LogNode as LogNode
from ._logdag import SpanRecord as SpanRecord
from ._logdag import Totals as Totals
from ._render import COLLAPSE_THRESHOLD as COLLAPSE_THRESHOLD
from ._text import CONTENT_LIMIT as CONTENT_LIMIT
from ._text import text_digest as text_digest

#: ``"SPAN_ONLY"`` records message content on spans; ``None`` defers to the environment.
capture_content: str | None = None

__all__ = [
    "COLLAPSE_THRESHOLD",
    "CONTENT_LIMIT",
    "LogDAG",
    "LogEdge",
    "LogNode",
    "SpanRecord",
    "Totals",
    "capture_content",
    "text_digest",
]
