from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from spangraph import CBlock, ChatHistory, Component, Message, Span, generate
from spangraph.engines import (
    Completion,
    Identity,
    InferenceEngine,
    InvalidOptionError,
    ParseError,
    Request,
    ScriptedEngine,
    options,
)
from spangraph.events import GenerationRecord
from spangraph.lowlevel import EventBus, current_state, use_bus
from spangraph.nodes import ExecutionState, ThunkState

STEPS = [
    "handle_model_options",
    "render",
    "handle_output_cache",
    "handle_input_cache",
    "_complete",
    "parse",
    "store",
    "handle_cache_eviction",
    "telemetry",
]


class Recording(ScriptedEngine):
    def __init__(self, **kw: Any) -> None:
        super().__init__(lambda r: "42", **kw)
        self.steps: list[str] = []

    def handle_model_options(self, state: ExecutionState, call: Mapping[str, Any]) -> Any:
        self.steps.append("handle_model_options")
        return super().handle_model_options(state, call)

    def render(self, *args: Any, **kw: Any) -> Request:
        self.steps.append("render")
        return super().render(*args, **kw)

    async def handle_output_cache(self, request: Request) -> Completion | None:
        self.steps.append("handle_output_cache")
        return await super().handle_output_cache(request)

    async def handle_input_cache(self, request: Request) -> Request:
        self.steps.append("handle_input_cache")
        return await super().handle_input_cache(request)

    async def _complete(self, request: Request) -> Completion:
        self.steps.append("_complete")
        return await super()._complete(request)

    def parse(self, action: Any, completion: Completion) -> Any:
        self.steps.append("parse")
        return super().parse(action, completion)

    async def store(self, request: Request, completion: Completion) -> None:
        self.steps.append("store")

    async def handle_cache_eviction(self, request: Request | None = None) -> None:
        self.steps.append("handle_cache_eviction")

    def telemetry(self, *args: Any) -> None:
        self.steps.append("telemetry")
        super().telemetry(*args)


class Ask(Component[int]):
    template = "Q: {q}\nA:"
    q: Span


def test_generate_is_final() -> None:
    with pytest.raises(TypeError, match="generate\\(\\), which is final"):

        class Sneaky(ScriptedEngine):
            async def generate(self, *a: Any, **k: Any) -> Any:  # type: ignore[override]
                return None


def test_each_step_runs_once_in_order() -> None:
    engine = Recording()

    async def main() -> None:
        thunk = await engine.generate(Ask(q="six times seven?"))
        assert thunk.parsed == 42

    anyio.run(main)
    assert engine.steps == STEPS


def test_parse_failure_keeps_raw_text_and_still_records_telemetry() -> None:
    engine = ScriptedEngine("not a number")
    records: list[GenerationRecord] = []
    bus = EventBus()
    bus.subscribe(lambda e: records.append(e) if isinstance(e, GenerationRecord) else None)

    async def main() -> None:
        thunk = generate(Ask(q="?"))
        with use_bus(bus), pytest.raises(ParseError, match=r"generate\(Ask\)"):
            await engine.generate(Ask(q="?"), into=thunk)
        assert thunk.state is ThunkState.FAILED
        assert isinstance(thunk.error, ParseError)
        assert thunk.error.raw == "not a number"

    anyio.run(main)
    assert len(records) == 1 and isinstance(records[0].error, ParseError)


def test_option_precedence_engine_state_call() -> None:
    seen: list[Mapping[str, Any]] = []

    def reply(request: Request) -> str:
        seen.append(dict(request.options))
        return "1"

    engine = ScriptedEngine(reply, defaults={"temperature": 0.1, "max_tokens": 5, "top_k": 3})

    async def main() -> None:
        with options(temperature=0.5, max_tokens=7):
            thunk = generate(Ask(q="x"), options={"max_tokens": 9})
        await engine.generate(thunk.action, into=thunk)
        await options(top_k=1)(engine).generate(Ask(q="y"))

    anyio.run(main)
    assert seen[0] == {"temperature": 0.5, "max_tokens": 9, "top_k": 3}
    assert seen[1] == {"temperature": 0.1, "max_tokens": 5, "top_k": 1}


