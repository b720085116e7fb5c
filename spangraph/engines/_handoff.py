"""The hand-off: where a generation stops running inline and becomes a task.

The scheduler starts a generation inline (``InferenceEngine._start``): the
protocol's synchronous steps run in the scheduler's own loop, so work that
never waits (an instant engine, an output-cache hit) costs no task and no
channel hop. An engine that ``completes_inline`` has its primitive's
coroutine driven by hand too; if that coroutine waits on the event loop, it
is moved, with what it waits on, into a task, where ``Resumed`` finishes it.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any


class Resumed:
    """Awaitable that finishes a coroutine that was started by hand.

    ``first`` is what the coroutine yielded when it stopped (the event-loop
    future it waits on): it is yielded to the task first, then the coroutine
    is resumed with what the task sends back, to the end.
    """

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Any, first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self._coro
        try:
            pending = self._first
            while True:
                try:
                    sent = yield pending
                except BaseException as exc:  # delivered into the coroutine (cancellation)
                    pending = coro.throw(exc)
                else:
                    pending = coro.send(sent)
        except StopIteration as stop:
            return stop.value
