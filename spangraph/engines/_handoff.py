"""How far a generation runs without waiting: the inline start and the hand-off.

The scheduler starts every generation inline, in its own loop: it gives the
protocol's coroutine (``InferenceEngine._protocol``) to its ``InlineDriver``,
which runs it by hand until it would wait. A generation that never waits
(an instant engine, an output-memo hit) is then finished, and cost no task
and no channel hop. One that would wait stops there, and the driver hands
the rest of it over (``Rest``): the scheduler awaits ``rest.finish()`` in a
task of its own, which finishes the coroutine from where it stopped.

A coroutine stops for one of two reasons:

- it waits on the event loop (it yields a future): ``Rest.finish`` yields
  that future to its task first, then goes on;
- it asks to go on in a task (``await to_task()``): the protocol does
  that before running an engine's own code that might enter a cancel scope
  (a worker thread, a timeout), since a cancel scope entered inline would
  be left from another task. ``Rest.finish`` just goes on.

Why a generator drives the coroutine rather than ``coro.send(None)``:
``send`` hands a returning coroutine's value back as a ``StopIteration``,
an exception per generation; the driver's one generator awaits each
coroutine with ``yield from``, which hands the value over directly
(``docs/design/protocol.md`` has the figures).
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

#: What the driver's generator yields when the coroutine it was sent has returned.
RETURNED: Any = object()
#: What a coroutine yields (``await to_task()``) to go on in a task, not inline.
TO_TASK: Any = object()


@types.coroutine
def to_task() -> Generator[Any, Any, None]:
    """Go on in a task: driven inline, the coroutine stops here and is handed off.

    Only a coroutine run by an ``InlineDriver`` (and finished by its ``Rest``)
    may await this; ``Rest.finish`` resumes it at once, without yielding to
    the event loop.
    """
    yield TO_TASK


@types.coroutine
def _drive() -> Generator[Any, Any, None]:
    """Await each coroutine sent in, and yield ``RETURNED`` when it has returned
    (``yield from`` takes a coroutine's return without a ``StopIteration``)."""
    coro = yield RETURNED
    while True:
        yield from coro
        coro = yield RETURNED


class InlineDriver:
    """Runs coroutines by hand until they would wait (see the module's docstring).

    The coroutines are run for what they do (the protocol finishes its thunk),
    not for a value. ``start(coro)`` returns ``None`` when the coroutine
    returned without stopping, else the function that finishes it
    (``await rest()``, in the caller's task: ``Rest.finish``); if the
    coroutine raises, ``start`` raises it. The driver is ready for the next
    coroutine either way.

    One per scheduler (one thread, one event loop). It is not re-entrant: a
    coroutine it drives must not be started through the same driver (the
    scheduler starts generations from its own loop, never inside an engine call).
    """

    __slots__ = ("_gen", "_send")

    def __init__(self) -> None:
        self._renew()

    def _renew(self) -> None:
        """A new generator: after one was handed off, or ended in an exception."""
        gen = _drive()
        gen.send(None)  # to its first yield
        self._gen, self._send = gen, gen.send

    def start(self, coro: Coroutine[Any, Any, None]) -> Callable[[], Awaitable[None]] | None:
        """Run ``coro`` until it returns (``None``) or stops (its ``Rest.finish``)."""
        try:
            stopped_at = self._send(coro)
        except BaseException:
            self._renew()
            raise
        if stopped_at is RETURNED:
            return None
        rest = Rest(self._gen, stopped_at)
        self._renew()
        return rest.finish


class Rest:
    """The rest of a coroutine an ``InlineDriver`` stopped: ``await rest.finish()``
    finishes it, in the task that awaits it.

    ``gen`` is the driver's generator, which was awaiting the coroutine and
    yields ``RETURNED`` when it returns; ``stopped_at`` is what the coroutine
    yielded when it stopped (a future it waits on, or ``TO_TASK``). A rest
    that is dropped unfinished closes the coroutine (``GeneratorExit``).
    """

    __slots__ = ("_gen", "_stopped_at")

    def __init__(self, gen: Generator[Any, Any, None], stopped_at: Any) -> None:
        self._gen, self._stopped_at = gen, stopped_at

    @types.coroutine
    def finish(self) -> Generator[Any, Any, None]:
        gen, pending = self._gen, self._stopped_at
        while pending is not RETURNED:
            if pending is TO_TASK:  # it is in a task now: go on
                pending = gen.send(None)
                continue
            try:
                sent = yield pending
            except BaseException as exc:  # delivered into the coroutine (cancellation)
                pending = gen.throw(exc)
            else:
                pending = gen.send(sent)
