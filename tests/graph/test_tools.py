"""Tools: typed functions a model calls, each call a node of the run (on ScriptedEngine)."""

from __future__ import annotations

import json
from typing import Any

import pytest

import spangraph.tracing
from spangraph import (
    Component,
    Instruction,
    NodeFailedError,
    ParseError,
    Span,
    Tool,
    generate,
    interrupt,
    options,
    run,
    tool,
)
from spangraph.cache import MemoryStore
from spangraph.engines import Identity, ScriptedEngine
from spangraph.graph import (
    ToolArgumentsError,
    ToolCallError,
    ToolDefinitionError,
    ToolOutcome,
    ToolRoundsError,
    UnknownToolError,
)

CALLS: list[tuple[str, Any]] = []


@tool
def count_words(text: str) -> int:
    """Count the words of a text."""
    CALLS.append(("count_words", text))
    return len(text.split())


@tool
async def search(clause: str, limit: int = 3) -> list[str]:
    """Find the lines of the licence that mention a clause."""
    CALLS.append(("search", clause))
    return [f"line about {clause}"][:limit]


@tool(cache=False)
def send(to: str) -> str:
    """Send the answer (a side effect: never memoised)."""
    CALLS.append(("send", to))
    return "sent"


@pytest.fixture(autouse=True)
def fresh() -> None:
    CALLS.clear()


def script(*replies: str) -> ScriptedEngine:
    """An engine whose n-th tool-loop generation (by the results in its prompt) answers
    ``replies[n]``."""

    def reply(request: Any) -> str:
        rounds = request.prompt.text.count("Tool result (")
        calls = request.prompt.text.count('"tool"') - 1  # (one in the instructions)
        return replies[min(max(rounds, calls), len(replies) - 1)]

    return ScriptedEngine(reply)


def ask(engine: ScriptedEngine, *tools: Tool, **kwargs: Any) -> Any:
    with options(temperature=0):
        thunk = generate(
            Instruction(description="How long is the licence?"), tools=list(tools), **kwargs
        )
    return thunk


# -- making tools --------------------------------------------------------------------------


def test_a_tool_derives_its_name_description_and_schema_once() -> None:
    assert count_words.name == "count_words"
    assert count_words.description == "Count the words of a text."
    assert count_words.schema["properties"] == {"text": {"title": "Text", "type": "string"}}
    assert count_words.schema["required"] == ["text"]
    assert count_words.schema["additionalProperties"] is False
    assert search.is_async and search.schema["properties"]["limit"]["default"] == 3
    assert count_words.cache and not send.cache
    other = Tool.from_function(lambda_free, name="free", description="Given here.")
    assert (other.name, other.description) == ("free", "Given here.")


def lambda_free(x: int) -> int:
    return x


def test_a_function_without_type_hints_or_description_is_refused() -> None:
    def no_hint(text):  # type: ignore[no-untyped-def]
        """Doc."""

    def no_return(text: str):  # type: ignore[no-untyped-def]
        """Doc."""

    def no_doc(text: str) -> str:
        return text

    def star(*texts: str) -> str:
        """Doc."""
        return ""

    with pytest.raises(ToolDefinitionError, match="parameter 'text' has no type hint"):
        tool(no_hint)
    with pytest.raises(ToolDefinitionError, match="no return type hint"):
        Tool.from_function(no_return)
    with pytest.raises(ToolDefinitionError, match="no docstring"):
        tool(no_doc)
    with pytest.raises(ToolDefinitionError, match=r"\*texts"):
        tool(star)
    assert issubclass(ToolDefinitionError, TypeError)


def test_bad_tool_settings_are_refused_where_generate_is_called() -> None:
    with pytest.raises(ValueError, match="tool_choice"):
        ask(script("x"), count_words, tool_choice="nope")
    with pytest.raises(TypeError, match="Tool objects"):
        generate(Instruction(description="x"), tools=[len])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="max_tool_rounds"):
        ask(script("x"), count_words, max_tool_rounds=0)


