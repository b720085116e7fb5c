"""``arun_stream()``: a run's events and tokens as they happen, then its ``Run``;
leaving early cancels the run cleanly; a slow consumer's deltas are merged, in order."""

from __future__ import annotations

import functools
from typing import Any

import anyio
import pytest

from spangraph import (
    CBlock,
    Component,
    NodeFailedError,
    Span,
    arun,
    arun_stream,
    compile,
    generate,
    task,
)
from spangraph.cache import MemoryStore
from spangraph.engines import EngineRequestError, Request, ScriptedEngine
from spangraph.events import (
    NodeCancelled,
    NodeFinished,
    NodeStarted,
    TokenDelta,
)
from spangraph.graph import Run


class Op(Component[str]):
    template = "{a} and {b}"
    a: Span
    b: Span


def fan(n: int = 2) -> tuple[list[Any], Any]:
    leaves = [generate(CBlock(f"question {i}")) for i in range(n)]
    return leaves, generate(Op(a=leaves[0], b=leaves[-1]))


async def collect(*roots: Any, **options: Any) -> list[Any]:
    async with arun_stream(*roots, progress=False, **options) as events:
        return [event async for event in events]


def test_events_then_the_run_last() -> None:
    engine = ScriptedEngine("one two three", latency=0.02)
    _, top = fan()
    items = anyio.run(lambda: collect(top, engine=engine))
    assert isinstance(items[-1], Run) and items[-1].status == "done"
    events = items[:-1]
    started = [e.node_id for e in events if isinstance(e, NodeStarted)]
    finished = [e.node_id for e in events if isinstance(e, NodeFinished)]
    assert len(started) == 3 and set(started) <= set(finished)
    assert not any(isinstance(e, TokenDelta) for e in events)  # tokens are opt-in


@pytest.mark.parametrize("latency", [0.0, 0.05])
def test_token_deltas_between_start_and_finish_join_to_the_output(latency: float) -> None:
    engine = ScriptedEngine("alpha beta gamma delta", latency=latency)
    leaves, top = fan()
    items = anyio.run(lambda: collect(top, engine=engine, tokens=True))
    run = items[-1]
    assert run.status == "done"
    for thunk in [*leaves, top]:
        node_id = run.graph.id_of(thunk)
        mine = [e for e in items[:-1] if e.node_id == node_id]
        kinds = [type(e).__name__ for e in mine]
        deltas = [e.text for e in mine if isinstance(e, TokenDelta)]
        assert "".join(deltas) == thunk.value == "alpha beta gamma delta"
        first, last = kinds.index("TokenDelta"), len(kinds) - 1 - kinds[::-1].index("TokenDelta")
        assert kinds.index("NodeStarted") < first and last < kinds.index("NodeFinished")
        if latency:
            assert len(deltas) == 4  # streamed word by word while the run was under way


def test_a_memo_hit_gives_its_text_as_one_delta() -> None:
    store = MemoryStore()
    engine = ScriptedEngine("alpha beta", latency=0.01)
    greedy = {"temperature": 0}  # memoised by default: deterministic generations
    anyio.run(lambda: collect(generate(CBlock("q"), options=greedy), engine=engine, cache=store))
    again = generate(CBlock("q"), options=greedy)
    items = anyio.run(lambda: collect(again, engine=engine, cache=store, tokens=True))
    assert items[-1].cache_hits == 1
    assert [e.text for e in items if isinstance(e, TokenDelta)] == ["alpha beta"]


def test_leaving_early_cancels_the_run_and_keeps_what_finished() -> None:
    def latency(request: Request) -> float:
        return 0.01 if "fast" in request.text else 30.0

    engine = ScriptedEngine("done", latency=latency)
    fast, slow = generate(CBlock("fast")), generate(CBlock("slow"))
    graph = compile(fast, slow)

    async def main() -> list[Any]:
        seen: list[Any] = []
        with anyio.fail_after(10):
            async with arun_stream(graph, engine=engine, progress=False) as events:
                async for event in events:
                    seen.append(event)
                    if isinstance(event, NodeFinished) and event.node_id == graph.id_of(fast):
                        break  # leave while ``slow`` still runs
        return seen

    seen = anyio.run(main)
    assert any(isinstance(e, NodeFinished) for e in seen)
    assert fast.value == "done"  # finished work is kept
    assert slow.state.value == "cancelled"
    assert engine.in_flight == 0  # no generation left behind


