"""Chats: each role rendered once; ``ask()`` turns; the model's own chat template on
SmolLM2 (LlamaCppEngine and an OpenAIEngine on a real llama.cpp server); a plain
transcript that stops at the next role label on the Gemma base model."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from spangraph import CBlock, ChatHistory, Component, Message, Span, ask, compile, generate, run
from spangraph.engines import EngineRequestError, LlamaCppEngine, ScriptedEngine
from spangraph.engines._internal import installed
from spangraph.engines._models import has_chat_template
from spangraph.engines._types import Request
from tests.engines.smollm2 import SMOLLM2, smollm2_engine

TEMPLATE_TOKENS = ("<|im_start|>", "<|im_end|>", "<end_of_turn>", "<start_of_turn>")
QUESTIONS = ("What license is this document?", "Who may use it?", "Say thank you.")
DOCUMENT = (pathlib.Path(__file__).parents[2] / "examples" / "apache-2.0.txt").read_text()[:1500]


class Recorder(ScriptedEngine):
    """A scripted engine that keeps the requests it was given."""

    def __init__(self, answers: dict[str, str] | str) -> None:
        def reply(request: Request) -> str:
            last = request.messages()[-1].content
            return answers if isinstance(answers, str) else answers[last]

        super().__init__(reply)
        self.requests: list[Request] = []

    async def _complete(self, request: Request) -> Any:
        self.requests.append(request)
        return await super()._complete(request)


def history() -> ChatHistory:
    return (
        ChatHistory()
        .append("system", "Be brief.")
        .append("user", "hi")
        .append("assistant", "hello")
    )


def test_each_role_is_rendered_once_whatever_the_action() -> None:
    engine = Recorder("Bob")
    actions = [Message(role="user", content=CBlock("name?")), CBlock("name?"), "name?"]
    for action in actions:
        run(generate(action, state=history()), engine=engine, progress=False)
    texts = {request.text for request in engine.requests}
    assert texts == {"system: Be brief.\nuser: hi\nassistant: hello\nuser: name?\nassistant:"}
    for request in engine.requests:
        assert [(t.role, t.content) for t in request.messages()] == [
            ("system", "Be brief."),
            ("user", "hi"),
            ("assistant", "hello"),
            ("user", "name?"),
        ]
        assert request.transcript_stops() == ["\nassistant:", "\nsystem:", "\nuser:"]


def test_ask_chains_the_turns_through_the_history() -> None:
    engine = Recorder({"name?": "Ann", "capital of France?": "Paris", "bye": "Bye"})
    chat = ChatHistory().append("system", "Be brief.")
    replies = []
    for question in ("name?", "capital of France?", "bye"):
        reply, chat = ask(chat, question)
        replies.append(reply)
    assert [m.role for m in chat.messages] == ["system"] + ["user", "assistant"] * 3
    assert chat.messages[-1].content is replies[-1]  # the reply is a part of the history
    graph = compile(replies[-1])
    generations = graph.generations()
    assert len(generations) == 3  # the last turn needs the two before it
    run(replies[-1], engine=engine, progress=False)
    assert [r.value for r in replies] == ["Ann", "Paris", "Bye"]
    last = engine.requests[-1].text
    assert last.endswith("user: capital of France?\nassistant: Paris\nuser: bye\nassistant:")
    assert last.count("user: name?") == 1


def test_ask_refuses_what_is_not_a_history() -> None:
    with pytest.raises(TypeError, match="ask\\(\\) takes a ChatHistory first, not list"):
        ask([], "hi")  # type: ignore[arg-type]


def test_a_plain_prompt_is_not_a_chat() -> None:
    engine = Recorder("x")
    run(generate(CBlock("Once upon a time")), engine=engine, progress=False)
    assert engine.requests[0].transcript_stops() == []


# -- real engines --------------------------------------------------------------------------

needs_smollm2 = pytest.mark.skipif(
    installed(SMOLLM2) is None, reason=f"needs the SmolLM2 wheel: {SMOLLM2.install}"
)


@pytest.fixture(scope="module")
def smollm2(
    spangraph_home: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaCppEngine]:
    engine = smollm2_engine(spangraph_home, tmp_path_factory.mktemp("smollm2-kv"), n_parallel=2)
    yield engine
    engine.close()


def three_turns(engine: Any, *, cached: bool) -> list[Any]:
    chat = ChatHistory().append(
        "system", CBlock(f"Answer in one short sentence. Document:\n{DOCUMENT}", cache=cached)
    )
    replies = []
    for question in QUESTIONS:
        reply, chat = ask(chat, question, options={"max_tokens": 24, "temperature": 0})
        replies.append(reply)
    run(*replies, engine=engine, progress=False)
    return replies


@pytest.mark.real
def test_the_model_files_say_whether_they_have_a_chat_template(
    llama: LlamaCppEngine, smollm2: LlamaCppEngine
) -> None:
    assert smollm2.chat_template and has_chat_template(smollm2.model_path)
    assert not llama.chat_template and not has_chat_template(llama.model_path)


@pytest.mark.real
def test_a_three_turn_chat_goes_through_the_model_s_template(
    smollm2: LlamaCppEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[tuple[str, str | None]] = []
    render = smollm2._chat_prompt

    def recorded(shared: Any, request: Request) -> tuple[str, str | None]:
        prompts.append(render(shared, request))
        return prompts[-1]

    monkeypatch.setattr(smollm2, "_chat_prompt", recorded)
    replies = three_turns(smollm2, cached=True)
    assert len(prompts) == 3
    for (prompt, prefix), reply in zip(prompts, replies, strict=True):
        # The rendered prompt carries the template's special tokens ...
        assert prompt.startswith("<|im_start|>system\nAnswer in one short sentence.")
        assert prompt.endswith("<|im_start|>assistant\n")
        assert "user:" not in prompt  # no transcript labels on a templated chat
        # ... the cached prefix is the system message, as the template renders it ...
        assert prefix is not None and prompt.startswith(prefix) and DOCUMENT[-40:] in prefix
        # ... and the outputs carry none.
        assert reply.value.strip() and not any(t in reply.value for t in TEMPLATE_TOKENS)
    # Each turn's prompt holds the turns before it, each role once.
    assert prompts[2][0].count("<|im_start|>user\n") == 3
    assert replies[0].value.strip() in prompts[2][0]
    # The KV prefix is prefilled once: the cached-token counts grow turn by turn.
    cached = [reply.usage.cached_input_tokens for reply in replies]
    assert 0 < cached[1] < cached[2], cached


class City(BaseModel):
    name: str
    country: str


class AskCity(Component[City]):
    template = "{q}"
    q: Span


@pytest.mark.real
def test_structured_output_in_a_templated_chat(smollm2: LlamaCppEngine) -> None:
    chat = ChatHistory().append("system", "You answer with JSON.")
    city = generate(
        AskCity(q=CBlock("Name the capital of France as JSON.")),
        state=chat,
        options={"max_tokens": 48, "temperature": 0},
    )
    run(city, engine=smollm2, progress=False)
    assert isinstance(city.parsed, City) and city.parsed.name


@pytest.mark.real
def test_a_three_turn_chat_through_the_openai_api_on_a_llama_cpp_server(
    smollm2: LlamaCppEngine,
) -> None:
    engine = smollm2.openai_engine(mode="chat")
    replies = three_turns(engine, cached=False)
    for reply in replies:
        assert reply.value.strip() and not any(t in reply.value for t in TEMPLATE_TOKENS)
    assert all(reply.usage.input_tokens > 0 for reply in replies)
    assert replies[0].usage.input_tokens < replies[2].usage.input_tokens


@pytest.mark.real
def test_a_chat_on_a_model_without_a_template_stops_at_the_next_role_label(
    llama: LlamaCppEngine,
) -> None:
    chat = ChatHistory().append("user", "Hello, who are you?").append("assistant", "I am Ann.")
    replies = []
    for seed in range(3):
        reply = generate(
            Message(role="user", content=CBlock("Where do you live?")),
            state=chat,
            options={"max_tokens": 64, "temperature": 0.8, "seed": seed},
        )
        replies.append(reply)
    run(*replies, engine=llama, progress=False)
    for reply in replies:
        assert "user:" not in reply.value and "assistant:" not in reply.value, reply.value
    # At least one reply ended at a role label, not at max_tokens.
    assert any(r.usage.output_tokens < 64 for r in replies), [r.value for r in replies]


def test_the_labels_between_cached_messages_join_the_cached_prefix() -> None:
    engine = Recorder("ok")
    chat = (
        ChatHistory()
        .append("system", CBlock("Long instructions.", cache=True))
        .append("user", CBlock("A long document.", cache=True))
        .append("assistant", "Read it.")
    )
    run(generate("Summarise it.", state=chat), engine=engine, progress=False)
    prefix = engine.requests[0].prompt.cached_prefix()
    assert "".join(seg.text for seg in prefix) == (
        "system: Long instructions.\nuser: A long document."
    )
    assert prefix[-1].cache  # it ends at cached content, not at a label


def test_bad_chat_input_is_refused_where_it_is_written() -> None:
    with pytest.raises(ValueError, match=r"role is one of 'system', 'user'.* not 'usr'"):
        Message(role="usr", content=CBlock("x"))
    with pytest.raises(ValueError, match="not 'usr'"):
        ChatHistory().append("usr", "x")
    with pytest.raises(ValueError, match=r"messages\.0\n.*instance of Message"):
        ChatHistory(messages=["hello"])  # type: ignore[list-item]


def test_stream_of_a_failed_thunk_raises_the_node_s_error() -> None:
    def refuse(request: Request) -> str:
        raise EngineRequestError("refused")

    thunk = generate(CBlock("q"))
    run(thunk, engine=ScriptedEngine(refuse), on_error="continue", progress=False)

    async def consume() -> list[str]:
        return [delta async for delta in thunk.stream()]

    with pytest.raises(EngineRequestError, match="refused"):
        anyio.run(consume)