@pytest.mark.parametrize(
    ("opts", "match"),
    [
        ({"temprature": 0.1}, "unknown model option 'temprature'; valid options: temperature"),
        ({"max_tokens": -1}, "max_tokens=-1 must be >= 1"),
        ({"max_tokens": 2.5}, "max_tokens must be an integer"),
        ({"temperature": 3.0}, r"temperature=3.0 is out of range \[0.0, 2.0\]"),
        ({"temperature": "hot"}, "temperature must be a number"),
        ({"top_p": 0}, r"top_p=0 is out of range \(0.0, 1.0\]"),
        ({"stop": [""]}, "stop must be a string or a list"),
        ({"seed": True}, "seed must be an integer"),
    ],
)
def test_bad_options_are_refused_where_written(opts: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidOptionError, match=match):
        options(**opts)
    with pytest.raises(InvalidOptionError, match=match):
        ScriptedEngine(defaults=opts)


def test_extra_options_pass_through() -> None:
    state = options(**{"extra:mirostat": 2})
    assert state.model_options() == {"extra:mirostat": 2}


def test_states_compose_and_identity_drops_out() -> None:
    a, b = options(temperature=0.2, top_k=5), options(temperature=0.9)
    composed = a | Identity() | b
    assert composed.model_options() == {"temperature": 0.9, "top_k": 5}
    assert composed.flatten() == (a, b)
    assert (Identity() | a) is a


def test_state_as_callable_and_as_context_manager_agree() -> None:
    seen: list[Mapping[str, Any]] = []
    engine = ScriptedEngine(lambda r: seen.append(dict(r.options)) or "1")
    state = options(temperature=0.3)

    async def main() -> None:
        await state(engine).generate(Ask(q="a"))
        with state:
            await engine.generate(Ask(q="a"))
        async with state:
            await engine.generate(Ask(q="a"))

    anyio.run(main)
    assert seen == [{"temperature": 0.3}] * 3


def test_nested_context_managers_and_logs() -> None:
    outer, inner = options(temperature=0.2), options(top_k=2)
    with outer:
        with inner:
            both = current_state()
            assert both is not None
            assert both.model_options() == {"temperature": 0.2, "top_k": 2}
        assert current_state() is outer
    assert current_state() is None

    engine = ScriptedEngine("7")

    async def main() -> None:
        with outer, inner:
            first = await engine.generate(Ask(q="a"))
        second = await engine.generate(Ask(q="b"), outer)
        assert list(outer.logs()) == [first, second]
        assert list(inner.logs()) == [first]
        assert outer.logs()[first].usage == first.usage

    anyio.run(main)


def test_context_does_not_leak_between_concurrent_tasks() -> None:
    results: dict[str, Any] = {}

    async def declare(name: str, temp: float) -> None:
        with options(temperature=temp):
            await anyio.sleep(0.01)
            thunk = generate(Ask(q=name))
            await anyio.sleep(0.01)
        state = thunk.producer.state  # type: ignore[union-attr]
        results[name] = state.model_options() if state else None
        results[name + "-after"] = current_state()

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(declare, f"t{i}", i / 10)

    anyio.run(main)
    for i in range(5):
        assert results[f"t{i}"] == {"temperature": i / 10}
        assert results[f"t{i}-after"] is None


def test_chat_history_state_comes_before_the_action() -> None:
    prompts: list[Request] = []
    engine = ScriptedEngine(lambda r: prompts.append(r) or "fine")
    history = ChatHistory(messages=[Message("user", "hello"), Message("assistant", "hi!")])

    async def main() -> None:
        await history(engine).generate("how are you?")

    anyio.run(main)
    request = prompts[0]
    assert request.text == "user: hello\nassistant: hi!\nuser: how are you?\nassistant:"
    assert [(t.role, t.content) for t in request.messages()] == [
        ("user", "hello"),
        ("assistant", "hi!"),
        ("user", "how are you?"),
    ]


def test_system_option_leads_the_prompt() -> None:
    prompts: list[Request] = []
    engine = ScriptedEngine(lambda r: prompts.append(r) or "ok")
    anyio.run(lambda: options(system="Be brief.")(engine).generate("hi"))
    assert prompts[0].text == "Be brief.\n\nhi"
    assert prompts[0].messages()[0].role == "system"


class Pair(BaseModel):
    a: int
    b: str


def test_schema_is_sent_for_typed_outputs() -> None:
    class AskPair(Component[Pair]):
        q: Span

    seen: list[Request] = []
    engine = ScriptedEngine(lambda r: seen.append(r) or '{"a": 1, "b": "x"}')
    thunk = anyio.run(lambda: engine.generate(AskPair(q="?")))
    assert thunk.parsed == Pair(a=1, b="x")
    assert seen[0].schema is not None and seen[0].schema["additionalProperties"] is False


