"""Errors a user can read and catch: what was wrong, where (the span path), what to do;
raised as early as it can be known; never a bare ``ExceptionGroup`` of one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from spangraph import (
    CBlock,
    Component,
    NodeFailedError,
    Span,
    arun,
    compile,
    generate,
    run,
    task,
)
from spangraph.engines import ScriptedEngine, set_default
from spangraph.engines import _default as default_module
from spangraph.nodes import (
    DigestError,
    ParameterError,
    Prompt,
    SpanError,
    TemplateError,
    render_span,
)


@pytest.fixture
def no_chosen_default() -> Iterator[None]:
    previous = set_default(None)
    yield
    set_default(previous)


def test_a_bad_default_engine_setting_fails_before_the_run(
    monkeypatch: pytest.MonkeyPatch, no_chosen_default: None
) -> None:
    events: list[Any] = []
    for setting in ("llama", "openai:", "openai:localhost:8080", "llamacpp:extra"):
        monkeypatch.setenv("SPANGRAPH_ENGINE", setting)
        thunk = generate(CBlock("q"))
        with pytest.raises(ValueError, match="SPANGRAPH_ENGINE") as caught:
            run(thunk, progress=False, listeners=[events.append])
        assert not isinstance(caught.value, BaseExceptionGroup)
        with pytest.raises(ValueError, match="SPANGRAPH_ENGINE"):
            anyio.run(lambda t=thunk: arun(t, progress=False))
    assert events == []  # refused before the run began: not one event


def test_a_task_only_graph_checks_the_setting_too(
    monkeypatch: pytest.MonkeyPatch, no_chosen_default: None
) -> None:
    monkeypatch.setenv("SPANGRAPH_ENGINE", "nonsense")
    calls: list[str] = []

    @task
    def fan() -> Any:
        calls.append("ran")
        return generate(CBlock("later"))

    with pytest.raises(ValueError, match="SPANGRAPH_ENGINE='nonsense'"):
        run(fan(), progress=False)
    assert calls == []  # the task never ran


def test_an_error_mid_run_is_raised_as_itself_not_in_a_group(
    monkeypatch: pytest.MonkeyPatch, no_chosen_default: None
) -> None:
    # The default engine is made on first use when only a task's dynamic generations
    # need it; if making it fails then, the error comes out as itself.
    def broken(spec: str) -> Any:
        raise ValueError("the default engine cannot be made (for this test)")

    monkeypatch.setattr(default_module, "_make", broken)
    monkeypatch.setattr(default_module, "_engines", {})

    @task
    def fan() -> Any:
        return generate(CBlock("later"))

    with pytest.raises(ValueError, match="cannot be made") as caught:
        run(fan(), progress=False)
    assert type(caught.value) is ValueError


def test_an_unknown_keyword_names_the_entry_point_and_the_nearest_name() -> None:
    thunk = generate(CBlock("q"))
    with pytest.raises(TypeError, match=r"^run\(\) got .* 'retires'; did you mean 'retry'\?"):
        run(thunk, retires=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"^arun\(\) got .* 'max_concurency'; did you mean"):
        anyio.run(lambda: arun(thunk, max_concurency=2))  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"run\(\) got .* 'zzz'; it takes cache, engine"):
        run(thunk, zzz=1)  # type: ignore[call-arg]


class Quote(Component[str]):
    template = "Quote: {text} ({source})"
    text: Span
    source: str


@pytest.mark.parametrize(
    ("make", "where", "what"),
    [
        (lambda: generate(CBlock("bad \ud800 text")), "generate(CBlock).action", "text"),
        (
            lambda: generate(Quote(text=CBlock("x \udc80"), source="s")),
            "generate(Quote).action.parts()[0]",
            "text",
        ),
        (
            lambda: generate(Quote(text="fine", source="from \udcff bytes")),
            "generate(Quote).action",
            "parameter 'source'",
        ),
    ],
)
def test_a_lone_surrogate_is_a_digest_error_with_its_path(make: Any, where: str, what: str) -> None:
    with pytest.raises(DigestError) as caught:
        compile(make())
    assert caught.value.path == where
    assert f"{what} holds a lone surrogate" in str(caught.value)
    assert "errors='replace'" in str(caught.value)
    with pytest.raises(DigestError):
        run(make(), engine=ScriptedEngine("x"), progress=False)


class Sneaky:
    """A custom component whose render() uses a span parts() leaves out."""

    def __init__(self, shown: CBlock, hidden: list[CBlock]) -> None:
        self.shown = shown
        self.notes = hidden

    def parts(self) -> list[Any]:
        return [self.shown]

    def render(self) -> Prompt:
        return Prompt((*render_span(self.shown).segments, *render_span(self.notes[1]).segments))

    def parse_output(self, text: str) -> str:
        return text


def test_render_using_a_span_outside_parts_names_it_by_its_path() -> None:
    action = Sneaky(CBlock("shown"), [CBlock("a"), CBlock("secret note")])
    with pytest.raises(NodeFailedError) as caught:
        run(generate(action), engine=ScriptedEngine("x"), progress=False)
    error = caught.value.__cause__
    assert isinstance(error, SpanError)
    assert "CBlock Sneaky.notes[1]" in str(error)
    assert "parts()" in str(error)
    assert len([w for w in str(error).split() if len(w) == 32]) == 0  # no bare digest


class Outer(Component[str]):
    template = "outer: {inner}"
    inner: Later  # defined below: pydantic completes Outer once Later exists


class Later(Component[str]):
    template = "later {x}"
    x: Span


def test_a_part_annotated_with_a_later_class_is_a_part_after_the_rebuild() -> None:
    Outer.model_rebuild()
    assert Outer._sg_part_fields == ("inner",) and Outer._sg_param_fields == ()
    inner = Later(x="words")
    graph = compile(generate(Outer(inner=inner)))
    assert inner.id in graph  # the part is a node, with its own parts below it
    engine = ScriptedEngine(lambda r: r.text)
    thunk = generate(Outer(inner=Later(x="words")))
    run(thunk, engine=engine, progress=False)
    assert thunk.value == "outer: later words"


def test_literal_braces_in_a_template_get_a_hint() -> None:
    for template in ('Reply like {"a": 1} about {q}', "a } alone {q}", "a { alone {q}"):
        with pytest.raises(TemplateError, match=r"\{\{ for \{, \}\} for \}"):
            type("J", (Component[str],), {"__annotations__": {"q": Span}, "template": template})


def test_a_thunk_given_to_a_plain_field_gets_a_hint_to_declare_it_a_span() -> None:
    class Ask(Component[str]):
        template = "Q: {question}"
        question: str

    with pytest.raises(ParameterError, match=r"Declare the field as a part, 'question: Span'"):
        Ask(question=generate(CBlock("x")))
    with pytest.raises(ParameterError) as caught:
        Ask(question=CBlock("x"))
    assert caught.value.path == "Ask.question"
    assert isinstance(caught.value, TypeError)
