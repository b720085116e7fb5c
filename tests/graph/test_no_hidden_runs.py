"""Whatever a task returns runs in the same run; nothing starts a run the user did not.

The default engine here is a trap: an engine that fails the test if it is ever
called, while every run uses another engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from typing import Any, NamedTuple

import anyio
import pytest
from pydantic import BaseModel

from spangraph import (
    CBlock,
    Component,
    RetryPolicy,
    Span,
    arun,
    generate,
    run,
    task,
)
from spangraph.cache import MemoryStore
from spangraph.engines import (
    InferenceEngine,
    Request,
    ScriptedEngine,
    TransientEngineError,
    set_default,
)
from spangraph.engines._types import Completion
from spangraph.nodes import ModelOutputThunk, ThunkNotDoneError, ThunkState


class TrapEngine(InferenceEngine):
    """The default engine of these tests: any call to it is a hidden run."""

    kind = "trap"

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def _complete(self, request: Request) -> Completion:
        self.calls += 1
        pytest.fail(f"the default engine was called (a hidden run): {request.text!r}")


@pytest.fixture(autouse=True)
def trap() -> Iterator[TrapEngine]:
    engine = TrapEngine()
    previous = set_default(engine)
    yield engine
    set_default(previous)
    assert engine.calls == 0


class Join(Component[str]):
    template = "join: {items}"
    items: list[Span]


def echo() -> ScriptedEngine:
    return ScriptedEngine(lambda r: "x:" + r.text, latency=0.001)


class Holder(BaseModel):
    model_config = {"arbitrary_types_allowed": True}
    first: Span
    rest: list[Span]
    note: str = "n"


@dataclasses.dataclass
class Pair:
    left: Any
    right: Any


class Named(NamedTuple):
    a: Any
    b: Any


def _words(text: str) -> list[ModelOutputThunk[str]]:
    return [generate(CBlock(w)) for w in text.split()]


def one_thunk(text: str) -> Any:
    return generate(Join(items=_words(text)))  # the reproduction


def a_list(text: str) -> Any:
    return _words(text)


def a_tuple(text: str) -> Any:
    return tuple(_words(text))


def a_set(text: str) -> Any:
    return set(_words(text))


def a_frozenset(text: str) -> Any:
    return frozenset(_words(text))


def a_dict(text: str) -> Any:
    return {w: generate(CBlock(w)) for w in text.split()}


def a_generator(text: str) -> Any:
    return (generate(CBlock(w)) for w in text.split())


def a_map(text: str) -> Any:
    return map(lambda w: generate(CBlock(w)), text.split())


def nested_generators(text: str) -> Any:
    return {"all": [(generate(CBlock(w)) for w in text.split())]}


def a_model(text: str) -> Any:
    words = _words(text)
    return Holder(first=words[0], rest=words[1:])


def a_dataclass(text: str) -> Any:
    words = _words(text)
    return Pair(left=words[0], right=Named(words[1], words[2:]))


SHAPES = [
    one_thunk,
    a_list,
    a_tuple,
    a_set,
    a_frozenset,
    a_dict,
    a_generator,
    a_map,
    nested_generators,
    a_model,
    a_dataclass,
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda f: f.__name__)
def test_every_span_a_task_returns_runs_in_the_same_run(shape: Any) -> None:
    fan = task(shape)
    top = fan("a b c")
    downstream = generate(Join(items=[top]))
    engine = echo()
    result = run(downstream, engine=engine, progress=False)
    expected = 4 if shape is one_thunk else 3  # the three words (and their join)
    assert result.status == "done"
    assert result.generations == expected + 1  # and the downstream generation
    assert engine.calls == expected + 1
    assert result.dynamic_nodes > 0
    # The task's result holds the values, and its text (in the downstream prompt)
    # is theirs: no thunk repr, no generator object.
    prompt = downstream.action.render().text  # type: ignore[union-attr]
    assert "<" not in prompt and "x:" in prompt
    for word in ("a", "b", "c"):
        assert f"x:{word}" in prompt
    assert result.log is not None
    generations = [n for n in result.log.nodes.values() if n.kind == "generation"]
    assert len(generations) == expected + 1


def test_the_task_result_is_the_materialised_value() -> None:
    top = task(a_generator)("a b")
    run(top, engine=echo(), progress=False)
    assert top.parsed == ["x:a", "x:b"]
    model = task(a_model)("a b c")
    run(model, engine=echo(), progress=False)
    assert isinstance(model.parsed, Holder)
    assert model.parsed.first == "x:a" and model.parsed.rest == ["x:b", "x:c"]


def test_an_async_task_returning_one_thunk_and_an_async_generator() -> None:
    @task
    async def single(text: str) -> Any:
        await anyio.sleep(0)
        return generate(CBlock(text))

    @task
    async def stream_of(text: str) -> AsyncIterator[Any]:
        for word in text.split():
            await anyio.sleep(0)
            yield generate(CBlock(word))

    a, b = single("solo"), stream_of("p q")
    result = run(a, b, engine=echo(), progress=False)
    assert result.generations == 3
    assert a.parsed == "x:solo" and b.parsed == ["x:p", "x:q"]


def test_dynamic_generations_obey_the_runs_limits_and_cache() -> None:
    engine = ScriptedEngine(lambda r: "v" + r.text, latency=0.02)
    store = MemoryStore()

    def declare() -> Any:
        return task(
            lambda: [generate(CBlock(f"w{i}"), options={"temperature": 0}) for i in range(6)]
        )

    first = run(declare()(), engine=engine, max_concurrency=2, cache=store, progress=False)
    assert engine.max_in_flight <= 2
    assert first.cache_misses == 6 and engine.calls == 6
    again = run(declare()(), engine=engine, cache=store, progress=False)
    assert again.cache_hits == 6 and engine.calls == 6  # served from the run's memo


def test_await_or_stream_outside_any_run_is_an_error_not_a_run() -> None:
    thunk = generate(CBlock("alone"))

    async def awaiting() -> None:
        await thunk

    async def streaming() -> None:
        async for _ in thunk.stream():
            pass

    for main in (awaiting, streaming):
        with pytest.raises(ThunkNotDoneError, match="no run holds it"):
            anyio.run(main)
    assert thunk.state is ThunkState.PENDING


@pytest.mark.parametrize("spawn", ["task_group", "asyncio_task"])
def test_streaming_a_thunk_that_a_run_holds_follows_that_run(spawn: str) -> None:
    engine = ScriptedEngine("one two three", latency=0.03)
    thunk = generate(CBlock("count"))
    runs: list[Any] = []

    async def main() -> list[str]:
        deltas: list[str] = []
        if spawn == "task_group":
            async with anyio.create_task_group() as tg:

                async def go() -> None:
                    runs.append(await arun(thunk, engine=engine, progress=False))

                tg.start_soon(go)
                deltas.extend([d async for d in thunk.stream()])
        else:
            running = asyncio.ensure_future(arun(thunk, engine=engine, progress=False))
            deltas.extend([d async for d in thunk.stream()])
            runs.append(await running)
        return deltas

    deltas = asyncio.run(main()) if spawn == "asyncio_task" else anyio.run(main)
    assert engine.calls == 1
    assert len(deltas) == 3 and "".join(deltas) == thunk.value == "one two three"
    assert runs[0].generations == 1


def test_awaiting_a_thunk_its_run_gave_up_on_raises_instead_of_hanging() -> None:
    def boom(request: Request) -> str:
        raise TransientEngineError("down")

    failing = generate(CBlock("fails"), engine=ScriptedEngine(boom))
    later = generate(Join(items=[failing]))
    outcome: dict[str, BaseException] = {}

    async def main() -> None:
        async def waiter() -> None:
            try:
                await later
            except BaseException as exc:
                outcome["error"] = exc

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def go() -> None:
                    with pytest.raises(Exception, match="down"):
                        await arun(later, engine=echo(), retry=RetryPolicy(attempts=1))

                tg.start_soon(go)
                tg.start_soon(waiter)

    anyio.run(main)
    assert isinstance(outcome["error"], ThunkNotDoneError)
    assert "ended without running it" in str(outcome["error"])


def test_a_waiter_sees_the_retried_result_not_the_first_failure() -> None:
    attempts = {"n": 0}

    def flaky(request: Request) -> str:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise TransientEngineError("once")
        return "fine"

    thunk = generate(CBlock("flaky"))
    got: list[str] = []

    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def go() -> None:
                await arun(
                    thunk,
                    engine=ScriptedEngine(flaky, latency=0.01),
                    retry=RetryPolicy(attempts=2, backoff=0.01),
                    progress=False,
                )

            tg.start_soon(go)
            got.append(await thunk)

    anyio.run(main)
    assert got == ["fine"] and attempts["n"] == 2


@pytest.mark.real
def test_a_task_returning_one_thunk_runs_on_the_runs_real_engine(llama: Any) -> None:
    from spangraph.engines._llamacpp import loaded_servers

    servers = loaded_servers()

    @task
    def ask(subject: str) -> Any:
        return generate(
            CBlock(f"The capital of {subject} is"), options={"max_tokens": 4, "temperature": 0}
        )

    top = ask("France")
    result = run(top, engine=llama, progress=False)
    assert result.generations == 1 and result.dynamic_nodes == 2  # the block and its generation
    assert top.value.strip() and top.parsed == top.value
    assert loaded_servers() == servers  # the run's engine, not a second, default one
    assert result.log is not None
    (span,) = [n for n in result.log.nodes.values() if n.kind == "generation"]
    assert span.attributes["gen_ai.usage.output_tokens"] > 0
