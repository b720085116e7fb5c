from __future__ import annotations

import asyncio
import gc

import pytest

from spangraph import CBlock, Component, Span, generate, run
from spangraph.engines import EngineRequestError, Request, ScriptedEngine
from spangraph.engines._base import declare
from spangraph.engines._handoff import InlineDriver, to_task
from spangraph.events import EventBus, GenerationRecord, use_bus
from spangraph.nodes import ThunkState


async def appends(log: list[str], value: str) -> None:
    log.append(value)


async def raises() -> None:
    raise ValueError("boom")


def test_driver_finishes_a_coroutine_that_does_not_wait() -> None:
    driver, log = InlineDriver(), []
    for value in ("a", "b"):
        assert driver.start(appends(log, value)) is None
    assert log == ["a", "b"]


def test_driver_raises_and_is_ready_again() -> None:
    driver, log = InlineDriver(), []
    with pytest.raises(ValueError, match="boom"):
        driver.start(raises())
    assert driver.start(appends(log, "after")) is None and log == ["after"]


def test_driver_hands_a_waiting_coroutine_off_to_a_task() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        log: list[str] = []

        async def waits() -> None:
            log.append(await future + "!")

        driver = InlineDriver()
        rest = driver.start(waits())
        assert rest is not None and log == []
        assert driver.start(appends(log, "free")) is None  # a fresh generator meanwhile
        task = asyncio.ensure_future(rest())
        loop.call_soon(future.set_result, "done")
        await task
        assert log == ["free", "done!"]

    asyncio.run(main())


def test_to_task_stops_the_inline_start_and_the_rest_goes_on_in_the_task() -> None:
    async def main() -> None:
        log: list[str] = []

        async def two_halves() -> None:
            log.append("inline")
            await to_task()
            log.append(f"in a task: {asyncio.current_task() is not None}")

        rest = InlineDriver().start(two_halves())
        assert rest is not None and log == ["inline"]
        await asyncio.ensure_future(rest())
        assert log == ["inline", "in a task: True"]

    asyncio.run(main())


def test_a_cancelled_rest_delivers_the_cancellation_into_the_coroutine() -> None:
    async def main() -> None:
        log: list[str] = []

        async def sleeps() -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                log.append("cancelled")
                raise

        rest = InlineDriver().start(sleeps())
        assert rest is not None
        task = asyncio.ensure_future(rest())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert log == ["cancelled"]

    asyncio.run(main())


class Pair(Component[str]):
    template = "{a}+{b}"
    a: Span
    b: Span


def test_a_failed_inline_primitive_leaves_the_next_generations_running() -> None:
    """Through a run: a primitive that raises inside the scheduler's driver, then more
    inline generations on the same driver."""

    def reply(request: Request) -> str:
        if "bad" in request.text:
            raise EngineRequestError("refused")
        return request.text.upper()

    bad = generate(CBlock("bad"))
    goods = [generate(Pair(a=CBlock(f"g{i}"), b=CBlock("x"))) for i in range(5)]
    after = generate(Pair(a=goods[0], b=goods[4]))
    result = run(
        bad, *goods, after, engine=ScriptedEngine(reply), on_error="continue", progress=False
    )
    assert [f.node_id for f in result.failed] == [bad._id]
    assert after.value == "G0+X+G4+X"
    assert result.generations == 6


def test_a_rest_never_awaited_leaves_the_thunk_to_its_run() -> None:
    """A hand-off that a stopped run drops: the protocol's coroutine is closed, the
    thunk is left as it was (the run settles it), and nothing is reported."""
    records: list[GenerationRecord] = []
    bus = EventBus()
    bus.subscribe(lambda e: records.append(e) if isinstance(e, GenerationRecord) else None)
    engine = ScriptedEngine("late", latency=10.0)
    thunk = declare(CBlock("q"), None, {})

    async def main() -> None:
        with use_bus(bus):
            rest = engine._start(thunk, InlineDriver())
            assert rest is not None and thunk.state is ThunkState.RUNNING
            del rest
            gc.collect()

    asyncio.run(main())
    assert thunk.state is ThunkState.RUNNING and records == []
