from __future__ import annotations

import enum
from typing import Literal

import anyio
import pytest
from pydantic import BaseModel, Field

from spangraph.lowlevel import GenerationProducer, span_id
from spangraph.nodes import (
    CBlock,
    ChatHistory,
    Component,
    ComponentLike,
    DigestError,
    Instruction,
    Message,
    ModelOutputThunk,
    NotASpanError,
    ParseError,
    Prompt,
    Requirement,
    Span,
    TemplateError,
    Text,
    ThunkNotDoneError,
    ThunkState,
    Usage,
    own_segment,
    render_span,
)


class Summary(Component[str]):
    template = "Summarise:\n{doc}\nStyle: {style}\nSummary:"
    doc: Span
    style: str = "short"


class Person(BaseModel):
    name: str
    age: int


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


def test_cblock_is_immutable_and_hashable_by_content() -> None:
    a, b = CBlock("x", meta={"src": "a"}), CBlock("x", meta={"src": "b"})
    assert a == b and hash(a) == hash(b) and a.id == b.id
    assert CBlock("x", cache=True) != a
    assert CBlock("x", cache=True).id != a.id
    with pytest.raises(AttributeError):
        a.text = "y"  # type: ignore[misc]
    with pytest.raises(TypeError):
        CBlock(3)  # type: ignore[arg-type]
    assert len({a, b, CBlock("y")}) == 2


def test_thunk_is_not_a_cblock_and_pattern_matching_tells_them_apart() -> None:
    thunk: object = ModelOutputThunk(GenerationProducer(CBlock("q")))
    assert not isinstance(thunk, CBlock)
    match thunk:
        case CBlock():
            kind = "block"
        case ModelOutputThunk():
            kind = "thunk"
        case _:
            kind = "other"
    assert kind == "thunk"


def test_thunk_value_before_done_is_a_clear_error() -> None:
    thunk: ModelOutputThunk[str] = ModelOutputThunk(GenerationProducer(Summary(doc="d")))
    with pytest.raises(ThunkNotDoneError, match=r"generate\(Summary\).*pending"):
        _ = thunk.value
    thunk._set_running()
    with pytest.raises(ThunkNotDoneError, match="still running"):
        _ = thunk.parsed
    thunk._set_failed(RuntimeError("boom"))
    with pytest.raises(ThunkNotDoneError, match="boom"):
        _ = thunk.value


def test_thunk_states_and_results() -> None:
    thunk: ModelOutputThunk[int] = ModelOutputThunk(GenerationProducer(CBlock("q")))
    assert thunk.state is ThunkState.PENDING
    thunk._set_done("42", 42, usage=Usage(5, 1, 3), cache_hit=True)
    assert (thunk.value, thunk.parsed, thunk.usage.cached_input_tokens, thunk.cache_hit) == (
        "42",
        42,
        3,
        True,
    )
    assert isinstance(thunk.producer, GenerationProducer)
    assert thunk.action == CBlock("q")


def test_await_and_stream_a_thunk_finished_elsewhere() -> None:
    thunk: ModelOutputThunk[str] = ModelOutputThunk(GenerationProducer(CBlock("q")))
    thunk._claimed = True
    got: list[str] = []

    async def main() -> str:
        async def producer() -> None:
            for piece in ("He", "llo"):
                await anyio.sleep(0.01)
                thunk._push_delta(piece)
            thunk._set_done("Hello", "Hello")

        async def consumer() -> None:
            async for delta in thunk.stream():
                got.append(delta)

        async with anyio.create_task_group() as tg:
            tg.start_soon(producer)
            tg.start_soon(consumer)
        return await thunk

    assert anyio.run(main) == "Hello"
    assert "".join(got) == "Hello"


def test_component_fields_split_into_parts_and_parameters() -> None:
    s = Summary(doc="text", style="terse")
    assert s.parts() == (CBlock("text"),)
    assert Summary._sg_param_fields == ("style",)
    assert Summary("positional").parts() == (CBlock("positional"),)