def test_stream_deltas_concatenate_to_value() -> None:
    engine = ScriptedEngine("one two three", latency=0.01)

    async def main() -> list[str]:
        return [d async for d in engine.stream(CBlock("count"))]

    assert "".join(anyio.run(main)) == "one two three"


def test_engine_without_primitive_says_so() -> None:
    class Empty(InferenceEngine):
        pass

    with pytest.raises(NotImplementedError, match="must implement _complete"):
        anyio.run(lambda: Empty().generate("x"))


def test_generations_without_a_state_leave_no_logs_behind() -> None:
    """The shared no-state state must not keep every traced generation alive."""
    import gc
    import weakref

    from spangraph import run
    from spangraph.engines._base import _IDENTITY

    thunk = generate(CBlock("no state here"))
    run(thunk, engine=ScriptedEngine("x"), progress=False)  # traced: telemetry listens
    assert thunk.value == "x"
    assert _IDENTITY.logs() == {}
    ref = weakref.ref(thunk)
    del thunk
    gc.collect()
    assert ref() is None


def test_refined_steps_run_even_where_the_base_steps_would_do_nothing() -> None:
    """Inherited no-op steps may be skipped; a refined step is always run."""
    calls: list[str] = []

    class Refined(ScriptedEngine):
        async def handle_output_cache(self, request: Any) -> Any:
            calls.append("output")
            return None

        async def handle_input_cache(self, request: Any) -> Any:
            calls.append("input")
            return request

        async def store(self, request: Any, completion: Any) -> None:
            calls.append("store")

        async def handle_cache_eviction(self, request: Any = None) -> None:
            calls.append("evict")

        def handle_model_options(self, state: Any, call: Any) -> Any:
            calls.append("options")
            return super().handle_model_options(state, call)

        def telemetry(self, *args: Any) -> None:
            calls.append("telemetry")

    thunk = anyio.run(Refined("x").generate, CBlock("q"))
    assert thunk.value == "x"
    assert calls == ["options", "output", "input", "store", "evict", "telemetry"]
    refined, plain = Refined("x")._refined, ScriptedEngine("x")._refined
    assert refined.output_cache and refined.input_cache and refined.store
    assert not (plain.output_cache or plain.input_cache or plain.store)


def test_render_names_each_field_of_the_request() -> None:
    """Step 2 builds the ``Request`` by keyword: each field holds what it is named for."""
    seen: list[Request] = []
    engine = ScriptedEngine(lambda r: seen.append(r) or "6", defaults={"max_tokens": 9})
    state = options(temperature=0.0)
    action = Ask(q="two times three?")
    thunk = generate(action, state=state, sample_index=3)
    thunk._claimed = True
    anyio.run(lambda: engine.generate(None, into=thunk))
    (request,) = seen
    assert request.prompt.text == "Q: two times three?\nA:"
    assert dict(request.options) == {"max_tokens": 9, "temperature": 0.0}
    assert request.schema == Ask.output_schema()
    assert request.mode == "completion"
    assert request.action is action
    assert request.state is state
    assert request.sample_index == 3
    assert request.thunk is thunk
    assert request.memo is None and request.key is None and request.prefix is None


def test_the_telemetry_record_names_each_field() -> None:
    """Step 8 builds the ``GenerationRecord`` by keyword: each field holds what it is
    named for."""
    records: list[GenerationRecord] = []
    bus = EventBus()
    bus.subscribe(lambda e: records.append(e) if isinstance(e, GenerationRecord) else None)
    engine = ScriptedEngine("42", name="model-name")
    thunk = generate(Ask(q="six times seven?"), options={"temperature": 0.5})
    thunk._claimed = True
    thunk._id = "the-node"

    async def main() -> None:
        with use_bus(bus):
            await engine.generate(None, into=thunk)

    anyio.run(main)
    (record,) = records
    assert record.node_id == "the-node"
    assert (record.engine, record.provider, record.model) == ("scripted", "spangraph", "model-name")
    assert record.mode == "completion"
    assert dict(record.options) == {"temperature": 0.5}
    assert record.prompt == "Q: six times seven?\nA:"
    assert (record.output, record.finish_reason) == ("42", "stop")
    assert record.usage == thunk.usage and record.usage.output_tokens == 1
    assert record.timings == thunk.timings
    assert record.cache_hit is False and record.error is None and record.server is None
    assert 0 < record.started <= record.time
