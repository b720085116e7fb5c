"""What spangraph's other packages may use of ``tracing`` beyond its public names.
For spangraph's own packages; not public: no name here is kept stable for users,
and nothing here is in ``spangraph.tracing``.

Another package imports a public name from ``spangraph.tracing`` and anything
else from here, never from a private module of ``tracing`` (a test checks it).
The emission wiring (``RunTracer``, ``SpanSink``, ``Emission``, ``emission``,
``RunCollector``) is used by ``TracedRun`` only, and so is not here.
"""

from . import _semconv as semconv
from ._emit import capture_mode as capture_mode
from ._graph import ToolFacts as ToolFacts
from ._render import mimebundle as mimebundle
from ._render import render_file as render_file
from ._render import wrap_label as wrap_label
from ._traced_run import RunLog as RunLog
from ._traced_run import TracedRun as TracedRun
from ._traced_run import node_traceparent as node_traceparent

__all__ = [
    "RunLog",
    "ToolFacts",
    "TracedRun",
    "capture_mode",
    "mimebundle",
    "node_traceparent",
    "render_file",
    "semconv",
    "wrap_label",
]
