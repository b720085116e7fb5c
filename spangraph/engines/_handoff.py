"""The hand-off: where a generation stops running inline and becomes a task.

The scheduler starts a generation inline (``InferenceEngine._start``): the
protocol's synchronous steps run in the scheduler's own loop, so work that
never waits (an instant engine, an output-cache hit) costs no task and no
channel hop. An engine that ``completes_inline`` has its primitive's
coroutine driven by hand too, by the scheduler's ``InlineDriver`` (or, for a
direct ``generate()``, by ``send``); if that coroutine waits on the event
loop, it is moved, with what it waits on, into a task, where ``Resumed`` (or
the driver's ``hand_off``) finishes it.
"""

from __future__ import annotations

import types
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


#: What ``_drive`` yields when the coroutine it was sent has returned.
RETURNED: Any = object()


@types.coroutine
def _drive(out: list[Any]) -> Generator[Any, Any, None]:
    """Await each coroutine sent in; when one returns, its value goes in ``out[0]``
    and ``RETURNED`` is yielded (``yield from`` hands a return value over directly)."""
    coro = yield RETURNED
    while True:
        out[0] = yield from coro
        coro = yield RETURNED


class InlineDriver:
    """Drives coroutines by hand, reading each one's return value without an exception.

    ``coro.send(None)`` hands a returning coroutine's value back as a
    ``StopIteration``: an exception (and a traceback entry) per call, which
    costs more than all an instant engine's call does. The driver is one
    generator that awaits (``yield from``) each coroutine it is sent:
    ``send(coro)`` returns ``RETURNED`` when the coroutine returned without
    waiting (its value is then ``out[0]``), else what it waits on (an
    event-loop future); ``hand_off(first)`` then gives the awaitable that
    finishes that call in a task, and the driver starts afresh for its next
    call. If the coroutine raises, ``send`` raises, the generator is over, and
    whoever caught it calls ``renew()``.

    One per scheduler (one thread, one event loop). It is not re-entrant: a
    coroutine it drives must not be sent another through the same driver (the
    scheduler starts generations from its own loop, never inside an engine call).
    """

    __slots__ = ("_gen", "out", "send")

    def __init__(self) -> None:
        self.renew()

    def renew(self) -> None:
        """Start a new generator (after one ended in an exception, or was handed off)."""
        out: list[Any] = [None]
        gen = _drive(out)
        gen.send(None)  # to its first yield
        self._gen, self.out, self.send = gen, out, gen.send

    def hand_off(self, first: Any) -> _Finishing:
        finishing = _Finishing(self._gen, self.out, first)
        self.renew()
        return finishing


class _Finishing:
    """The rest of a call the driver started, as an awaitable for the task it moves to.

    ``Resumed``'s loop, but over the driver's generator, which yields ``RETURNED``
    instead of returning (the value is in ``out``): no ``StopIteration`` to catch.
    """

    __slots__ = ("_first", "_gen", "_out")

    def __init__(self, gen: Any, out: list[Any], first: Any) -> None:
        self._gen, self._out, self._first = gen, out, first

    def __await__(self) -> Generator[Any, Any, Any]:
        gen, pending = self._gen, self._first
        while pending is not RETURNED:
            try:
                sent = yield pending
            except BaseException as exc:  # delivered into the coroutine (cancellation)
                pending = gen.throw(exc)
            else:
                pending = gen.send(sent)
        return self._out[0]
