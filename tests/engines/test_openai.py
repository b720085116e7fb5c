"""OpenAIEngine against a real llama.cpp HTTP server on 127.0.0.1.

The server is the in-process llama.cpp of the session's ``llama`` fixture,
which listens on an ephemeral loopback port: the official ``openai`` client
talks real HTTP to it, with the server's key (``LlamaCppEngine.openai_engine``).
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import anyio
import pytest
from pydantic import BaseModel, Field

from spangraph import CBlock, Component, Span, generate, run
from spangraph.engines import (
    EngineRequestError,
    EngineUnavailable,
    LlamaCppEngine,
    OpenAIEngine,
)
from spangraph.events import GenerationRecord
from spangraph.nodes import ThunkState

pytestmark = pytest.mark.real
SECRET = "sk-test-very-secret-key-123"


class City(BaseModel):
    city: str = Field(max_length=20)
    country: str = Field(max_length=20)


class AskCity(Component[City]):
    template = "Name a city and its country as JSON.\n{hint}\n"
    hint: Span


@pytest.fixture(params=["completion", "chat"])
def engine(request: pytest.FixtureRequest, llama: LlamaCppEngine) -> Iterator[OpenAIEngine]:
    engine = llama.openai_engine(mode=request.param)
    yield engine
    anyio.run(engine.aclose)


def test_completion(engine: OpenAIEngine) -> None:
    thunk = generate(
        CBlock("The capital of France is"), options={"max_tokens": 6, "temperature": 0}
    )
    run(thunk, engine=engine, progress=False)
    assert thunk.value.strip()
    assert thunk.usage.input_tokens > 0 and thunk.usage.output_tokens > 0


def test_streaming_with_usage_from_the_final_chunk(engine: OpenAIEngine) -> None:
    async def main() -> tuple[list[str], str, int]:
        thunk = generate(CBlock("Once upon a time"), options={"max_tokens": 8, "temperature": 0})
        thunk._claimed = True
        thunk.facts.stream = True
        deltas: list[str] = []

        async def consume() -> None:
            async for delta in thunk.stream():
                deltas.append(delta)

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await engine.generate(None, into=thunk)
        return deltas, thunk.value, thunk.usage.output_tokens

    deltas, value, output_tokens = anyio.run(main)
    assert len(deltas) > 1 and "".join(deltas) == value
    assert output_tokens > 0


def test_structured_output(engine: OpenAIEngine) -> None:
    thunk = generate(AskCity(hint="In Europe."), options={"max_tokens": 40, "temperature": 0})
    run(thunk, engine=engine, progress=False)
    assert isinstance(thunk.parsed, City)


def test_non_object_output_schema_is_wrapped_and_unwrapped(llama: LlamaCppEngine) -> None:
    class Count(Component[int]):
        template = "How many legs does a spider have?\n{q}"
        q: Span

    engine = llama.openai_engine(mode="chat")
    thunk = generate(Count(q="Answer:"), options={"max_tokens": 12, "temperature": 0})
    run(thunk, engine=engine, progress=False)
    assert isinstance(thunk.parsed, int)


def test_4xx_is_a_request_error_and_not_retried(engine: OpenAIEngine) -> None:
    # A field of the wrong type, passed verbatim: the server answers 400.
    thunk = generate(CBlock("x"), options={"max_tokens": 2, "extra:n_probs": "many"})
    result = run(thunk, engine=engine, on_error="continue", progress=False)
    assert thunk.state is ThunkState.FAILED
    assert isinstance(thunk.error, EngineRequestError)
    assert "400" in str(thunk.error)
    assert result.attempts == 1


def test_stopped_server_is_unavailable(spangraph_home: pathlib.Path) -> None:
    server = LlamaCppEngine(home=spangraph_home, n_ctx=1024, n_parallel=1)
    url = server.shared().address + "/v1"
    server.close()
    engine = OpenAIEngine(url, api_key=SECRET)
    thunk = generate(CBlock("x"), options={"max_tokens": 2})
    run(thunk, engine=engine, on_error="continue", progress=False)
    assert isinstance(thunk.error, EngineUnavailable)
    assert url in str(thunk.error)


def test_api_key_never_appears(llama: LlamaCppEngine, engine: OpenAIEngine) -> None:
    key = llama.shared()._key.reveal()
    records: list[GenerationRecord] = []
    thunk = generate(CBlock("Hello"), options={"max_tokens": 2})
    failing = generate(CBlock("x"), options={"max_tokens": 2, "extra:n_probs": "many"})
    run(
        thunk,
        failing,
        engine=engine,
        on_error="continue",
        progress=False,
        listeners=[lambda e: records.append(e) if isinstance(e, GenerationRecord) else None],
    )
    texts = [repr(engine), str(engine.__dict__.get("base_url")), *(repr(r) for r in records)]
    texts += [str(failing.error), repr(failing.error)]
    assert records and all(key not in text for text in texts)
