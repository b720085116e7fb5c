"""Streaming on the real engines: a 64-token generation arrives in many deltas while the
run is under way (LlamaCppEngine in-process, an OpenAIEngine on a real llama.cpp server),
the deltas join to the output, and the time to the first one is recorded."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from spangraph import CBlock, arun_stream, generate
from spangraph.engines import InferenceEngine, LlamaCppEngine
from spangraph.events import NodeFinished, NodeStarted, TokenDelta

pytestmark = pytest.mark.real
OPTIONS = {"max_tokens": 64, "temperature": 0, "stop": []}


@pytest.fixture(params=["llamacpp", "openai"])
def engine(request: pytest.FixtureRequest, llama: LlamaCppEngine) -> InferenceEngine:
    return llama if request.param == "llamacpp" else llama.openai_engine()


def test_a_64_token_generation_streams_token_by_token(engine: InferenceEngine) -> None:
    thunk = generate(CBlock("The history of the printing press:"), options=OPTIONS)

    async def main() -> list[Any]:
        async with arun_stream(thunk, engine=engine, tokens=True, progress=False) as events:
            return [event async for event in events]

    items = anyio.run(main)
    assert items[-1].status == "done"
    kinds = [type(e).__name__ for e in items[:-1] if e.node_id == items[-1].graph.id_of(thunk)]
    deltas = [e.text for e in items if isinstance(e, TokenDelta)]
    assert "".join(deltas) == thunk.value
    produced = thunk.usage.output_tokens
    print(
        f"\n{type(engine).__name__}: {len(deltas)} deltas for {produced} tokens, "
        f"first after {thunk.timings.first_token_ms:.0f} ms of {thunk.timings.total_ms:.0f} ms"
    )
    # Streamed as it was generated: about one delta per token, not one at the end.
    assert produced >= 32 and len(deltas) >= produced // 2
    assert kinds.index(NodeStarted.__name__) < kinds.index("TokenDelta")
    assert kinds.index(NodeFinished.__name__) > len(kinds) - 2
    first = thunk.timings.first_token_ms
    assert first is not None and 0 < first < thunk.timings.total_ms


def test_thunk_stream_while_the_run_is_under_way(engine: InferenceEngine) -> None:
    thunk = generate(CBlock("A list of colours:"), options=OPTIONS)

    async def main() -> tuple[list[str], list[str]]:
        async with arun_stream(thunk, engine=engine, progress=False) as events:
            first: list[str] = []
            second: list[str] = []

            async def consume(into: list[str]) -> None:
                async for delta in thunk.stream():
                    into.append(delta)

            async with anyio.create_task_group() as tg:
                tg.start_soon(consume, first)
                async for _ in events:
                    pass
                tg.start_soon(consume, second)  # a late consumer: what was produced
            return first, second

    first, second = anyio.run(main)
    assert "".join(first) == "".join(second) == thunk.value
    assert len(first) > 8  # deltas as they came, not the whole text at once
