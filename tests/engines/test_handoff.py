from __future__ import annotations

import asyncio
from typing import Any

import pytest

from spangraph import CBlock, Component, Span, generate, run
from spangraph.engines import EngineRequestError, Request, ScriptedEngine
from spangraph.engines._handoff import RETURNED, InlineDriver


async def returns(value: Any) -> Any:
    return value


async def raises() -> None:
    raise ValueError("boom")


def test_driver_reads_a_returned_value() -> None:
    driver = InlineDriver()
    for value in ("a", 2, None):
        assert driver.send(returns(value)) is RETURNED
        assert driver.out[0] == value


def test_driver_raises_and_is_renewed() -> None:
    driver = InlineDriver()
    with pytest.raises(ValueError, match="boom"):
        driver.send(raises())
    driver.renew()
    assert driver.send(returns("after")) is RETURNED and driver.out[0] == "after"


def test_driver_hands_a_waiting_call_off_to_a_task() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()

        async def waits() -> str:
            return (await future) + "!"

        driver = InlineDriver()
        waiting = driver.send(waits())
        assert waiting is not RETURNED
        finishing = driver.hand_off(waiting)
        assert driver.send(returns("free")) is RETURNED  # a fresh generator meanwhile
        task = asyncio.ensure_future(_await(finishing))
        loop.call_soon(future.set_result, "done")
        assert await task == "done!"

    asyncio.run(main())


async def _await(awaitable: Any) -> Any:
    return await awaitable


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