def test_a_consumer_that_raises_cancels_the_run_and_its_error_propagates() -> None:
    engine = ScriptedEngine("x", latency=30.0)

    async def main() -> None:
        with anyio.fail_after(10):
            async with arun_stream(generate(CBlock("q")), engine=engine, progress=False) as events:
                async for event in events:
                    if isinstance(event, NodeStarted):
                        raise KeyError("consumer failed")

    with pytest.raises(KeyError, match="consumer failed"):
        anyio.run(main)
    assert engine.in_flight == 0


def test_a_failed_run_raises_its_node_error_after_its_events() -> None:
    def reply(request: Request) -> str:
        raise EngineRequestError("refused")

    engine = ScriptedEngine(reply, latency=0.01)
    seen: list[Any] = []

    async def main() -> None:
        async with arun_stream(generate(CBlock("q")), engine=engine, progress=False) as events:
            async for event in events:
                seen.append(event)

    with pytest.raises(NodeFailedError, match="refused"):
        anyio.run(main)
    assert any(type(e).__name__ == "NodeFailed" for e in seen)


def test_a_slow_consumer_gets_merged_deltas_in_order() -> None:
    words = " ".join(f"w{i}" for i in range(200))
    engine = ScriptedEngine(words, latency=0.2)
    leaves = [generate(CBlock(f"q{i}")) for i in range(3)]

    async def main() -> tuple[list[Any], int]:
        async with arun_stream(
            *leaves, engine=engine, tokens=True, max_buffered=8, progress=False
        ) as events:
            items = []
            async for event in events:
                items.append(event)
                await anyio.sleep(0.01)  # slower than the engine
            return items, events.merged_deltas

    items, merged = anyio.run(main)
    run = items[-1]
    for thunk in leaves:
        node_id = run.graph.id_of(thunk)
        text = "".join(e.text for e in items if isinstance(e, TokenDelta) and e.node_id == node_id)
        assert text == words
    deltas = sum(isinstance(e, TokenDelta) for e in items)
    assert merged > 0 and deltas + merged == 3 * 200


def test_bad_buffer_sizes_are_refused() -> None:
    async def main() -> None:
        async with arun_stream(generate(CBlock("q")), max_buffered=0):
            pass

    with pytest.raises(ValueError, match="max_buffered"):
        anyio.run(main)


def test_dynamic_generations_stream_too() -> None:
    engine = ScriptedEngine("a b c", latency=0.03)

    @task
    def more(text: str) -> Any:
        return generate(CBlock(f"again {text}"))

    root = more(generate(CBlock("first")))
    items = anyio.run(lambda: collect(root, engine=engine, tokens=True))
    assert items[-1].status == "done"
    texts: dict[str, str] = {}
    for e in items:
        if isinstance(e, TokenDelta):
            texts[e.node_id] = texts.get(e.node_id, "") + e.text
    assert list(texts.values()) == ["a b c", "a b c"]
    assert not any(isinstance(e, NodeCancelled) for e in items)


def test_thunk_stream_before_during_and_after_the_run_gives_every_delta() -> None:
    engine = ScriptedEngine("w1 w2 w3 w4 w5 w6", latency=0.3)
    thunk = generate(CBlock("q"))
    got: dict[str, list[str]] = {"before": [], "during": [], "after": []}

    async def consume(name: str) -> None:
        async for delta in thunk.stream():
            got[name].append(delta)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume, "before")  # asks before the run has claimed the thunk
            tg.start_soon(functools.partial(arun, thunk, engine=engine, progress=False))
            while not thunk._deltas:
                await anyio.sleep(0.01)
            tg.start_soon(consume, "during")  # a late consumer: what was made, then the rest
        await consume("after")

    anyio.run(main)
    assert all("".join(deltas) == thunk.value for deltas in got.values())
    assert len(got["before"]) == len(got["during"]) == len(got["after"]) == 6