# -- the loop ------------------------------------------------------------------------------


def test_a_tool_call_is_a_node_between_two_generations() -> None:
    engine = script(ScriptedEngine.tool_call("count_words", text="a b c"), '{"answer": "3 words"}')
    answer = ask(engine, count_words, search)
    result = run(answer, engine=engine, progress=False)
    assert answer.parsed == "3 words"
    assert engine.calls == 2 and CALLS == [("count_words", "a b c")]
    (round0,) = answer.tool_calls
    (outcome,) = round0.calls
    assert isinstance(outcome, ToolOutcome)
    assert (outcome.name, outcome.arguments, outcome.value, outcome.ok) == (
        "count_words",
        {"text": "a b c"},
        3,
        True,
    )
    # The LogDAG: generation -> tool -> follow-up generation.
    assert result.log is not None
    nodes = result.log.nodes
    (tool_node,) = result.log.filter(kind="tool")
    into = {nodes[e.source].label for e in result.log.edges if e.target == tool_node.key}
    out_of = {nodes[e.target].label for e in result.log.edges if e.source == tool_node.key}
    assert "generate(Instruction) round 0" in into
    assert "generate(Instruction) round 1" in out_of
    # Its span: the GenAI tool attributes.
    attributes = tool_node.attributes
    assert tool_node.name == "execute_tool count_words"
    assert attributes["gen_ai.operation.name"] == "execute_tool"
    assert attributes["gen_ai.tool.name"] == "count_words"
    assert attributes["gen_ai.tool.call.id"] == outcome.call_id
    assert attributes["gen_ai.tool.type"] == "function"
    assert attributes["openinference.span.kind"] == "TOOL"


def test_a_plain_text_reply_is_the_answer_and_the_action_parses_it() -> None:
    class Count(Component[int]):
        template = "How many words: {text}"
        text: Span

    engine = script(ScriptedEngine.tool_call("count_words", text="a b"), '{"answer": "2"}')
    with options(temperature=0):
        answer = generate(Count(text="a b"), tools=[count_words])
    run(answer, engine=engine, progress=False)
    assert answer.parsed == 2
    plain = script("no tools needed")
    with options(temperature=0):
        direct = generate(Instruction(description="hi"), tools=[count_words])
    run(direct, engine=plain, progress=False)
    assert direct.parsed == "no tools needed" and direct.tool_calls == []


def test_an_async_tool_and_two_rounds() -> None:
    engine = script(
        ScriptedEngine.tool_call("search", clause="patent"),
        ScriptedEngine.tool_call("count_words", text="one two three four"),
        '{"answer": "done"}',
    )
    answer = ask(engine, count_words, search)
    run(answer, engine=engine, progress=False)
    assert answer.parsed == "done"
    assert [r.calls[0].name for r in answer.tool_calls] == ["search", "count_words"]
    assert answer.tool_calls[0].calls[0].value == ["line about patent"]


def test_tool_nodes_are_memoised_by_their_arguments_unless_cache_false() -> None:
    store = MemoryStore()
    reply = ScriptedEngine.tool_call("count_words", text="x y")
    for _ in range(2):
        engine = script(reply, '{"answer": "2"}')
        answer = ask(engine, count_words)
        run(answer, engine=engine, cache=store, progress=False)
    assert CALLS == [("count_words", "x y")]  # the second run: from the memo
    assert answer.tool_calls[0].calls[0].cached
    # The follow-up's prompt is the same as with a fresh result: its memo entry serves
    # it, so the second run made no engine call at all.
    assert engine.calls == 0
    for _ in range(2):
        engine = script(ScriptedEngine.tool_call("send", to="ann"), '{"answer": "ok"}')
        run(ask(engine, send), engine=engine, cache=store, progress=False)
    assert CALLS.count(("send", "ann")) == 2


