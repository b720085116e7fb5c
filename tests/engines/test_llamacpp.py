"""The real embedded engine: llama.cpp in-process with the packaged Gemma 3 270M."""

from __future__ import annotations

import itertools
import os
import threading
import time
from typing import Any

import anyio
import pytest
from pydantic import BaseModel, Field

from spangraph import CBlock, Component, Span, generate, options, run
from spangraph.engines import ContextLengthError, LlamaCppEngine, ModelFileError, ParseError
from spangraph.nodes import ThunkState
from tests.conftest import DOCUMENT

pytestmark = pytest.mark.real


class Person(BaseModel):
    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=120)


class Describe(Component[Person]):
    template = "Describe a person as JSON with a name and an age.\n{hint}\n"
    hint: Span


class Question(Component[str]):
    template = "{document}\n\nQuestion: {question}\nAnswer:"
    document: Span
    question: Span


def test_plain_completion(llama: LlamaCppEngine) -> None:
    thunk = anyio.run(
        lambda: llama.generate(CBlock("The capital of France is"), options={"max_tokens": 8})
    )
    assert thunk.value.strip()
    assert thunk.usage.output_tokens > 0 and thunk.usage.input_tokens > 0
    assert thunk.timings.decode_ms > 0


def test_pydantic_output_is_constrained_and_parsed(llama: LlamaCppEngine) -> None:
    with options(temperature=0):
        thunk = generate(Describe(hint="A retired teacher from Lyon."), options={"max_tokens": 60})
    run(thunk, engine=llama, progress=False)
    assert isinstance(thunk.parsed, Person)
    assert 0 <= thunk.parsed.age <= 120
    assert set(Person.model_validate_json(thunk.value).model_dump()) == {"name", "age"}


def test_stream_deltas_concatenate_to_value(llama: LlamaCppEngine) -> None:
    async def main() -> tuple[list[str], str]:
        thunk = generate(CBlock("Once upon a time"), options={"max_tokens": 12, "temperature": 0})
        deltas: list[str] = []

        async def consume() -> None:
            async for delta in thunk.stream():
                deltas.append(delta)

        thunk._claimed = True  # this test drives the engine itself, not a run
        thunk.facts.stream = True
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await llama.generate(None, into=thunk)
        return deltas, thunk.value

    deltas, value = anyio.run(main)
    assert len(deltas) > 1
    assert "".join(deltas) == value

    async def via_engine() -> list[str]:
        return [d async for d in llama.stream("Once upon a time", max_tokens=12, temperature=0)]

    assert "".join(anyio.run(via_engine)) == value


def test_shared_prefix_reports_cached_input_tokens(llama: LlamaCppEngine) -> None:
    document = CBlock(DOCUMENT[:3000], cache=True)
    first = generate(
        Question(document=document, question="Who may grant licenses?"), options={"max_tokens": 4}
    )
    second = generate(
        Question(document=document, question="What is a Contribution?"), options={"max_tokens": 4}
    )
    run(first, engine=llama, progress=False)
    run(second, engine=llama, progress=False)
    assert first.usage.input_tokens > 500
    assert second.usage.cached_input_tokens > 500
    assert second.usage.cached_input_tokens <= second.usage.input_tokens


def test_concurrent_generations_overlap(llama: LlamaCppEngine) -> None:
    """Four generations on two slots: the engine's own decode timings overlap in time."""
    intervals: list[tuple[float, float]] = []
    lock = threading.Lock()
    original = llama._call_blocking

    def timed(payload: dict[str, Any], request: Any, *rest: Any) -> dict[str, Any]:
        start = time.perf_counter()
        result = original(payload, request, *rest)
        with lock:
            intervals.append((start, time.perf_counter()))
        return result

    llama._call_blocking = timed  # type: ignore[method-assign]
    try:
        thunks = [
            generate(
                CBlock(f"Story {i}: Once upon a time"),
                options={"max_tokens": 24, "seed": i, "temperature": 0.8},
            )
            for i in range(4)
        ]
        result = run(*thunks, engine=llama, progress=False)
    finally:
        del llama._call_blocking
    assert result.generations == 4 and len(intervals) == 4
    intervals.sort()
    overlaps = sum(1 for (_, end), (start, _) in itertools.pairwise(intervals) if start < end)
    assert overlaps >= 2  # two slots: pairs of calls were in flight together
    busy = sum(end - start for start, end in intervals)
    span = max(end for _, end in intervals) - min(start for start, _ in intervals)
    assert span < busy  # concurrent: the run took less than the calls' summed time


def test_prompt_over_context_is_refused_before_the_call(llama: LlamaCppEngine) -> None:
    long_prompt = CBlock("word " * 6000)
    thunk = generate(long_prompt, options={"max_tokens": 4})
    result = run(thunk, engine=llama, on_error="continue", progress=False)
    assert thunk.state is ThunkState.FAILED
    assert isinstance(thunk.error, ContextLengthError)
    assert thunk.error.limit == 4096 and (thunk.error.tokens or 0) > 4096
    assert result.generations == 0


def test_truncated_structured_output_is_a_parse_error_with_raw_text(llama: LlamaCppEngine) -> None:
    thunk = generate(Describe(hint="A sailor."), options={"max_tokens": 3, "temperature": 0})
    run(thunk, engine=llama, on_error="continue", progress=False)
    assert thunk.state is ThunkState.FAILED
    assert isinstance(thunk.error, ParseError)
    assert thunk.error.raw and thunk.error.raw.startswith("{")


def test_model_digest_mismatch(llama: LlamaCppEngine) -> None:
    with pytest.raises(ModelFileError, match=r"has sha256 \w+, expected 0000"):
        LlamaCppEngine(llama.model_path, sha256="0" * 64)
    with pytest.raises(ModelFileError, match="does not exist"):
        LlamaCppEngine("/nonexistent/model.gguf")


def test_equal_configurations_share_one_model(llama: LlamaCppEngine) -> None:
    from spangraph.engines._llamacpp import loaded_servers

    before = loaded_servers()
    twin = LlamaCppEngine(home=llama.home, n_ctx=8192, n_parallel=2)
    assert twin.shared() is llama.shared()
    assert loaded_servers() == before
    twin.close()
    assert llama.shared().server is not None  # still held by the session's engine


def test_close_leaves_no_thread_behind(spangraph_home: Any) -> None:
    """A second configuration loads its own server; closing it stops its threads."""

    def os_threads() -> int:
        return len(os.listdir("/proc/self/task"))

    # Threads of earlier tests may end meanwhile (anyio's idle workers do): compare sets.
    python_before, os_before = set(threading.enumerate()), os_threads()
    engine = LlamaCppEngine(home=spangraph_home, n_ctx=1024, n_parallel=1)
    anyio.run(lambda: engine.generate(CBlock("Hi"), options={"max_tokens": 2}))
    assert os_threads() > os_before
    engine.close()
    assert set(threading.enumerate()) <= python_before  # no Python thread of its own is left
    assert os_threads() <= os_before + 1  # llama.cpp keeps one process-wide worker


def test_views_share_the_engines_server_reference(llama: LlamaCppEngine) -> None:

    shared = llama.shared()
    refs = shared.refs
    view = options(temperature=0)(llama)
    assert view.shared() is shared and shared.refs == refs
    view.close()
    assert shared.refs == refs and llama.shared().server is not None
