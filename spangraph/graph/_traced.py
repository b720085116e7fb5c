"""A run's tracing, as the graph side wires it: the compiled graph as the tracer
reads it (``tracing.TracedGraph``), and the end of a traced run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..nodes import CBlock, ModelOutputThunk
from ..nodes._internal import TailMemo, display_label, is_span
from ..tracing._internal import RunLog, ToolFacts, TracedRun
from ._compile import NodeInfo, SpanGraph
from ._task import _map_spans, task_text

if TYPE_CHECKING:
    from ._scheduler import Scheduler


class TracedSpanGraph:
    """``tracing.TracedGraph`` over a ``SpanGraph``, for one run."""

    __slots__ = ("_graph", "_tails", "nodes")

    def __init__(self, graph: SpanGraph) -> None:
        self._graph = graph
        #: The graph's own node table (it grows as a task's spans are added).
        self.nodes: dict[str, NodeInfo] = graph._nodes
        #: ``SpanGraph.path_tail``'s memo for this run (the tail of every frame walked).
        self._tails = TailMemo()

    def label(self, node_id: str, captured: bool) -> str:
        return display_label(self.nodes[node_id].span, captured=captured)

    def path_tail(self, node_id: str, limit: int) -> str:
        return self._graph.path_tail(node_id, limit, self._tails)

    def task_values(self, node_id: str) -> tuple[Any, Any]:
        thunk = self.nodes[node_id].span
        producer = thunk.producer
        given = _map_spans((producer.args, dict(producer.kwargs)), _value_of)
        return given, _value_of(thunk)

    def tool_call(self, node_id: str) -> ToolFacts:
        thunk = self.nodes[node_id].span
        producer = thunk.producer
        facts = ToolFacts(getattr(producer, "tool_name", "?"), getattr(producer, "call_id", ""))
        outcome = thunk.parsed if thunk.done else None
        if outcome is None:
            return facts
        return facts._replace(
            arguments=outcome.arguments,
            result=outcome.value,
            error=outcome.error,
            error_type=outcome.error_type,
        )

    def run_input(self) -> list[str]:
        return [
            info.span.text
            for info in self.nodes.values()
            if info.kind == "block" and not info.inputs and isinstance(info.span, CBlock)
        ]

    def run_output(self) -> list[Any]:
        return [_value_of(self.nodes[root].span) for root in self._graph.roots]


def _value_of(span: Any) -> Any:
    """What a span stands for in a task's arguments, its result or a run's outputs: a
    thunk's parsed value (``None`` until done; spans it holds, a task's, in turn),
    a block's text, another span's rendered text."""
    if isinstance(span, ModelOutputThunk):
        return _map_spans(span.parsed, _value_of) if span.done else None
    if isinstance(span, CBlock):
        return span.text
    return task_text(span) if is_span(span) else span


def finish_tracing(
    traced: TracedRun, scheduler: Scheduler, failure: BaseException | None
) -> RunLog:
    """End a traced run: its run span says how it went (``failed`` with the first
    failed node's error, ``cancelled`` with what stopped it, else ``done``), and each
    state that keeps logs (``ExecutionState.logs()``) gets its generations' logs."""
    first = scheduler.first_failure
    if first is not None:
        log = traced.finish("failed", scheduler.errors.get(first) or failure)
    elif failure is not None:
        log = traced.finish("cancelled", failure)
    else:
        log = traced.finish("done", None)
    for node_id, info in scheduler.graph._nodes.items():
        for thunk in info.thunks:
            facts = thunk._facts  # read directly: ``facts`` would make one per thunk
            if facts is not None:
                for state in facts.logged_states:
                    state._record(thunk, log.of(node_id))
    return log
