"""A three-level graph on the real embedded engine: extract → per-item answer → combine."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field

from spangraph import CBlock, Component, Span, generate, options, run, task

pytestmark = pytest.mark.real


class Topics(BaseModel):
    topics: list[str] = Field(min_length=2, max_length=3)


class Extract(Component[Topics]):
    template = "{text}\n\nList two or three topics of this text as JSON:"
    text: Span


class Explain(Component[str]):
    template = "Topic: {topic}\nOne short sentence about it:"
    topic: Span


class Combine(Component[str]):
    template = "Notes:\n{notes}\n\nSummary:"
    notes: list[Span]


def test_extract_answer_combine(llama: Any) -> None:
    text = CBlock("Bees make honey. Rivers flow to the sea. Stars shine at night.", cache=True)

    @task
    def explain_each(found: Topics) -> list[Any]:
        with options(temperature=0, max_tokens=16, stop=["\n"]):
            return [generate(Explain(topic=t[:40])) for t in found.topics]

    with options(temperature=0, max_tokens=48):
        topics = generate(Extract(text=text))
    answers = explain_each(topics)
    with options(temperature=0, max_tokens=16):
        summary = generate(Combine(notes=[answers]))
    result = run(summary, engine=llama, progress=False)
    assert result.status == "done"
    assert 2 <= len(topics.parsed.topics) <= 3
    assert len(answers.parsed) == len(topics.parsed.topics)
    assert result.generations == 2 + len(topics.parsed.topics)
    assert result.dynamic_nodes > 0
    assert summary.usage.input_tokens > 0
