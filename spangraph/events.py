"""The run's events: the one stream that progress, the LogDAG and tests subscribe to.

The scheduler and the engines' telemetry step ``emit()`` events; whoever
wants them subscribes to the ``EventBus`` that is current (a context
variable, so concurrent runs keep their streams apart). Emitting with no
bus current costs one context-variable read.

Events are read-only records. They are plain slotted dataclasses, not
frozen ones: a frozen dataclass sets every field through
``object.__setattr__``, which made building an event about five times
slower, and a traced run builds six per generation.
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
    kind: str = ""
    path: str = ""


@dataclass(slots=True)
class NodeStarted(Event):
    attempt: int = 1


@dataclass(slots=True)
class NodeDeclared(Event):
    """A node that is not in the compiled graph: a sampler's attempt or judge call."""

    kind: str = "generation"
    label: str = ""
    path: str = ""
    parent: str | None = None


@dataclass(slots=True)
class NodeFinished(Event):
    cache_hit: bool = False
    #: Extra span attributes (a sampler attempt's validation result, say), or None.
    attributes: Mapping[str, Any] | None = None


@dataclass(slots=True)
class NodeFailed(Event):
    error: BaseException | None = None
    path: str = ""


@dataclass(slots=True)
class NodeRetried(Event):
    attempt: int = 1
    error: BaseException | None = None
    delay: float = 0.0


@dataclass(slots=True)
class NodeSkipped(Event):
    reason: str = ""


@dataclass(slots=True)
class NodeCancelled(Event):
    pass


@dataclass(slots=True)
class NodesAdded(Event):
    """A dynamic node added ``count`` nodes to the running graph."""

    count: int = 0


@dataclass(slots=True)
class CacheHit(Event):
    key: str = ""
    store: str = ""


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


Listener = Callable[[Event], None]


class EventBus:
    """Fan-out of events to listeners, in subscription order.

    A listener may subscribe to some event types only (``only=``): it is then
    not called for the others. Each event type's listeners are worked out
    once (``_routes``), so an event costs a call per interested listener.
    """

    __slots__ = ("_listeners", "_routes", "emit_record", "listening", "records")

    def __init__(self) -> None:
        self._listeners: list[tuple[Listener, frozenset[type] | None]] = []
        self._routes: dict[type, tuple[Listener, ...]] = {}
        #: Whether anyone listens (a plain attribute: it is read per generation).
        self.listening = False
        #: Whether anyone listens to ``GenerationRecord``\s (the generate protocol's
        #: telemetry step builds one per generation only then).
        self.records = False
        #: What to call with each ``GenerationRecord`` (``emitter(GenerationRecord)``,
        #: kept current), or ``None``: the telemetry step emits one per generation.
        self.emit_record: Callable[[Event], None] | None = None

    def subscribe(
        self, listener: Listener, *, only: Iterable[type[Event]] | None = None
    ) -> Callable[[], None]:
        """Add a listener (for the event types in ``only``, else for all);
        returns a function that removes it."""
        entry = (listener, frozenset(only) if only is not None else None)
        self._listeners.append(entry)
        self._changed()

        def unsubscribe() -> None:
            self._listeners.remove(entry)
            self._changed()

        return unsubscribe

    def _changed(self) -> None:
        self._routes.clear()
        self.listening = bool(self._listeners)
        self.emit_record = self.emitter(GenerationRecord)
        self.records = self.emit_record is not None

    def _route(self, kind: type) -> tuple[Listener, ...]:
        route = self._routes.get(kind)
        if route is None:
            route = self._routes[kind] = tuple(
                listener for listener, only in self._listeners if only is None or kind in only
            )
        return route

    def emitter(self, kind: type[Event]) -> Callable[[Event], None] | None:
        """What to call with each event of ``kind``: ``None`` if no listener takes them
        (whoever emits them need not build them), the listener itself if only one
        does (no fan-out call per event), else ``emit``. It stands for the listeners
        of the moment: a run's scheduler reads it once, after its listeners subscribed."""
        route = self._route(kind)
        if not route:
            return None
        return route[0] if len(route) == 1 else self.emit

    def emit(self, event: Event) -> None:
        route = self._routes.get(type(event))
        if route is None:
            route = self._route(type(event))
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
