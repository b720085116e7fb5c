"""Structured output on the real engine: whitespace cannot run on, and an output cut
off at ``max_tokens`` says so.

The prompts are bare (``"{q}"``): with llguidance's default whitespace the base
model often pretty-prints and then writes ``"\\n  "`` until the token limit
(``benchmarks/structured_output.py`` measures it). The property checked is
the grammar's, so it holds for every sample: no whitespace outside strings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from spangraph import Component, Span, generate, run
from spangraph.engines import InferenceEngine, LlamaCppEngine, OpenAIEngine, ParseError

pytestmark = pytest.mark.real
PROMPTS = ["City:", "A city:", "The capital of France", "Describe Paris."]
SEEDS = range(3)


class City(BaseModel):
    name: str
    country: str


class Address(BaseModel):
    city: str
    country: str


class Person(BaseModel):
    name: str
    age: int
    address: Address


class AskCity(Component[City]):
    template = "{q}"
    q: Span


class AskPerson(Component[Person]):
    template = "{q}"
    q: Span


class AskList(Component[list[str]]):
    template = "{q}"
    q: Span


def whitespace_outside_strings(text: str) -> bool:
    in_string = escape = False
    for ch in text:
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in " \t\r\n":
            return True
    return False


def _outputs(engine: InferenceEngine, component: type[Component[Any]]) -> list[str]:
    """Every sample's text, parsed or not (a failed one's is on its ParseError)."""
    thunks = [
        generate(component(q=q), options={"seed": seed, "max_tokens": 48, "temperature": 0.8})
        for q in PROMPTS
        for seed in SEEDS
    ]
    run(*thunks, engine=engine, on_error="continue", progress=False)
    texts = []
    for thunk in thunks:
        if thunk.error is None:
            texts.append(thunk.value)
        else:
            assert isinstance(thunk.error, ParseError), thunk.error
            texts.append(thunk.error.raw)
    return texts


@pytest.fixture(params=["llamacpp", "openai completion", "openai chat"])
def engine(request: pytest.FixtureRequest, llama: LlamaCppEngine) -> Iterator[InferenceEngine]:
    if request.param == "llamacpp":
        yield llama
        return
    engine = llama.openai_engine(mode=request.param.split()[1])  # type: ignore[arg-type]
    yield engine
    anyio.run(engine.aclose)


@pytest.mark.parametrize("component", [AskCity, AskPerson, AskList])
def test_json_output_has_no_whitespace_outside_strings(
    engine: InferenceEngine, component: type[Component[Any]]
) -> None:
    texts = _outputs(engine, component)
    assert len(texts) == len(PROMPTS) * len(SEEDS)
    assert [t for t in texts if whitespace_outside_strings(t)] == []


def test_without_the_compact_option_whitespace_runs_on(llama: LlamaCppEngine) -> None:
    """The control: the same server, sent the plain schema, pretty-prints and runs on."""
    shared = llama.shared()
    flexible = OpenAIEngine(f"{shared.address}/v1", api_key=shared._key.reveal(), mode="completion")
    texts = _outputs(flexible, AskCity)
    anyio.run(flexible.aclose)
    assert any(whitespace_outside_strings(t) for t in texts)
    assert any(t.count("\n") >= 6 for t in texts)  # a run of newlines in 48 tokens


def test_an_output_cut_off_at_max_tokens_says_so(engine: InferenceEngine) -> None:
    thunk = generate(AskPerson(q="A person:"), options={"max_tokens": 5, "temperature": 0})
    run(thunk, engine=engine, on_error="continue", progress=False)
    error = thunk.error
    assert isinstance(error, ParseError) and error.max_tokens == 5
    assert error.raw.startswith("{")
    assert "output was cut off at max_tokens (5 tokens)" in str(error)
    assert "Raise max_tokens" in str(error)