def test_tool_choice_none_offers_no_tools_and_required_refuses_text() -> None:
    engine = ScriptedEngine(lambda request: request.prompt.text)
    with options(temperature=0):
        plain = generate(Instruction(description="hi"), tools=[count_words], tool_choice="none")
    run(plain, engine=engine, progress=False)
    assert plain.value == "hi" and plain.tool_calls == []
    required = ask(script("just text"), count_words, tool_choice="required")
    with pytest.raises(NodeFailedError) as info:
        run(required, engine=script("just text"), progress=False)
    assert isinstance(info.value.error, ParseError)


def test_the_reply_schema_is_a_union_of_the_tools_and_an_answer() -> None:
    seen: list[Any] = []

    def reply(request: Any) -> str:
        seen.append(request.schema)
        return (
            '{"answer": "x"}' if len(seen) == 1 else ScriptedEngine.tool_call("search", clause="c")
        )

    engine = ScriptedEngine(reply)
    run(ask(engine, count_words, search), engine=engine, progress=False)
    options_ = seen[0]["anyOf"]
    assert [o["properties"].get("tool", {}).get("const") for o in options_] == [
        "count_words",
        "search",
        None,
    ]
    named = ask(engine, count_words, search, tool_choice="search", max_tool_rounds=1)
    with pytest.raises(NodeFailedError):
        run(named, engine=engine, progress=False)  # it calls search again: rounds exhausted
    assert seen[1]["properties"]["tool"] == {"const": "search"}
    assert "anyOf" not in seen[1]
    # The forced choice holds for the first round; the last round offers only an answer.
    assert seen[2]["required"] == ["answer"] and "anyOf" not in seen[2]


def test_rounds_after_a_forced_first_are_auto_and_the_last_offers_only_an_answer() -> None:
    schemas: list[Any] = []

    def reply(request: Any) -> str:
        schemas.append(request.schema)
        if len(schemas) < 3:
            return ScriptedEngine.tool_call("search", clause="c")
        return '{"answer": "found"}'

    engine = ScriptedEngine(reply)
    answer = ask(engine, count_words, search, tool_choice="search", max_tool_rounds=2)
    run(answer, engine=engine, progress=False)
    assert answer.parsed == "found"
    first, middle, last = schemas
    assert first["properties"]["tool"] == {"const": "search"}
    assert len(middle["anyOf"]) == 3
    assert last["required"] == ["answer"] and "anyOf" not in last


# -- bad input -----------------------------------------------------------------------------


def test_an_unknown_tool_fails_with_the_span_path() -> None:
    engine = script(ScriptedEngine.tool_call("delete_everything"))
    answer = ask(engine, count_words)
    with pytest.raises(NodeFailedError) as info:
        run(answer, engine=engine, progress=False)
    error = info.value.error
    assert isinstance(error, UnknownToolError) and error.tool == "delete_everything"
    assert error.path == info.value.path and "tool_loop(round 0)" in error.path
    assert "count_words" in str(error)  # what it could have called


def test_bad_arguments_are_fed_back_then_fail_past_the_limit() -> None:
    bad = ScriptedEngine.tool_call("count_words", words="a b")
    good = ScriptedEngine.tool_call("count_words", text="a b")
    prompts: list[str] = []

    def reply(request: Any) -> str:
        prompts.append(request.prompt.text)
        return [bad, good, '{"answer": "2"}'][len(prompts) - 1]

    engine = ScriptedEngine(reply)
    answer = ask(engine, count_words)
    run(answer, engine=engine, progress=False)
    assert answer.parsed == "2"
    first = answer.tool_calls[0].calls[0]
    assert not first.ok and first.error_type == "arguments"
    assert "text: Field required" in first.error and "words: Extra inputs" in first.error
    assert "the arguments do not validate" in prompts[1]  # the model read the error
    assert CALLS == [("count_words", "a b")]

    engine = script(bad)
    failing = ask(engine, count_words, max_tool_errors=1)
    with pytest.raises(NodeFailedError) as info:
        run(failing, engine=engine, progress=False)
    error = info.value.error
    assert isinstance(error, ToolArgumentsError) and "max_tool_errors=1" in str(error)
    assert error.path and error.path == info.value.path
    assert engine.calls == 2  # two bad calls, both fed back... and no third generation


