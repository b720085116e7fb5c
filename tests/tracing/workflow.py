"""The small program the convention and viewer tests run: a text generation, a
structured one (a JSON schema constrains its output) and a task that reads both."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from spangraph import CBlock, Component, Span, generate, options, task


class Person(BaseModel):
    name: str


class Extract(Component[Person]):
    template = "Extract the person, as JSON, from: {text}"
    text: Span


@task
def greet(person: Person, note: str) -> str:
    return f"hello {person.name}: {note}"


def program(max_tokens: int) -> list[Any]:
    """A text generation, a structured one (a JSON schema constrains it) and a task."""
    with options(temperature=0, max_tokens=max_tokens, top_p=0.5, top_k=40, seed=7, stop=["END"]):
        note = generate(CBlock("Say hello."))
        person = generate(Extract(text=CBlock("Ada Lovelace wrote it.")))
    return [greet(person, note)]


def scripted_reply(request: Any) -> str:
    return '{"name": "Ada"}' if request.text.startswith("Extract") else "hello there"
