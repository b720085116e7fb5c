"""Rendering: the reference render, the compiled render beside it, and ``Segment``."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field

from spangraph.lowlevel import GenerationProducer
from spangraph.nodes import (
    CBlock,
    ChatHistory,
    Component,
    Instruction,
    Message,
    ModelOutputThunk,
    Prompt,
    Segment,
    Span,
    SpanError,
    _prompt,
    own_segment,
    render_span,
)
from spangraph.nodes._span import FAST_RENDERS, render_reference


class Pair(Component[str]):
    """Parts only: with both parts finished thunks, the compiled render's first shape."""

    template = "{a}+{b}"
    a: Span
    b: Span


class Briefing(Component[str]):
    """Every kind of template step: parts, an optional part, a list, parameters."""

    template = "{title}: {body}{note}\nItems:\n{items}\n{count:03d} {tags}"
    title: Span
    body: Span
    note: Span | None = None
    items: list[Span] = Field(default_factory=list)
    count: int = 0
    tags: list[str] = Field(default_factory=list)


class Spoken(Component[str]):
    """A template whose class gives its own chat role."""

    template = "say {line}"
    line: Span

    def _sg_message_role(self) -> str | None:
        return "assistant"


class Joined(Component[str]):
    """No template: the parts joined by blank lines (the reference render only)."""

    first: Span
    rest: list[Span] = Field(default_factory=list)


class Framed:
    """A component of the component protocol: it renders itself."""

    def __init__(self, inner: Any, frame: str) -> None:
        self.inner, self.frame = inner, frame

    def parts(self) -> Sequence[Any]:
        return [self.inner]

    def render(self) -> Prompt:
        edge = Prompt((own_segment(self, self.frame),))
        return edge + render_span(self.inner) + edge

    def parse_output(self, text: str) -> str:
        return text


def done(text: str) -> ModelOutputThunk[str]:
    thunk: ModelOutputThunk[str] = ModelOutputThunk(GenerationProducer(CBlock("q")))
    thunk._set_done(text, text)
    return thunk


def pending() -> ModelOutputThunk[str]:
    return ModelOutputThunk(GenerationProducer(CBlock("q")))


texts = st.text(alphabet="ab \n{}", max_size=4)
roles = st.sampled_from(["user", "assistant", "system"])
blocks = st.builds(CBlock, texts, cache=st.booleans())
finished = st.one_of(blocks, st.builds(done, texts))
leaves = st.one_of(finished, st.just(pending()).map(lambda _: pending()))


def components(parts: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    messages = st.builds(Message, role=roles, content=parts)
    return st.one_of(
        st.builds(Pair, a=parts, b=parts),
        st.builds(
            Briefing,
            title=parts,
            body=parts,
            note=st.none() | parts,
            items=st.lists(parts, max_size=3),
            count=st.integers(0, 999),
            tags=st.lists(texts, max_size=2),
        ),
        st.builds(Spoken, line=parts),
        st.builds(Joined, first=parts, rest=st.lists(parts, max_size=2)),
        messages,
        st.builds(ChatHistory, messages=st.lists(messages, max_size=3)),
        st.builds(
            Instruction,
            description=parts,
            grounding=st.lists(parts, max_size=2),
            examples=st.lists(parts, max_size=2),
            requirements=st.lists(st.text(alphabet="xy", min_size=1, max_size=3), max_size=2),
        ),
        st.builds(Framed, parts, texts),
    )


#: Any span; or a component of blocks and finished thunks, the shape compiled renders take.
spans = st.one_of(st.recursive(leaves, components, max_leaves=12), components(finished))


def outcome(render: Any, root: Any) -> Any:
    """The segments' fields, in order (or the error's type and path)."""
    try:
        prompt = render(root)
    except SpanError as exc:
        return type(exc), exc.path
    assert all(type(s) is Segment for s in prompt.segments)
    assert prompt.text == "".join(s.text for s in prompt.segments) and len(prompt) == len(
        prompt.segments
    )
    return [s._asdict() for s in prompt.segments]


@settings(max_examples=300, deadline=None)
@given(spans)
def test_compiled_render_equals_reference_render(root: Any) -> None:
    reference = outcome(render_reference, root)
    compiled = FAST_RENDERS.get(type(root))
    if compiled is not None and compiled(root) is not None:
        assert outcome(compiled, root) == reference
    assert outcome(render_span, root) == reference


def test_the_compiled_render_takes_the_usual_shapes() -> None:
    """Blocks and finished thunks as parts, in any template: the compiled render
    renders them (it hands anything else to the reference)."""
    roots = [
        Pair(a=done("x"), b=done("y")),
        Pair(a=CBlock("doc", cache=True), b=done("y")),
        Briefing(title="t", body=done("b"), items=[CBlock("x"), CBlock(""), done("z")]),
        Briefing(title=CBlock(""), body="b", note="n", count=7, tags=["a"]),
        Spoken(line=done("hi")),
    ]
    for root in roots:
        prompt = FAST_RENDERS[type(root)](root)
        assert prompt is not None and prompt == render_reference(root)
    answer = done("answer")
    briefing = Briefing(title="t", body=answer, items=["x", "", answer], count=7, tags=["a"])
    assert render_span(briefing).text == "t: answer\nItems:\nx\n\nanswer\n007 - a"
    assert [s.role for s in render_span(Spoken(line=answer)).segments] == ["assistant"] * 2
    assert FAST_RENDERS[Pair](Pair(a=pending(), b="b")) is None
    assert FAST_RENDERS[Pair](Pair(a=Pair(a="a", b="b"), b="b")) is None
    assert Joined not in FAST_RENDERS and Instruction not in FAST_RENDERS


def test_a_segment_field_is_added_in_one_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Segment`` with one more field (and its default), put in its module's place:
    every way of rendering makes segments that carry it, so none writes a segment's
    fields by position but the class's own module (``segment``, ``segment_source``)."""
    tagged = namedtuple(  # type: ignore[misc]
        "Tagged",
        [*Segment._fields, "lang"],
        defaults=[*Segment._field_defaults.values(), "en"],
    )
    monkeypatch.setattr(_prompt, "Segment", tagged)

    class Pair2(Component[str]):  # classes made now compile renders for the new field
        template = "{a}+{b}"
        a: Span
        b: Span

    class Briefing2(Component[str]):
        template = "{title}: {items} {count}"
        title: Span
        items: list[Span] = Field(default_factory=list)
        count: int = 0

    class Spoken2(Spoken):
        template = "say {line}!"

    chat = ChatHistory(messages=[Message("user", "hi"), Message("assistant", done("yo"))])
    roots: list[Any] = [
        Pair2(a=done("x"), b=done("y")),
        Pair2(a=CBlock("doc", cache=True), b="b"),
        Briefing2(title="t", items=["i", done("j")], count=3),
        Spoken2(line=done("hello")),
        Pair2(a=Briefing2(title="nested"), b="b"),
        chat,
        Instruction(description="d", grounding=[CBlock("g", cache=True)], requirements=["r"]),
        Message("system", Framed(CBlock("inner"), "|")),
    ]
    for root in roots:
        for render in (render_span, render_reference):
            prompt = render(root)
            assert prompt.segments and prompt == render_reference(root)
            for seg in prompt.segments:
                assert type(seg) is tagged and seg.lang == "en", (root, seg)
    first = render_span(roots[0])
    assert [s.text for s in first.segments] == ["x", "+", "y"]