def test_a_tool_that_raises_is_fed_back_and_its_span_records_the_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(spangraph.tracing, "capture_content", None)

    @tool
    def fragile(n: int) -> int:
        """Fails on zero."""
        return 10 // n

    engine = script(
        ScriptedEngine.tool_call("fragile", n=0),
        ScriptedEngine.tool_call("fragile", n=5),
        '{"answer": "2"}',
    )
    answer = ask(engine, fragile)
    result = run(answer, engine=engine, progress=False)
    assert answer.parsed == "2"
    first, second = (r.calls[0] for r in answer.tool_calls)
    assert first.error_type == "ZeroDivisionError" and second.value == 2
    assert result.log is not None
    spans = sorted(result.log.filter(kind="tool"), key=lambda n: n.start)
    assert spans[0].attributes["error.type"] == "ZeroDivisionError"
    assert spans[0].error is not None and "division" not in spans[0].error  # capture off
    assert "error.type" not in spans[1].attributes

    engine = script(ScriptedEngine.tool_call("fragile", n=0))
    with pytest.raises(NodeFailedError) as info:
        run(ask(engine, fragile, max_tool_errors=0), engine=engine, progress=False)
    assert isinstance(info.value.error, ToolCallError)
    assert "ZeroDivisionError" in str(info.value.error)


def test_max_tool_rounds_exhausted() -> None:
    engine = script(ScriptedEngine.tool_call("count_words", text="a"))
    answer = ask(engine, count_words, max_tool_rounds=2)
    with pytest.raises(NodeFailedError) as info:
        run(answer, engine=engine, progress=False)
    error = info.value.error
    assert isinstance(error, ToolRoundsError) and "max_tool_rounds=2" in str(error)
    assert "tool_loop(round 2)" in error.path
    assert engine.calls == 3 and len(CALLS) == 2


# -- privacy -------------------------------------------------------------------------------


@pytest.mark.parametrize("captured", [False, True])
def test_tool_arguments_and_results_reach_spans_only_with_capture_on(
    monkeypatch: pytest.MonkeyPatch, captured: bool
) -> None:
    monkeypatch.setattr(spangraph.tracing, "capture_content", "SPAN_ONLY" if captured else None)

    @tool
    def secret_lookup(name: str) -> str:
        """Look a name up (SECRET-TOOL-DESCRIPTION)."""
        if name == "boom":
            raise ValueError("SECRET-ERROR-TEXT")
        return "SECRET-RESULT-TEXT"

    engine = script(
        ScriptedEngine.tool_call("secret_lookup", name="SECRET-ARGUMENT"),
        ScriptedEngine.tool_call("secret_lookup", name="boom"),
        '{"answer": "fine"}',
    )
    answer = ask(engine, secret_lookup)
    result = run(answer, engine=engine, progress=False)
    assert result.log is not None
    text = json.dumps([dict(r.attributes) for r in result.log.records], default=str)
    text += json.dumps([r.name for r in result.log.records])
    text += str(result.log.to_graphviz().source)
    secrets = ("SECRET-ARGUMENT", "SECRET-RESULT-TEXT", "SECRET-ERROR-TEXT", "SECRET-TOOL-")
    for secret in secrets:
        assert (secret in text) is captured, secret
    offered = [
        n.attributes.get("gen_ai.tool.definitions") for n in result.log.filter(kind="generation")
    ]
    assert len(offered) == 3
    if not captured:
        assert offered == [None, None, None]
    if captured:
        # Each round's generation span lists the tools it was offered.
        (definition,) = json.loads(offered[0])
        assert definition["function"]["name"] == "secret_lookup"
        assert "SECRET-TOOL-DESCRIPTION" in definition["function"]["description"]
        first = sorted(result.log.filter(kind="tool"), key=lambda n: n.start)[0]
        assert json.loads(first.attributes["gen_ai.tool.call.arguments"]) == {
            "name": "SECRET-ARGUMENT"
        }
        assert json.loads(first.attributes["gen_ai.tool.call.result"]) == "SECRET-RESULT-TEXT"


