"""Content ids are pinned: a change to any of them invalidates every user's memo.

An id is a digest of a span's kind, class (module and qualified name),
parameters and parts' ids (``spangraph/nodes/_digest.py``), so moving a
component class to another module changes its id too. If a test here
fails, the change changed content ids: that is a break of every memo
written before it, to be made on purpose or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spangraph import generate, task
from spangraph.graph import compile
from spangraph.lowlevel import span_id
from spangraph.nodes import (
    CBlock,
    ChatHistory,
    Component,
    Instruction,
    Message,
    Prompt,
    Span,
    own_segment,
)


class Brief(Component[str]):
    template = "{doc}\nStyle: {style} ({words} words)"
    doc: Span
    style: str = "short"
    words: int = 50


class Custom:
    """A component of the component protocol, with parameters of its own."""

    def __init__(self, body: Any, tone: str) -> None:
        self.body = body
        self.tone = tone

    def parts(self) -> Sequence[Any]:
        return [self.body]

    def params(self) -> dict[str, Any]:
        return {"tone": self.tone}

    def render(self) -> Prompt:
        return Prompt((own_segment(self, self.tone),))

    def parse_output(self, text: str) -> str:
        return text


@task
def shout(text: str) -> str:
    return text.upper()


def spans() -> dict[str, Any]:
    """Fresh spans (no id computed yet), by name."""
    doc = CBlock("a shared document", cache=True)
    brief = Brief(doc=doc, style="long", words=80)
    chat = ChatHistory(messages=[Message(role="user", content="hi"), Message("assistant", "hello")])
    first = generate(brief)
    return {
        "block": CBlock("hello"),
        "cached block": doc,
        "template component": brief,
        "instruction": Instruction(
            description="Summarise", grounding=[doc, CBlock("notes")], requirements=["short"]
        ),
        "chat": chat,
        "custom component": Custom(CBlock("body"), tone="dry"),
        "generation": first,
        "generation with options": generate(
            Instruction(description="Answer"), options={"temperature": 0}, sample_index=1
        ),
        "generation in a chat": generate(Instruction(description="And?"), state=chat),
        "chained generation": generate(Brief(doc=first, style="terse")),
        "task": shout(first),
    }


PINNED = {
    "block": "721dc73d614eb958325f5767d915f329",
    "cached block": "5b13bb0c97366375adac7e850634a17b",
    "template component": "6529cf2a43f3a4a2df1baa0cf2bdd02e",
    "instruction": "39655a51eb87674ab24ff433728e5715",
    "chat": "0bf9861725fcf0f8b7bd99ac6fb7c03f",
    "custom component": "e6d0cfe5e89f8bd6872e71a9adc3d835",
    "generation": "855ea66108a4125645043b3d1d3986b4",
    "generation with options": "bd9e6a3d9ee0ca96c27db31a72cf7834",
    "generation in a chat": "628a63640fb66a40c1eb62fa6a3c93f0",
    "chained generation": "e20667d9f6a83b61ed9ad235a55f8270",
    "task": "0485387dae3a2b74c8d6eb035a71724c",
}


def test_content_ids_are_pinned() -> None:
    assert {name: span_id(span) for name, span in spans().items()} == PINNED


def test_compile_gives_the_pinned_ids() -> None:
    made = spans()
    graph = compile(*made.values())  # compile() walks fresh spans: ids computed there
    assert graph.roots == list(PINNED.values())
    assert {name: span_id(span) for name, span in made.items()} == PINNED
