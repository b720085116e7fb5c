"""Tool loops on the real engines: the mechanism (a constrained tool call that becomes a
tool node), not the small models' judgement, so the first round's choice is forced
(``tool_choice="required"`` or a tool's name)."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator

import pytest

from spangraph import Instruction, generate, options, run, tool
from spangraph.engines import LlamaCppEngine
from spangraph.graph import ToolRoundsError
from tests.engines.smollm2 import smollm2_engine

COUNTED: list[str] = []


@tool
def count_words(text: str) -> int:
    """Count the words of a text."""
    COUNTED.append(text)
    return len(text.split())


@tool
def search(clause: str, limit: int = 1) -> str:
    """Find the sentence of the Apache License about a clause."""
    return "Each Contributor grants You a perpetual, worldwide, patent license."


@pytest.fixture(scope="module")
def smollm2(
    spangraph_home: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaCppEngine]:
    engine = smollm2_engine(
        spangraph_home, tmp_path_factory.mktemp("smollm2-tools-kv"), n_parallel=1
    )
    yield engine
    engine.close()


def declare(choice: str, rounds: int = 1) -> object:
    with options(temperature=0, max_tokens=48):
        return generate(
            Instruction(description="How many words are in 'the quick brown fox'?"),
            tools=[count_words, search],
            tool_choice=choice,
            max_tool_rounds=rounds,
        )


def check_first_round(answer: object, names: set[str]) -> None:
    rounds = answer.tool_calls  # type: ignore[attr-defined]
    assert rounds, "the forced first round made no tool call"
    (call,) = rounds[0].calls
    assert call.name in names
    assert call.ok, call.error  # the arguments were decoded to the tool's schema


@pytest.mark.real
@pytest.mark.parametrize("choice", ["count_words", "required"])
def test_the_embedded_engine_decodes_a_tool_call_to_the_tools_schema(
    llama: LlamaCppEngine, choice: str
) -> None:
    COUNTED.clear()
    answer = declare(choice)
    result = run(answer, engine=llama, progress=False, on_error="continue")
    names = {"count_words"} if choice == "count_words" else {"count_words", "search"}
    check_first_round(answer, names)
    if answer.tool_calls[0].calls[0].name == "count_words":  # type: ignore[attr-defined]
        assert len(COUNTED) == 1  # the tool node ran the function once
    # After the forced round the model answers, or calls again and the loop stops.
    assert result.status == "done" or isinstance(answer.error, ToolRoundsError)  # type: ignore[attr-defined]
    assert result.log is not None and result.log.filter(kind="tool")


@pytest.mark.real
def test_the_openai_engine_on_the_embedded_server_decodes_a_tool_call(
    smollm2: LlamaCppEngine,
) -> None:
    """Through the OpenAI API (chat mode, a model whose chat template has no tool
    format): the reply schema goes as ``response_format`` (``tool_mode="schema"``,
    chosen from the server's template capabilities)."""
    engine = smollm2.openai_engine(mode="chat")
    assert not smollm2.native_tools and engine.tool_mode == "schema"
    answer = declare("count_words")
    result = run(answer, engine=engine, progress=False, on_error="continue")
    check_first_round(answer, {"count_words"})
    assert result.generations >= 2  # the follow-up generation read the tool's result


# -- native tool calls: llama.cpp's own tool-call support ---------------------------------

#: A ChatML template with a tool-call format (``<tool_call>`` tags), written for these
#: tests: SmolLM2's own GGUF template has none.
TOOLS_TEMPLATE = pathlib.Path(__file__).with_name("tools_chatml.jinja")


@pytest.fixture(scope="module")
def smollm2_tools(
    spangraph_home: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaCppEngine]:
    engine = smollm2_engine(
        spangraph_home,
        tmp_path_factory.mktemp("smollm2-native-kv"),
        chat_template=TOOLS_TEMPLATE,
        n_parallel=1,
    )
    yield engine
    engine.close()


def declare_count(choice: str) -> object:
    with options(temperature=0, max_tokens=48):
        return generate(
            Instruction(description="Count the words of 'the quick brown fox'."),
            tools=[count_words, search],
            tool_choice=choice,
            max_tool_rounds=1,
        )


def check_native_rounds(answer: object) -> None:
    """Round 0 was answered through the tools API (the engine's canonical
    ``{"tool_calls": ...}`` text, not the schema's ``{"tool": ...}``), its call ran as a
    tool node, and round 1 was sent as chat messages: the user's turn, the assistant's
    ``tool_calls`` and a ``tool`` message answering the same call id."""
    from spangraph.graph._tools import LoopProducer, ToolStep

    reply = answer.producer.args[0]  # type: ignore[attr-defined]
    assert json.loads(reply.value)["tool_calls"][0]["name"] == "count_words"
    assert reply.usage.output_tokens > 0 and reply.usage.input_tokens > 0
    (call,) = answer.tool_calls[0].calls  # type: ignore[attr-defined]
    assert (call.name, call.arguments, call.value) == (
        "count_words",
        {"text": "the quick brown fox"},
        4,
    )
    assert COUNTED == ["the quick brown fox"]
    following = answer._facts.result._facts.result  # type: ignore[attr-defined]
    assert isinstance(following.producer, LoopProducer)
    step = following.producer.args[0].producer.action
    assert isinstance(step, ToolStep) and step.round == 1
    request = step.tool_request()
    messages = request.messages()
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert "Count the words" in messages[0]["content"]
    assert "Reply with JSON" not in messages[0]["content"]  # no schema instructions
    (sent,) = messages[1]["tool_calls"]
    assert sent["function"]["name"] == "count_words"
    assert json.loads(sent["function"]["arguments"]) == {"text": "the quick brown fox"}
    assert sent["id"] == messages[2]["tool_call_id"] == call.call_id
    assert json.loads(messages[2]["content"])["value"] == 4
    assert request.tool_choice == "none"  # the last round is offered no call


@pytest.mark.real
def test_the_embedded_engine_calls_tools_through_llama_cpps_tool_support(
    smollm2_tools: LlamaCppEngine,
) -> None:
    assert smollm2_tools.native_tools  # read from the server's template capabilities
    COUNTED.clear()
    answer = declare_count("required")
    result = run(answer, engine=smollm2_tools, progress=False)
    assert result.status == "done"
    check_native_rounds(answer)
    assert result.generations == 2


@pytest.mark.real
def test_the_openai_engine_calls_tools_through_the_tools_api(
    smollm2_tools: LlamaCppEngine,
) -> None:
    """A real llama.cpp HTTP server (the embedded engine's, with its key), through the
    official client: ``tools``, ``tool_choice`` and ``message.tool_calls``."""
    engine = smollm2_tools.openai_engine(mode="chat")
    assert engine.tool_mode == "native"
    COUNTED.clear()
    answer = declare_count("count_words")
    result = run(answer, engine=engine, progress=False)
    assert result.status == "done"
    check_native_rounds(answer)
    # What the client sends for round 1: the tools API, not a response format.
    from spangraph.engines._states import Identity

    step = answer._facts.result._facts.result.producer.args[0].producer.action  # type: ignore[attr-defined]
    args = engine._arguments(engine.render(step, Identity(), engine.defaults))
    assert [t["function"]["name"] for t in args["tools"]] == ["count_words", "search"]
    assert args["tool_choice"] == "none" and "response_format" not in args
    assert [m["role"] for m in args["messages"]] == ["user", "assistant", "tool"]
    round0 = answer.producer.args[0].producer.action  # type: ignore[attr-defined]
    first = engine._arguments(engine.render(round0, Identity(), engine.defaults))
    assert first["tool_choice"] == {"type": "function", "function": {"name": "count_words"}}


def test_an_engine_in_schema_mode_sends_no_tools() -> None:
    """``tool_mode="schema"``: the fallback for a server without a tools API."""
    from spangraph.engines import OpenAIEngine
    from spangraph.engines._states import Identity

    engine = OpenAIEngine("http://127.0.0.1:9/v1", mode="chat", tool_mode="schema")
    step = declare_count("required").producer.args[0].producer.action  # type: ignore[attr-defined]
    args = engine._arguments(engine.render(step, Identity(), engine.defaults))
    assert "tools" not in args and args["response_format"]["type"] == "json_schema"
    with pytest.raises(ValueError, match="tool_mode"):
        OpenAIEngine("http://127.0.0.1:9/v1", tool_mode="tools")  # type: ignore[arg-type]


def test_a_chat_template_that_is_neither_a_template_nor_a_file_is_refused(
    tmp_path: pathlib.Path,
) -> None:
    with pytest.raises(ValueError, match="not a jinja template"):
        LlamaCppEngine(model="smollm2-135m-instruct", chat_template=tmp_path / "missing.jinja")
    with pytest.raises(ValueError, match="tool_mode"):
        LlamaCppEngine(model="smollm2-135m-instruct", tool_mode="tools")  # type: ignore[arg-type]


@pytest.mark.real
def test_a_chat_template_llama_cpp_cannot_use_is_refused_naming_it(
    spangraph_home: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    from spangraph.engines import ModelFileError

    engine = smollm2_engine(
        spangraph_home,
        tmp_path / "kv",
        chat_template="{% for message in messages %}{{ message.content }",
        n_ctx=1024,
        n_parallel=1,
    )
    try:
        with pytest.raises(ModelFileError, match="chat_template="):
            engine.shared()
    finally:
        engine.close()