def test_the_logdag_draws_tool_nodes_apart() -> None:
    engine = script(ScriptedEngine.tool_call("count_words", text="a"), '{"answer": "1"}')
    answer = ask(engine, count_words)
    result = run(answer, engine=engine, progress=False)
    assert result.log is not None
    source = result.log.to_graphviz().source
    assert "shape=cds" in source and "tool call (execute_tool)" in source


def test_a_tool_can_ask_a_person_before_it_acts() -> None:
    """``interrupt()`` in a tool pauses the loop; the resume calls the tool again (its
    round's generation reused) and the loop goes on."""
    sent: list[str] = []

    @tool(cache=False)
    def send_email(to: str) -> str:
        """Send an e-mail, once a person agrees."""
        if not interrupt(f"Send to {to}?", bool):
            return "cancelled"
        sent.append(to)
        return "sent"

    engine = script(ScriptedEngine.tool_call("send_email", to="ann"), '{"answer": "mailed"}')
    answer = ask(engine, send_email)
    first = run(answer, engine=engine, cache=MemoryStore(), progress=False)
    assert first.status == "interrupted" and not sent
    (asked,) = first.interrupts
    assert asked.label == "tool(send_email)" and asked.question == "Send to ann?"
    second = first.resume({asked.id: True})
    assert second.status == "done" and answer.parsed == "mailed"
    assert sent == ["ann"] and engine.calls == 2


# -- what an engine with a tools API is given ---------------------------------------------


def test_each_round_offers_a_tools_api_the_tools_and_the_rounds_as_chat_messages() -> None:
    """``Request.tools``: the function definitions, the choice, the action's own turn
    (no reply instructions), and each earlier round as an assistant message with
    ``tool_calls`` and a ``tool`` message per call; it crosses an executor's wire."""
    from spangraph.engines._remote import from_wire, to_wire

    seen: list[Any] = []

    def reply(request: Any) -> str:
        seen.append(request)
        if request.tools.history:
            return '{"answer": "4 words"}'
        return ScriptedEngine.tool_call("count_words", text="a b c d")

    engine = ScriptedEngine(reply)
    answer = ask(engine, count_words, search, tool_choice="count_words")
    run(answer, engine=engine, progress=False)
    assert answer.parsed == "4 words"
    first, second = (r.tools for r in seen)
    assert [t["function"]["name"] for t in first.tools] == ["count_words", "search"]
    assert first.tools[0]["function"]["description"] == "Count the words of a text."
    assert first.tools[0]["function"]["parameters"] == count_words.schema
    assert first.tool_choice == {"type": "function", "function": {"name": "count_words"}}
    assert first.messages("Be brief.") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "How long is the licence?"},
    ]
    assert second.choice == "auto"
    user, assistant, result = second.messages()
    assert user == first.messages()[0]
    assert assistant["role"] == "assistant" and assistant["content"] is None
    (call,) = assistant["tool_calls"]
    assert call["id"] == result["tool_call_id"] == "call_0_0"
    assert call["function"] == {"name": "count_words", "arguments": '{"text": "a b c d"}'}
    assert result["role"] == "tool" and json.loads(result["content"])["value"] == 4
    # The same round as an executor's worker reads it (msgpack, as the wire is).
    import msgpack

    back = from_wire(msgpack.unpackb(msgpack.packb(to_wire(seen[1], "engine", None))))
    assert back.tools == second
    # A generation that is not a tool loop's offers no tools.
    plain = engine.render(Instruction(description="Hi"), Identity(), {})
    assert plain.tools is None
