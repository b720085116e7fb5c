"""The generate protocol's fast paths against their references (docs/design/protocol.md).

- The inline start (``InferenceEngine._start`` through an ``InlineDriver``, the
  rest awaited in a task of its own, as the scheduler does it) against the
  task path (``generate()`` awaited in a task).
- Inherited steps skipped where the base step would do nothing, against an
  engine that refines each of them with the base step itself (so the
  protocol calls every one).

Each pair must agree on what a generation leaves behind: the thunk (state,
text, parsed value, usage, cache hit, error, facts), the events, and the memo.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

from spangraph import CBlock, Component, Span
from spangraph.cache import MemoryStore
from spangraph.engines import Completion, EngineRequestError, Request, ScriptedEngine, options
from spangraph.engines._base import InferenceEngine, declare
from spangraph.engines._handoff import InlineDriver
from spangraph.events import Event, EventBus, use_bus
from spangraph.nodes import ExecutionState, ModelOutputThunk, ThunkState


class Number(Component[int]):
    template = "How many? {q}"
    q: Span


class NotInline(ScriptedEngine):
    """A scripted engine that does not complete inline: its primitive runs in a task."""

    completes_inline = False


class RefinesEveryStep(ScriptedEngine):
    """Refines every step with the base step: the protocol calls each one."""

    def handle_model_options(self, state: ExecutionState, call: Mapping[str, Any]) -> Any:
        return super().handle_model_options(state, call)

    async def handle_output_cache(self, request: Request) -> Completion | None:
        return await super().handle_output_cache(request)

    async def handle_input_cache(self, request: Request) -> Request:
        return await super().handle_input_cache(request)

    async def store(self, request: Request, completion: Completion) -> None:
        await super().store(request, completion)

    async def handle_cache_eviction(self, request: Request | None = None) -> None:
        await super().handle_cache_eviction(request)

    def parse(self, action: Any, completion: Completion) -> Any:
        return super().parse(action, completion)

    def telemetry(self, *args: Any) -> None:
        super().telemetry(*args)


def reply(request: Request) -> str:
    if "refuse" in request.text:
        raise EngineRequestError("refused")
    return "many" if "How many" in request.text else "an answer"


#: name → (action, latency, memo: None / "miss" / "hit", cancel, the thunk's state after)
CASES: dict[str, tuple[Any, float, str | None, bool, ThunkState]] = {
    "memo hit": (CBlock("q"), 0.0, "hit", False, ThunkState.DONE),
    "memo miss": (CBlock("q"), 0.0, "miss", False, ThunkState.DONE),
    "instant engine": (CBlock("q"), 0.0, None, False, ThunkState.DONE),
    "waiting engine": (CBlock("q"), 0.005, "miss", False, ThunkState.DONE),
    "parse failure": (Number(q=CBlock("apples")), 0.0, "miss", False, ThunkState.FAILED),
    "engine error": (CBlock("refuse"), 0.0, "miss", False, ThunkState.FAILED),
    "cancellation": (CBlock("q"), 10.0, "miss", True, ThunkState.CANCELLED),
    "under a state": (CBlock("q"), 0.0, "miss", False, ThunkState.DONE),
}

Path = Callable[[InferenceEngine, ModelOutputThunk[Any]], Awaitable[None]]


async def inline_start(engine: InferenceEngine, thunk: ModelOutputThunk[Any]) -> None:
    """As the scheduler runs a generation: inline, and what waits in a task."""
    rest = engine._start(thunk, InlineDriver())
    if rest is not None:
        await asyncio.ensure_future(rest())


async def task_path(engine: InferenceEngine, thunk: ModelOutputThunk[Any]) -> None:
    await asyncio.ensure_future(engine.generate(None, into=thunk))


def outcome(engine_class: type[ScriptedEngine], case: str, path: Path) -> dict[str, Any]:
    """What one generation of ``case`` leaves behind, when run through ``path``."""
    action, latency, memo, cancel, _ = CASES[case]
    engine = engine_class(reply, latency=latency)
    store = MemoryStore()
    if memo is not None:
        engine.span_cache = store
    state = options(temperature=0.0) if case == "under a state" else None
    call_options = {} if state is not None else {"temperature": 0.0}
    seen: list[Event] = []

    async def main() -> None:
        if memo == "hit":  # the entry, made beforehand
            await engine.generate(action, state, options=call_options)
        thunk = declare(action, state, call_options)
        thunk._id = "node"
        bus = EventBus()
        bus.subscribe(seen.append)
        with use_bus(bus):
            if cancel:
                running = asyncio.ensure_future(path(engine, thunk))
                await asyncio.sleep(0.01)
                running.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await running
            else:
                with contextlib.suppress(EngineRequestError, ValueError):  # the thunk says so
                    await path(engine, thunk)
        facts = thunk._facts
        result.update(
            state=thunk.state,
            text=thunk._value,
            parsed=thunk._parsed,
            usage=thunk.usage,
            timings=thunk.timings[:3],  # the engine's (the total is the protocol's own time)
            cache_hit=thunk.cache_hit,
            error=repr(thunk.error),
            memo=facts.memo if facts else None,
            memo_usage=facts.memo_usage if facts else None,
            stored=dict(store._data),
            calls=engine.calls,
            logged=[record.output for record in state.logs().values()] if state else None,
        )

    result: dict[str, Any] = {}
    asyncio.run(main())
    result["events"] = [_plain(event) for event in seen]
    return result


def _plain(event: Event) -> tuple[str, dict[str, Any]]:
    fields = {
        f.name: getattr(event, f.name)
        for f in dataclasses.fields(event)
        if f.name not in ("time", "started", "timings")
    }
    if "error" in fields:
        fields["error"] = repr(fields["error"])
    return type(event).__name__, fields


@pytest.mark.parametrize("engine_class", [ScriptedEngine, NotInline], ids=["inline", "not inline"])
@pytest.mark.parametrize("case", list(CASES))
def test_inline_start_and_task_path_agree(engine_class: type[ScriptedEngine], case: str) -> None:
    inline = outcome(engine_class, case, inline_start)
    reference = outcome(engine_class, case, task_path)
    assert inline == reference
    assert inline["state"] is CASES[case][-1]
    assert inline["cache_hit"] is (case == "memo hit")
    assert inline["events"], "step 8 reports every generation"


@pytest.mark.parametrize("case", list(CASES))
def test_skipped_base_steps_and_called_base_steps_agree(case: str) -> None:
    for path in (inline_start, task_path):
        assert outcome(ScriptedEngine, case, path) == outcome(RefinesEveryStep, case, path)
