"""The run's events: the one stream that progress, the LogDAG and tests subscribe to.

The public names (``__all__``) are the event types and ``Listener``: a
listener passed to ``run(listeners=...)`` receives them. ``EventBus`` and
``use_bus`` (to watch engine calls made outside a run) are in
``spangraph.lowlevel``; ``emit`` and ``current_bus`` are spangraph's own wiring.

The scheduler and the engines' telemetry step ``emit()`` events; whoever
wants them subscribes to the ``EventBus`` that is current (a context
variable, so concurrent runs keep their streams apart). Emitting with no
bus current costs one context-variable read.

Events are read-only records. They are plain slotted dataclasses, not
frozen ones: a frozen dataclass sets every field through
``object.__setattr__``, which made building an event about five times
slower, and a traced run builds three per generation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from .nodes import Timings, Usage


@dataclass(slots=True)
class Event:
    """Something that happened to a graph node. ``node_id`` is its content id."""

    node_id: str
    time: float = field(default_factory=perf_counter, kw_only=True)


@dataclass(slots=True)
class NodeQueued(Event):
    """A run took the node on (as the run starts, or as a dynamic node adds it).
    ``kind`` is the node's kind (``"generation"``, ``"task"``, ...)."""

    kind: str = ""
    path: str = ""


@dataclass(slots=True)
class NodeStarted(Event):
    """The node's work began (``attempt`` counts from 1; a retry starts again)."""

    attempt: int = 1


@dataclass(slots=True)
class NodeDeclared(Event):
    """A node that is not in the compiled graph: a sampler's attempt or judge call."""

    kind: str = "generation"
    label: str = ""
    path: str = ""
    parent: str | None = None
    #: The declared nodes it reads (a judge call: the attempt it judges).
    upstream: tuple[str, ...] = ()


@dataclass(slots=True)
class NodeFinished(Event):
    """The node finished; ``cache_hit``: its output came from the output memo."""

    cache_hit: bool = False
    #: Extra span attributes (a sampler attempt's validation result, say), or None.
    #: String values are free text: on spans only with content capture on.
    attributes: Mapping[str, Any] | None = None


@dataclass(slots=True)
class NodeFailed(Event):
    """The node failed, after any retries: ``error``, and its span path."""

    error: BaseException | None = None
    path: str = ""


@dataclass(slots=True)
class NodeRetried(Event):
    """Attempt ``attempt`` failed with ``error``; the next starts after ``delay`` seconds."""

    attempt: int = 1
    error: BaseException | None = None
    delay: float = 0.0


@dataclass(slots=True)
class NodeSkipped(Event):
    """A node skipped because an input failed. ``reason`` quotes the error's message
    (free text: on spans only with content capture on); ``input_path`` (the failed
    input's span path) and ``error_type`` are structural."""

    reason: str = ""
    input_path: str = ""
    error_type: str = ""


@dataclass(slots=True)
class NodeCancelled(Event):
    """The node was stopped unfinished: the run was cancelled, or stopped by a failure."""


@dataclass(slots=True)
class NodeInterrupted(Event):
    """A task paused with ``interrupt()``: what depends on it waits for a resume.
    ``interrupt_id`` and ``path`` are structural; ``question`` is free text (on
    spans only with content capture on)."""

    interrupt_id: str = ""
    path: str = ""
    question: str = ""


@dataclass(slots=True)
class TokenDelta(Event):
    """Text a generation produced (``arun_stream(tokens=True)``): its deltas, in
    order, concatenate to its output."""

    text: str = ""


@dataclass(slots=True)
class NodesAdded(Event):
    """A dynamic node added ``count`` nodes to the running graph."""

    count: int = 0


@dataclass(slots=True)
class CacheHit(Event):
    """A generation was served from the output memo: its ``key``, and the store's name."""

    key: str = ""
    store: str = ""


@dataclass(slots=True)
class CacheFailed(Event):
    """An output-memo operation failed (``operation``: ``"get"``, ``"put"``,
    ``"evict"`` or ``"release"``); the generation went on without it and kept
    its output. ``store`` is the store's name, ``where`` its repr (its path)."""

    store: str = ""
    where: str = ""
    operation: str = ""
    error: BaseException | None = None


@dataclass(slots=True)
class CacheBadEntry(Event):
    """The output memo held ``count`` entries under ``key`` that could not be used
    (corrupt, or not the shape of a memo entry): skipped, and the generation
    recomputed. ``store`` is the store's name, ``where`` its repr."""

    store: str = ""
    where: str = ""
    key: str = ""
    count: int = 1


@dataclass(slots=True)
class GenerationRecord(Event):
    """The telemetry step of one generation (issued by the engine, success or not).

    ``options`` is the request's own mapping, not a copy (the record is built per
    generation): like the rest of the record, it is read-only.
    """

    engine: str = ""
    provider: str = ""
    model: str = ""
    mode: str = "completion"
    options: Mapping[str, Any] = field(default_factory=dict)
    prompt: str = ""
    output: str | None = None
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    timings: Timings = field(default_factory=Timings)
    cache_hit: bool = False
    error: BaseException | None = None
    server: tuple[str, int] | None = None
    started: float = 0.0
    #: What the request asked for: ``"json"`` when a JSON schema constrains the output,
    #: else ``"text"`` (``None``: no request was made).
    output_type: str | None = None
    #: The model that answered, as the response names it (``None``: no response).
    response_model: str | None = None
    #: Where the primitive ran, for an engine on an executor's worker: the worker's
    #: address and its wall-clock start and end (``None``: in this process).
    worker: tuple[str, float, float] | None = None
    #: The tools the request offered (OpenAI function definitions), for a tool loop's
    #: round (``None``: none). Free text: on a span with content capture on only.
    tools: tuple[Mapping[str, Any], ...] | None = None

    @classmethod
    def of(
        cls,
        node_id: str,
        *,
        engine: str,
        provider: str,
        model: str,
        mode: str,
        options: Mapping[str, Any],
        prompt: str,
        output: str | None,
        finish_reason: str | None,
        usage: Usage,
        timings: Timings,
        cache_hit: bool,
        error: BaseException | None,
        server: tuple[str, int] | None,
        started: float,
        output_type: str | None,
        response_model: str | None,
        worker: tuple[str, float, float] | None = None,
        tools: tuple[Mapping[str, Any], ...] | None = None,
    ) -> GenerationRecord:
        """The record of one generation, every field named (keyword-only: none can be
        swapped). It calls the class positionally: a class called with keywords
        builds a dict of them first, and a traced run builds a record per generation."""
        return cls(
            node_id,
            engine,
            provider,
            model,
            mode,
            options,
            prompt,
            output,
            finish_reason,
            usage,
            timings,
            cache_hit,
            error,
            server,
            started,
            output_type,
            response_model,
            worker,
            tools,
        )


