"""Parse failures: what the error says, and the two ways to get a good output after one
(retry by policy, repair through a sampler). Scripted engines; the real engine's cut-off
outputs are in ``test_structured_output.py``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from spangraph import (
    Component,
    NodeFailedError,
    RetryPolicy,
    Span,
    generate,
    run,
)
from spangraph.engines import (
    Completion,
    ParseError,
    Request,
    ScriptedEngine,
    TransientEngineError,
)
from spangraph.nodes import ThunkState
from spangraph.sampling import RejectionSampler, parses_as, sample


class City(BaseModel):
    name: str
    country: str


class AskCity(Component[City]):
    template = "Name a city as JSON.\n{hint}\n"
    hint: Span


class Trip(Component[str]):
    template = "Plan a trip to {city}."
    city: Span


GOOD = '{"name": "Paris", "country": "France"}'
CUT = '{"name": "Paris", "country": "Fra'


async def _no_sleep(seconds: float) -> None:
    return None


def _replies(*texts: str) -> Iterator[str]:
    return iter(texts)


class CutOffEngine(ScriptedEngine):
    """Answers like a server that stopped at the token limit (``finish_reason="length"``)."""

    async def _complete(self, request: Request) -> Completion:
        done = await super()._complete(request)
        return done._replace(finish_reason="length")


def test_a_parse_error_names_the_node_once_and_says_what_to_do() -> None:
    for root_of, path in (
        (lambda t: t, "generate(AskCity)"),
        (lambda t: generate(Trip(city=t)), "generate(Trip).action.parts()[0]"),
    ):
        thunk = generate(AskCity(hint="In Europe."))
        with pytest.raises(NodeFailedError) as caught:
            run(root_of(thunk), engine=ScriptedEngine("not json"), progress=False)
        message = str(caught.value)
        assert message.startswith(f"{path}: ParseError: ")
        assert message.count("AskCity") == 1  # the node, named once
        assert "expected City" in message and "'not json'" in message
        assert "RetryPolicy(retry_on=" in message and "RejectionSampler" in message
        error = caught.value.error
        assert isinstance(error, ParseError) and error.raw == "not json"
        assert str(error).count("AskCity") == 1


def test_the_raw_output_is_whole_on_the_error_and_clipped_in_the_message() -> None:
    raw = '{"name": "' + "Paris " * 200
    thunk = generate(AskCity(hint="x"))
    run(thunk, engine=ScriptedEngine(raw), on_error="continue", progress=False)
    error = thunk.error
    assert isinstance(error, ParseError) and error.raw == raw
    assert len(str(error)) < 600 and "…" in str(error)


@pytest.mark.parametrize(
    "text",
    [CUT, '{"name": "Paris", "country": "France", ', '{"name": "Paris", "coun', "{\n\n  \n  "],
)
def test_an_output_cut_off_at_max_tokens_says_so_with_the_count(text: str) -> None:
    thunk = generate(AskCity(hint="x"))
    run(thunk, engine=CutOffEngine(text), on_error="continue", progress=False)
    error = thunk.error
    assert isinstance(error, ParseError) and error.raw == text
    assert error.max_tokens == len(text.split())  # the tokens the engine reported
    message = str(error)
    assert message.startswith("generate(AskCity): output was cut off at max_tokens (")
    assert f"({error.max_tokens} tokens)" in message
    assert "Raise max_tokens" in message and "Field(max_length=...)" in message


def test_an_output_that_ended_on_its_own_is_not_called_cut_off() -> None:
    thunk = generate(AskCity(hint="x"))
    run(thunk, engine=ScriptedEngine(CUT), on_error="continue", progress=False)
    assert isinstance(thunk.error, ParseError)
    assert thunk.error.max_tokens is None and "cut off" not in str(thunk.error)


def test_a_cut_off_output_that_parses_is_kept() -> None:
    thunk = generate(AskCity(hint="x"))
    run(thunk, engine=CutOffEngine(GOOD), progress=False)
    assert thunk.parsed == City(name="Paris", country="France")


def test_retry_policy_retries_parse_errors_when_asked() -> None:
    for bad_answers in (1, 2):
        replies = _replies(*["not json"] * bad_answers, GOOD)
        engine = ScriptedEngine(lambda request, r=replies: next(r))  # type: ignore[misc]
        thunk = generate(AskCity(hint="x"))
        policy = RetryPolicy(
            attempts=3, retry_on=(TransientEngineError, ParseError), sleep=_no_sleep
        )
        result = run(thunk, engine=engine, retry=policy, progress=False)
        assert thunk.parsed == City(name="Paris", country="France")
        assert result.attempts == bad_answers + 1 and engine.calls == bad_answers + 1


def test_the_default_retry_policy_does_not_retry_a_parse_error() -> None:
    engine = ScriptedEngine(lambda request: "not json")
    thunk = generate(AskCity(hint="x"))
    result = run(thunk, engine=engine, on_error="continue", progress=False)
    assert thunk.state is ThunkState.FAILED and isinstance(thunk.error, ParseError)
    assert result.attempts == 1 and engine.calls == 1


def test_retries_stop_at_the_policy_s_attempts() -> None:
    engine = ScriptedEngine(lambda request: CUT)
    thunk = generate(AskCity(hint="x"))
    policy = RetryPolicy(attempts=3, retry_on=(ParseError,), sleep=_no_sleep)
    result = run(thunk, engine=engine, retry=policy, on_error="continue", progress=False)
    assert isinstance(thunk.error, ParseError) and thunk.error.raw == CUT
    assert result.attempts == 3 and engine.calls == 3


def test_a_rejection_sampler_repairs_parse_failures() -> None:
    replies = _replies("not json", CUT, GOOD)
    asked: list[str] = []
    engine = ScriptedEngine(lambda request: asked.append(request.text) or next(replies))
    thunk = sample(AskCity(hint="x"), RejectionSampler([parses_as(City)], loop_budget=3))
    result = run(thunk, engine=engine, progress=False)
    assert thunk.parsed == City(name="Paris", country="France")
    assert len(asked) == 3  # (the sampler's attempts run on a view: count the replies)
    generations = [n for n in result.log.nodes.values() if n.kind == "generation"]
    assert sorted(n.status for n in generations) == ["done", "failed", "failed"]


def test_a_rejection_sampler_out_of_budget_raises_the_parse_error() -> None:
    asked: list[str] = []
    engine = ScriptedEngine(lambda request: asked.append(request.text) or "not json")
    thunk = sample(AskCity(hint="x"), RejectionSampler([parses_as(City)], loop_budget=2))
    run(thunk, engine=engine, on_error="continue", progress=False)
    assert isinstance(thunk.error, ParseError) and thunk.error.raw == "not json"
    assert len(asked) == 2


def test_parse_errors_raised_outside_a_run_are_placed_at_the_generation() -> None:
    async def main() -> Any:
        return await CutOffEngine(CUT).generate(AskCity(hint="x"))

    with pytest.raises(ParseError, match=r"^generate\(AskCity\): output was cut off") as caught:
        anyio.run(main)
    assert caught.value.path == "generate(AskCity)"


def test_a_failed_parse_keeps_the_tokens_it_spent() -> None:
    thunk = generate(AskCity(hint="a big one"))
    with pytest.raises(NodeFailedError):
        run(thunk, engine=ScriptedEngine("not json at all"), progress=False)
    assert thunk.state is ThunkState.FAILED
    assert thunk.usage.output_tokens == 4 and thunk.usage.input_tokens > 0