def test_render_round_trips_segments_and_span_ids() -> None:
    doc = CBlock("the document", cache=True)
    s = Summary(doc=doc)
    prompt = s.render()
    assert prompt.text == "Summarise:\nthe document\nStyle: short\nSummary:"
    assert "".join(seg.text for seg in prompt) == prompt.text
    part_ids = {span_id(p) for p in s.parts()}
    assert {seg.span_id for seg in prompt} == part_ids | {s.id}
    (cached,) = [seg for seg in prompt if seg.cache]
    assert cached.span_id == doc.id


def test_template_errors_at_class_creation() -> None:
    with pytest.raises(TemplateError, match=r"\{missing\}.*not a field"):

        class Bad(Component[str]):
            template = "{missing}"
            doc: Span

    with pytest.raises(TemplateError, match="leaves out the part field"):

        class Bad2(Component[str]):
            template = "no parts here"
            doc: Span

    with pytest.raises(TemplateError, match="plain field name"):

        class Bad3(Component[str]):
            template = "{doc.text}"
            doc: Span


def test_non_span_part_is_refused_with_its_type() -> None:
    with pytest.raises(ValueError, match="int is not a span"):
        Summary(doc=3)  # type: ignore[arg-type]


def test_non_serialisable_parameter_names_the_span() -> None:
    class Odd(Component[str]):
        template = "{doc} {obj}"
        doc: Span
        obj: object

    odd = Odd(doc="x", obj=object())
    with pytest.raises(DigestError, match=r"Odd.*not serialisable"):
        span_id(odd)


@pytest.mark.parametrize(
    ("tp", "text", "expected"),
    [
        (str, " as is ", " as is "),
        (int, " 42.", 42),
        (int, "The answer is 7", 7),
        (float, "3.5", 3.5),
        (bool, "Yes.", True),
        (bool, "false", False),
        (Literal["a", "b"], "b", "b"),
        (Color, "Blue", Color.BLUE),
        (Person, '{"name": "Ada", "age": 36}', Person(name="Ada", age=36)),
        (list[int], "[1, 2, 3]", [1, 2, 3]),
        (dict[str, int], 'Here: {"a": 1}', {"a": 1}),
        (list[Person], '[{"name": "A", "age": 1}]', [Person(name="A", age=1)]),
    ],
)
def test_parse_output_by_generic_parameter(tp: object, text: str, expected: object) -> None:
    class Ask(Component[tp]):  # type: ignore[valid-type]
        q: Span

    assert Ask.output_type() == tp
    assert Ask(q="?").parse_output(text) == expected


def test_parse_error_keeps_raw_text() -> None:
    class Ask(Component[int]):
        q: Span

    with pytest.raises(ParseError) as info:
        Ask(q="?").parse_output("no digits here")
    assert info.value.raw == "no digits here"
    assert "int" in str(info.value)


def test_output_schema_is_closed_for_objects() -> None:
    class Ask(Component[Person]):
        q: Span

    schema = Ask.output_schema()
    assert schema is not None
    assert schema["additionalProperties"] is False
    assert Summary.output_schema() is None


def test_standard_components_render() -> None:
    doc = CBlock("DOC", cache=True)
    instr = Instruction(
        "Answer briefly.", grounding=[doc], examples=["e1"], requirements=["be short"]
    )
    assert instr.parts() == (CBlock("Answer briefly."), doc, CBlock("e1"))
    text = instr.render().text
    assert text.startswith("Answer briefly.\n\nContext:\nDOC")
    assert "- be short" in text and "Examples:\n- e1" in text
    assert instr.requirements == [Requirement("be short")]

    history = ChatHistory(messages=[Message("user", "hi"), Message("assistant", "hello")])
    prompt = history.render()
    assert prompt.text == "user: hi\nassistant: hello\n"
    assert [(t.role, t.content) for t in prompt.as_messages()] == [
        ("user", "hi"),
        ("assistant", "hello"),
    ]


class Pair:
    """A component that is not pydantic-based: it implements the protocol."""

    def __init__(self, a: object, b: object, sep: str = " & ") -> None:
        self.a, self.b, self.sep = a, b, sep

    def parts(self) -> list[object]:
        return [self.a, self.b]

    def render(self) -> Prompt:
        return render_span(self.a) + Prompt((own_segment(self, self.sep),)) + render_span(self.b)

    def parse_output(self, text: str) -> str:
        return text.upper()


