"""The hand-off point: where a generation stops running inline and becomes a task.

The scheduler first drives a generation's coroutine by hand, in its own
loop, so work that never waits (an instant engine, an output-cache hit)
costs no task and no channel hop. When the protocol reaches the point where
it will really wait (the engine call), it awaits ``handoff()``: driven by
hand, that yields ``HANDOFF`` and the scheduler moves the coroutine into a
task of its own; driven by a task (or awaited directly), it does nothing.
Nothing before the hand-off point may enter a cancel scope, since the
coroutine can change tasks there.
"""

from __future__ import annotations

from collections.abc import Generator
from contextvars import ContextVar
from typing import Any

HANDOFF = object()
stepping: ContextVar[bool] = ContextVar("spangraph_stepping", default=False)


class _Handoff:
    __slots__ = ()

    def __await__(self) -> Generator[Any, Any, None]:
        if stepping.get():
            yield HANDOFF


_HANDOFF_AWAITABLE = _Handoff()


def handoff() -> _Handoff:
    return _HANDOFF_AWAITABLE


class Resumed:
    """Awaitable that finishes a coroutine the scheduler started by hand.

    ``first`` is what the coroutine yielded when it was stopped: ``HANDOFF``
    (then it is resumed with ``send(None)``) or an event-loop future it is
    waiting on (then that future is yielded to the task first).
    """

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Any, first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self._coro
        try:
            pending = coro.send(None) if self._first is HANDOFF else self._first
            while True:
                try:
                    sent = yield pending
                except BaseException as exc:  # delivered into the coroutine (cancellation)
                    pending = coro.throw(exc)
                else:
                    pending = coro.send(sent)
        except StopIteration as stop:
            return stop.value
