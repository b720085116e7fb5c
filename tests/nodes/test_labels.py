"""The label rule (``spangraph.nodes._label``): the user's label, else structural, with a
content hint only when capture is on; where the hint comes from and how long it is."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spangraph import CBlock, Component, Span, generate, task
from spangraph.nodes import Prompt
from spangraph.nodes._label import HINT_CHARS, action_hint, display_label, shorten


class Ask(Component[str]):
    template = "{document}\n\n{question}"
    document: Span
    question: Span


class Tagged(Component[str]):
    template = "{tag}: {text}"
    text: Span
    tag: str


class Custom:
    """A component that is no pydantic model: its parameters come from ``params()``."""

    def parts(self) -> Sequence[Any]:
        return [CBlock("the custom text")]

    def params(self) -> dict[str, Any]:
        return {"size": 3}

    def render(self) -> Prompt:
        raise NotImplementedError

    def parse_output(self, text: str) -> str:
        return text


def test_the_hint_skips_cached_blocks_and_prefers_parameters() -> None:
    shared = CBlock("A long shared document " * 20, cache=True)
    assert action_hint(Ask(document=shared, question=CBlock("Which version?"))) == "Which version?"
    assert action_hint(Tagged(text=CBlock("body"), tag="greeting")) == "greeting"
    assert action_hint(Custom()) == "3"
    assert action_hint(Ask(document=shared, question=shared)) is None


def test_hints_are_cut_at_a_word_within_the_width() -> None:
    cut = shorten("Must a redistribution include a copy of the License?", HINT_CHARS)
    assert len(cut) <= HINT_CHARS and cut.endswith("…") and " ".join(cut[:-1].split()) == cut[:-1]
    assert shorten("  short\n text ", HINT_CHARS) == "short text"


def test_labels_by_mode() -> None:
    asked = generate(Ask(document=CBlock("doc", cache=True), question=CBlock("Why?")))
    assert display_label(asked, captured=False) == "generate(Ask)"
    assert display_label(asked, captured=True) == "generate(Ask) “Why?”"
    named = generate(Ask(document=CBlock("doc"), question=CBlock("Why?")), label="why")
    assert display_label(named, captured=False) == display_label(named, captured=True) == "why"

    @task
    def fetch(url: str, tries: int) -> str:
        return url

    fetched = fetch("https://example.org/a", 3)
    assert display_label(fetched, captured=False) == "task(test_labels_by_mode.<locals>.fetch)"
    assert display_label(fetched, captured=True).endswith("“https://example.org/a”")
    assert display_label(CBlock("some text"), captured=False) == "CBlock (9 chars)"
    assert display_label(CBlock("some text"), captured=True) == "'some text'"


def test_a_label_is_not_part_of_a_nodes_identity() -> None:
    from spangraph import compile

    document = CBlock("doc")
    first = generate(Ask(document=document, question=CBlock("q")), label="first")
    second = generate(Ask(document=document, question=CBlock("q")), label="second")
    graph = compile(first, second)
    (node_id,) = graph.generations()
    assert graph.graph.nodes[node_id]["label"] == "first"  # the first one compile() meets
