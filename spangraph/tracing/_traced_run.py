"""One traced run: its run span, its node spans, and the LogDAG built from them.

A run (``graph/``'s ``arun``) wires its tracing in three steps::

    traced = TracedRun(graph, name, bus)  # the run span starts; a RunTracer listens
    with traced.current():                # the run span is current while the run executes
        ...
    log = traced.finish(status, error)    # the run span ends; ``log`` gives Run.log

``graph`` is the ``TracedGraph`` the run executes (what each node's span
says about its node: ``_graph``); node spans are made from the run's events
by a ``RunTracer`` (``_emit``) and reach the application's span processors
and the run's own list of spans (``_provider``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace

from .. import events as ev
from ._emit import RunTracer, capture_mode
from ._graph import TracedGraph
from ._logdag import LogDAG
from ._provider import emission

#: The tracer of the traced run whose ``current()`` is open in this context.
_current: ContextVar[RunTracer | None] = ContextVar("spangraph_traced_run", default=None)


def node_traceparent(node_id: str) -> str | None:
    """The W3C ``traceparent`` of the span of ``node_id``'s attempt under way, in the
    traced run of this context (``RunTracer.traceparent``): what an executor sends
    with a generation, so that spans made on a worker are children of the node's
    span. ``None`` outside a traced run or when the node has no attempt under way."""
    tracer = _current.get()
    return tracer.traceparent(node_id) if tracer is not None else None


class TracedRun:
    """One run's OpenTelemetry emission and LogDAG collection."""

    __slots__ = ("_collector", "run_id", "tracer")

    def __init__(
        self,
        graph: TracedGraph,
        name: str,
        bus: ev.EventBus,
        *,
        resumes: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.run_id = uuid.uuid4().hex
        out = emission()
        self._collector = out.collector
        self.tracer = RunTracer(
            tracer=out.tracer,
            run_id=self.run_id,
            name=name,
            graph=graph,
            sink=out.sink,
            capture=capture_mode(),
            collected=out.collector.open(self.run_id),
        )
        self.tracer.start(resumes)
        self.tracer.listen(bus)

    def span_ids(self) -> tuple[str, str]:
        """The run span's trace and span ids, in hex."""
        context = self.tracer._run_context
        return f"{context.trace_id:032x}", f"{context.span_id:016x}"

    @contextmanager
    def current(self) -> Iterator[None]:
        """Make the run span the current span, so that spans user code opens in tasks
        (and their worker threads) nest under it. An error leaving the run is not
        recorded here (an exception event would quote its message): ``finish``
        records it, by the run's capture mode. The run's tracer is this context's
        too (``node_traceparent``)."""
        token = _current.set(self.tracer)
        try:
            with trace.use_span(
                self.tracer.run_span,
                end_on_exit=False,
                record_exception=False,
                set_status_on_exception=False,
            ):
                yield
        finally:
            _current.reset(token)

    def finish(self, status: str, error: BaseException | None) -> RunLog:
        """End the run span with the run's ``status`` (``done``, ``failed``,
        ``cancelled``) and the error that ended it; the run's log."""
        self.tracer.end(status, error)
        self._collector.close(self.run_id)
        return RunLog(self.tracer.collected)


class RunLog:
    """A run's collected spans; its LogDAG is built from them once, when first asked for."""

    __slots__ = ("_dag", "_spans")

    def __init__(self, spans: list[Any]) -> None:
        self._spans = spans
        self._dag: LogDAG | None = None

    def get(self) -> LogDAG:
        if self._dag is None:
            self._dag = LogDAG.from_spans(self._spans)
            self._spans = []
        return self._dag

    def of(self, node_id: str) -> NodeLog:
        """The log of one generation, for the states it ran under (``logs()``)."""
        return NodeLog(self, node_id)


class NodeLog:
    """A generation's part of its run's LogDAG, cut out on demand (``resolve``)."""

    __slots__ = ("node_id", "run")

    def __init__(self, run: RunLog, node_id: str) -> None:
        self.run, self.node_id = run, node_id

    def resolve(self) -> LogDAG:
        return self.run.get().subdag(self.node_id)