def test_custom_component_protocol() -> None:
    pair = Pair(CBlock("x"), CBlock("y"))
    assert isinstance(pair, ComponentLike)
    s = Summary(doc=pair)  # type: ignore[arg-type]
    assert s.render().text.startswith("Summarise:\nx & y\n")
    assert span_id(Pair(CBlock("x"), CBlock("y"))) == span_id(pair)
    assert span_id(Pair(CBlock("x"), CBlock("y"), sep="|")) != span_id(pair)


def test_custom_component_that_renders_a_hidden_span_is_refused() -> None:
    class Sneaky(Pair):
        def parts(self) -> list[object]:
            return [self.a]

    with pytest.raises(Exception, match="parts\\(\\) does not return"):
        render_span(Sneaky(CBlock("x"), CBlock("hidden")))


def test_rendering_a_pending_thunk_names_the_path() -> None:
    thunk = ModelOutputThunk(GenerationProducer(CBlock("q")))
    with pytest.raises(ThunkNotDoneError, match=r"Summary\.parts\(\)\[0\]"):
        Summary(doc=thunk).render()


def test_text_item_is_internal() -> None:
    assert Text("x").label is False


def test_not_a_span_in_custom_parts() -> None:
    with pytest.raises(NotASpanError, match=r"Pair\.parts\(\)\[1\]: int is not a span"):
        span_id(Pair(CBlock("x"), 5))


@pytest.mark.filterwarnings("ignore:Field name .* shadows")
def test_field_names_that_hide_the_protocol_are_refused() -> None:
    with pytest.raises(TemplateError, match=r"parts.*hide the component protocol"):

        class Shadow(Component[str]):
            parts: list[Span]  # type: ignore[assignment]


def test_model_copy_with_update_makes_a_new_id_and_render() -> None:
    original = Summary(doc=CBlock("first"))
    assert "first" in render_span(original).text  # id, parts and plan now cached
    first_id = original.id
    changed = original.model_copy(update={"doc": CBlock("second")})
    assert "second" in render_span(changed).text and "first" not in render_span(changed).text
    assert changed.id != first_id and changed.parts() == (CBlock("second"),)
    assert original.model_copy().id == first_id  # a plain copy is the same content


class Briefing(Component[str]):
    """A template with every kind of step: parts, an optional part, a list, parameters."""

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


def test_flat_render_path_equals_the_general_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    from spangraph.nodes import _span

    done: ModelOutputThunk[str] = ModelOutputThunk(GenerationProducer(CBlock("q")))
    done._set_done("answer", "answer")
    spans = [
        Summary(doc=CBlock("a document", cache=True), style="long"),
        Summary(doc=done),
        Message(role="user", content=CBlock("hello")),
        Instruction(description=CBlock("do it"), grounding=[CBlock("g1"), done]),
        Instruction(description=Summary(doc=CBlock("nested"))),  # not flat: the walk
        Briefing(title="t", body=done, items=[CBlock("x"), CBlock(""), done], count=7, tags=["a"]),
        Briefing(title=CBlock(""), body="b", note="n"),  # an empty block renders nothing
        Briefing(title="t", body=Summary(doc="nested")),  # a nested component: the walk
        Spoken(line=done),  # every part a done thunk: the compiled render's first shape
        Spoken(line=CBlock("")),
    ]
    fast = [render_span(s) for s in spans]
    assert _span.FAST_RENDERS[Summary] is not _span.render_flat  # compiled from its template
    assert _span.FAST_RENDERS[Message] is _span.render_flat  # arranges its items in code
    for cls in {type(s) for s in spans}:
        monkeypatch.setitem(_span.FAST_RENDERS, cls, lambda component: None)
    assert fast == [render_span(s) for s in spans]
    assert [seg.role for seg in fast[2]] == ["user"] * len(fast[2])
    assert [seg.role for seg in fast[-2]] == ["assistant", "assistant"]
    assert [p.text for p in fast[-2:]] == ["say answer", "say "]
    assert fast[5].text == "t: answer\nItems:\nx\n\nanswer\n007 - a"
    monkeypatch.undo()  # the walk cached each render plan: the flat path now reads that
    assert [render_span(s) for s in spans] == fast