#: What ``run(listeners=...)`` takes: a function called with each event.
Listener = Callable[[Event], None]


class EventBus:
    """Fan-out of events to listeners, in subscription order.

    A listener may subscribe to some event types only (``only=``): it is then
    not called for the others. It may also subscribe to events about work
    nodes only (``work_only=``: generations, tasks, samplers and their
    attempts): then whoever emits an event about a pure node (a block or a
    component, which the scheduler finishes inline) emits it with
    ``emit_pure`` or an ``emitter(kind, pure=True)``, which leave it out; a
    traced run's tracer so costs no call, and no event built, per pure node.
    Each event type's listeners are worked out once (``_routes``,
    ``_pure_routes``), so an event costs a call per interested listener.
    """

    __slots__ = ("_listeners", "_pure_routes", "_routes", "emit_record", "listening", "records")

    def __init__(self) -> None:
        self._listeners: list[tuple[Listener, frozenset[type] | None, bool]] = []
        self._routes: dict[type, tuple[Listener, ...]] = {}
        self._pure_routes: dict[type, tuple[Listener, ...]] = {}
        #: Whether anyone listens (a plain attribute: it is read per generation).
        self.listening = False
        #: Whether anyone listens to ``GenerationRecord``\s (the generate protocol's
        #: telemetry step builds one per generation only then).
        self.records = False
        #: What to call with each ``GenerationRecord`` (``emitter(GenerationRecord)``,
        #: kept current), or ``None``: the telemetry step emits one per generation.
        self.emit_record: Callable[[Event], None] | None = None

    def subscribe(
        self,
        listener: Listener,
        *,
        only: Iterable[type[Event]] | None = None,
        work_only: bool = False,
    ) -> Callable[[], None]:
        """Add a listener (for the event types in ``only``, else for all; with
        ``work_only``, not for events about pure nodes); returns a function that
        removes it."""
        entry = (listener, frozenset(only) if only is not None else None, work_only)
        self._listeners.append(entry)
        self._changed()

        def unsubscribe() -> None:
            self._listeners.remove(entry)
            self._changed()

        return unsubscribe

    def _changed(self) -> None:
        self._routes.clear()
        self._pure_routes.clear()
        self.listening = bool(self._listeners)
        self.emit_record = self.emitter(GenerationRecord)
        self.records = self.emit_record is not None

    def _route(self, kind: type, pure: bool = False) -> tuple[Listener, ...]:
        routes = self._pure_routes if pure else self._routes
        route = routes.get(kind)
        if route is None:
            route = routes[kind] = tuple(
                listener
                for listener, only, work_only in self._listeners
                if (only is None or kind in only) and not (pure and work_only)
            )
        return route

    def emitter(self, kind: type[Event], *, pure: bool = False) -> Callable[[Event], None] | None:
        """What to call with each event of ``kind`` (about a pure node, with ``pure``):
        ``None`` if no listener takes them (whoever emits them need not build them),
        the listener itself if only one does (no fan-out call per event), else
        ``emit`` (``emit_pure``). It stands for the listeners of the moment: a run's
        scheduler reads it once, after its listeners subscribed."""
        route = self._route(kind, pure)
        if not route:
            return None
        if len(route) == 1:
            return route[0]
        return self.emit_pure if pure else self.emit

    def emit(self, event: Event) -> None:
        route = self._routes.get(type(event))
        if route is None:
            route = self._route(type(event))
        for listener in route:
            listener(event)

    def emit_pure(self, event: Event) -> None:
        """``emit`` an event about a pure node: not to ``work_only`` listeners."""
        route = self._pure_routes.get(type(event))
        if route is None:
            route = self._route(type(event), True)
        for listener in route:
            listener(event)


_bus: ContextVar[EventBus | None] = ContextVar("spangraph_events", default=None)


def current_bus() -> EventBus | None:
    return _bus.get()


def emit(event: Event) -> None:
    bus = _bus.get()
    if bus is not None:
        bus.emit(event)


@contextmanager
def use_bus(bus: EventBus) -> Iterator[EventBus]:
    """Make ``bus`` current for the code (and tasks started) inside."""
    token = _bus.set(bus)
    try:
        yield bus
    finally:
        _bus.reset(token)


__all__ = [
    "CacheBadEntry",
    "CacheFailed",
    "CacheHit",
    "Event",
    "GenerationRecord",
    "Listener",
    "NodeCancelled",
    "NodeDeclared",
    "NodeFailed",
    "NodeFinished",
    "NodeInterrupted",
    "NodeQueued",
    "NodeRetried",
    "NodeSkipped",
    "NodeStarted",
    "NodesAdded",
    "TokenDelta",
]
