"""``arun_stream()``: a run whose events (and, opt-in, generated tokens) arrive as an
async iterator while it is under way.

The form is an async context manager, the form anyio's structured concurrency asks
for: the run is a task of the ``async with`` block, so leaving the block (a
``break``, an exception in the consumer, a cancellation) cancels the run there and
then, and no task outlives it::

    async with arun_stream(*roots, tokens=True) as events:
        async for event in events:
            ...  # NodeStarted, TokenDelta, NodeFinished, ..., then the Run

The last item is the ``Run``. A run that fails (``on_error="raise"``) raises its
``NodeFailedError`` from the iterator after the events that led to it. Outputs that
finished before the run was stopped are kept (on their thunks, and in the memo).

Buffering: events are queued as they happen, and the run never waits for the
consumer. Node events are few (a handful per node), so they are kept whatever the
consumer's pace. Token deltas are what a slow consumer could let pile up: once more
than ``max_buffered`` items wait, a node's new deltas are appended to the delta of
that node already waiting, so a slow consumer gets fewer, longer deltas, in order,
and memory stays bounded by the nodes and the text the run makes anyway.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio
import anyio.abc

from .. import events as ev
from ..nodes import ModelOutputThunk
from ._compile import SpanGraph
from ._run import Run, _graph_of, arun

#: Items waiting in a stream beyond which token deltas are merged (see above).
MAX_BUFFERED = 1024


class RunStream:
    """The events of a run under way, then its ``Run`` (an async iterator; see
    ``arun_stream``). ``merged_deltas`` counts the token deltas merged into one
    still waiting because the consumer was behind."""

    def __init__(self, max_buffered: int) -> None:
        self._items: deque[ev.Event | Run] = deque()
        self._waiting: dict[str, ev.TokenDelta] = {}  # a node's delta still queued
        self._max_buffered = max_buffered
        self._wakeup = anyio.Event()
        self._finished = False
        self._error: BaseException | None = None
        self.merged_deltas = 0

    def __aiter__(self) -> RunStream:
        return self

    async def __anext__(self) -> ev.Event | Run:
        while not self._items:
            if self._finished:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                raise StopAsyncIteration
            await self._wakeup.wait()
            self._wakeup = anyio.Event()
        item = self._items.popleft()
        if isinstance(item, ev.TokenDelta) and self._waiting.get(item.node_id) is item:
            del self._waiting[item.node_id]
        return item

    def _put(self, item: ev.Event | Run) -> None:
        if isinstance(item, ev.TokenDelta):
            waiting = self._waiting.get(item.node_id)
            if waiting is not None and len(self._items) >= self._max_buffered:
                waiting.text += item.text
                self.merged_deltas += 1
                return
            self._waiting[item.node_id] = item
        self._items.append(item)
        self._wakeup.set()

    def _end(self, error: BaseException | None = None) -> None:
        self._finished, self._error = True, error
        self._wakeup.set()


@contextlib.asynccontextmanager
async def arun_stream(
    *roots: Any,
    tokens: bool = False,
    max_buffered: int = MAX_BUFFERED,
    listeners: Sequence[Callable[[ev.Event], None]] = (),
    **options: Any,
) -> AsyncIterator[RunStream]:
    """Run spans (or one compiled ``SpanGraph``) in the ``async with`` block, and
    iterate over the run's events as they happen, then its ``Run``.

    ``tokens=True`` also yields ``TokenDelta`` events: the text of each generation as
    the engine streams it, after the node's ``NodeStarted`` and before its
    ``NodeFinished`` (an engine that cannot stream, and a memo hit, give the whole
    text as one delta; a retried node's next attempt follows its ``NodeRetried``).
    ``max_buffered`` is how many items may wait before a node's deltas are merged
    (see the module's docstring). The other keywords are ``arun``'s (``engine``,
    ``cache``, ``max_concurrency``, ``on_error``, ``trace``, ...). Leaving the block
    before the run has finished cancels it.
    """
    if not isinstance(max_buffered, int) or max_buffered < 1:
        raise ValueError(f"arun_stream(max_buffered=...) must be an int >= 1, got {max_buffered!r}")
    graph = _graph_of(roots)
    if graph.held():  # another run holds it: run a copy, whose thunks are followed here
        graph = graph.instance()
    stream = RunStream(max_buffered)
    try:
        async with _run_in_task_group(graph, stream, tokens, listeners, options) as running:
            yield running
    except BaseExceptionGroup as group:
        # The run's own errors reach the iterator, so a group holds what the block
        # raised: raise it as it was, not wrapped in a group of one.
        if len(group.exceptions) != 1:
            raise
        error = group.exceptions[0]
        raise error.with_traceback(error.__traceback__) from error.__cause__


@contextlib.asynccontextmanager
async def _run_in_task_group(
    graph: SpanGraph,
    stream: RunStream,
    tokens: bool,
    listeners: Sequence[Callable[[ev.Event], None]],
    options: dict[str, Any],
) -> AsyncIterator[RunStream]:
    async with anyio.create_task_group() as tg:
        follower = _Tokens(graph, tg, stream) if tokens else None

        def listen(event: ev.Event) -> None:
            if follower is not None:
                follower.before(event)
            stream._put(event)

        async def run() -> None:
            try:
                outcome = await arun(graph, listeners=[listen, *listeners], **options)
            except Exception as exc:  # raised from the iterator, after the events
                stream._end(exc)
            else:
                stream._put(outcome)
                stream._end()

        tg.start_soon(run)
        try:
            yield stream
        finally:
            tg.cancel_scope.cancel()


class _Tokens:
    """Turns the generations' text into ``TokenDelta`` events, in order: a task per
    running generation passes its deltas on as they come, and a node's remaining
    text is passed on before its end event, whichever comes first."""

    def __init__(self, graph: SpanGraph, tg: anyio.abc.TaskGroup, stream: RunStream) -> None:
        self._graph, self._tg, self._stream = graph, tg, stream
        #: Running generations: node id -> (thunk, the deltas list, how many were sent).
        self._open: dict[str, tuple[ModelOutputThunk[Any], Any, int]] = {}
        self._sent: set[str] = set()  # nodes some text of which was sent
        for node_id in graph.generations():
            self._ask(node_id)

    def _ask(self, node_id: str) -> None:
        for thunk in self._graph[node_id].thunks:
            thunk.facts.stream = True  # asked before the generation starts: it streams

    def before(self, event: ev.Event) -> None:
        node_id = event.node_id
        node = self._graph._nodes.get(node_id)
        if node is None or node.kind != "generation":
            return
        if isinstance(event, ev.NodeQueued):  # added while the run is under way
            self._ask(node_id)
        elif isinstance(event, ev.NodeStarted) and node_id not in self._open:
            thunk = node.thunks[0]
            self._open[node_id] = (thunk, thunk._deltas, 0)
            self._tg.start_soon(self._watch, node_id, thunk)
        elif isinstance(event, ev.NodeRetried):
            self._flush(node_id)
        elif isinstance(
            event, ev.NodeFinished | ev.NodeFailed | ev.NodeCancelled | ev.NodeInterrupted
        ):
            self._flush(node_id)
            self._open.pop(node_id, None)
            thunk = node.thunks[0]
            if isinstance(event, ev.NodeFinished) and node_id not in self._sent and thunk._value:
                self._send(node_id, thunk._value)  # not streamed (a memo hit, say)

    async def _watch(self, node_id: str, thunk: ModelOutputThunk[Any]) -> None:
        with contextlib.suppress(Exception):  # a failure is the node's event
            async for _ in thunk._follow():
                if node_id not in self._open:
                    return
                self._flush(node_id)

    def _flush(self, node_id: str) -> None:
        """Send the node's deltas not sent yet (a retry's deltas start a new list)."""
        entry = self._open.get(node_id)
        if entry is None:
            return
        thunk, deltas, sent = entry
        if thunk._deltas is not deltas:
            deltas, sent = thunk._deltas, 0
        for text in deltas[sent:]:
            self._send(node_id, text)
        self._open[node_id] = (thunk, deltas, len(deltas))

    def _send(self, node_id: str, text: str) -> None:
        self._sent.add(node_id)
        self._stream._put(ev.TokenDelta(node_id, text=text))


__all__ = ["MAX_BUFFERED", "RunStream", "arun_stream"]
