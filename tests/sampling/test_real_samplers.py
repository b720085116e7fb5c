"""Samplers on the real embedded engine."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import BaseModel, Field

from spangraph import CBlock, Component, Requirement, Span, generate, options, run, sample
from spangraph.sampling import RejectionSampler, matches, never_matches

pytestmark = pytest.mark.real


class Count(Component[int]):
    template = "Question: {q}\nAnswer with a number:"
    q: Span


class Legs(BaseModel):
    legs: int = Field(ge=0, le=20)


class CountLegs(Component[Legs]):
    template = "Question: {q}\nAnswer as JSON:"
    q: Span


def test_regex_requirement_met_within_the_budget(llama: Any) -> None:
    # Constrained decoding (a bounded integer in a closed object) helps the small model.
    with options(temperature=0.7, max_tokens=16):
        chosen = sample(
            CountLegs(q="How many legs does a spider have?"),
            RejectionSampler([matches(r'\{\s*"legs"\s*:\s*\d{1,2}\s*\}')], loop_budget=3),
        )
    result = run(chosen, engine=llama, progress=False)
    selected = chosen.facts.selected
    assert selected is not None and selected.facts.validation_passed is True
    assert isinstance(chosen.parsed, Legs)
    assert 1 <= len(chosen.attempts) <= 3
    assert result.log is not None and result.log.filter(kind="sampler")


def test_llm_judged_requirement_verdict_is_in_the_trace(llama: Any) -> None:
    with options(temperature=0, max_tokens=12):
        chosen = sample(
            Count(q="How many days are in a week?"),
            RejectionSampler([Requirement("The answer is a number.")], loop_budget=1),
        )
    result = run(chosen, engine=llama, progress=False)
    ((_, verdict),) = chosen.attempts[0].facts.validation or ()
    assert verdict.reason is not None and verdict.reason.startswith("judge: ")
    dag = result.log
    assert dag is not None
    judges = [n for n in dag.nodes.values() if n.label == "judge of attempt 0"]
    assert len(judges) == 1 and judges[0].input_tokens > 0
    attempt = next(n for n in dag.nodes.values() if n.label.startswith("attempt"))
    assert attempt.attributes["spangraph.validation.passed"] is verdict.passed
    judged = [e.source for e in dag.edges if e.kind == "judge" and e.target == judges[0].key]
    assert judged == [attempt.key]


def test_a_streaming_check_stops_the_real_engine_early(llama: Any) -> None:
    """A requirement that fails early stops the generation well before max_tokens: the
    tokens saved are the unstopped generation's tokens less those made before the stop."""
    prompt = CBlock("Count from 1 to 60, separated by commas: 1, 2, 3,")
    greedy = {"temperature": 0, "max_tokens": 128, "stop": []}
    with options(**greedy):
        unstopped = generate(prompt)
        chosen = sample(prompt, RejectionSampler([never_matches(r"\b9\b")], loop_budget=1))
    started = time.perf_counter()
    run(unstopped, engine=llama, progress=False)
    full_s = time.perf_counter() - started
    started = time.perf_counter()
    run(chosen, engine=llama, on_error="continue", progress=False)
    stopped_s = time.perf_counter() - started
    (attempt,) = chosen.attempts
    text = attempt.facts.stopped_text
    assert text is not None and text.rstrip().endswith("9"), text
    assert unstopped.value.startswith(text)  # greedy: the same text, cut at the failure
    made = len(llama.shared().http("/tokenize", {"content": text})["tokens"])
    full = unstopped.usage.output_tokens
    print(
        f"\nstreaming check: stopped after {made} of {full} tokens "
        f"({full - made} saved); {stopped_s:.2f} s against {full_s:.2f} s"
    )
    assert full >= 100 and made <= 24
