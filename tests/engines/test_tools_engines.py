"""Tool loops on the real engines: the mechanism (a constrained tool call that becomes a
tool node), not the small models' judgement, so the first round's choice is forced
(``tool_choice="required"`` or a tool's name)."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from spangraph import Instruction, generate, options, run, tool
from spangraph.engines import LlamaCppEngine
from spangraph.engines._internal import MODELS, installed
from spangraph.graph import ToolRoundsError

SMOLLM2 = MODELS["smollm2-135m-instruct"]
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
    if installed(SMOLLM2) is None:
        pytest.skip(f"needs the SmolLM2 wheel: {SMOLLM2.install}")
    engine = LlamaCppEngine(
        model="smollm2-135m-instruct",
        home=spangraph_home,
        kv_dir=tmp_path_factory.mktemp("smollm2-tools-kv"),
        n_ctx=4096,
        n_parallel=1,
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
    """Through the OpenAI API (chat mode, a model with a chat template): the reply
    schema goes as ``response_format``; llama.cpp's server here ignores the native
    ``tools`` parameter (docs/howto/tools.md says so)."""
    engine = smollm2.openai_engine(mode="chat")
    answer = declare("count_words")
    result = run(answer, engine=engine, progress=False, on_error="continue")
    check_first_round(answer, {"count_words"})
    assert result.generations >= 2  # the follow-up generation read the tool's result
