"""The compiled render: the fast path beside the reference render (``_span.render_reference``).

A component class with a template (and no ``_sg_render_items`` of its own)
renders the same way every time: literal text, then a part, then literal
text... ``compile_render`` turns those steps into the source of one Python
function, the way ``dataclasses`` writes ``__init__``: no loop over steps,
no tests of what a step is, each literal a constant, each segment a plain
tuple (``segment_source``) that the prompt turns into a ``Segment`` only if
someone asks for it.

The function handles the usual shape only: parts that are blocks or
finished thunks. For anything else (a nested component, a thunk that is not
done, a subclass of either) it returns ``None``, and ``render_span`` renders
the component with the reference walk, which also says why a component
cannot be rendered. Both give equal prompts:
``tests/nodes/test_render.py::test_compiled_render_equals_reference_render``.
What the fast path saves is in ``docs/design/rendering.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ._cblock import CBlock
from ._prompt import Prompt, segment_source, segment_text
from ._span import STEP_LIST, STEP_NONE, STEP_PART, span_id
from ._thunk import ModelOutputThunk, ThunkState

Render = Callable[[Any], "Prompt | None"]
Steps = Sequence[tuple[str, str | None, int, str]]


def compile_render(qualname: str, steps: Steps, *, own_role: bool) -> Render:
    """The render function of a component class whose template has ``steps``
    (``(literal, field, what, format spec)``, as ``_parse_template`` makes them).
    ``own_role``: the class has its own ``_sg_message_role``."""
    scope: dict[str, Any] = {
        "_Thunk": ModelOutputThunk,
        "_CBlock": CBlock,
        "_DONE": ThunkState.DONE,
        "_alloc": object.__new__,
        "_Prompt": Prompt,
        "_join": "".join,
        "_text": segment_text,
        "span_id": span_id,
    }
    for index, (literal, field, _, spec) in enumerate(steps):
        scope[f"_L{index}"] = literal
        scope[f"_S{index}"] = spec
        if field is not None and not field.isidentifier():  # _parse_template refuses these
            raise ValueError(f"{qualname}: template field {field!r} is not a name")
    fields = [field for _, field, what, _ in steps if field is not None and what != STEP_NONE]
    lines = [
        "def render(c):",
        '    own = c.__pydantic_private__["_id"] or span_id(c)',
        "    role = c._sg_message_role()" if own_role else "    role = None",
    ]
    if fields:
        # One read of the instance's __dict__ serves every field (a pydantic model's
        # attributes are read through its __getattr__ hook).
        lines.append("    fields = c.__dict__")
    if fields and all(what in (STEP_PART, STEP_NONE) for _, _, what, _ in steps):
        lines += _all_done_thunks(steps)
    lines += ["    out = []", "    add = out.append"]
    for index, (literal, field, what, _) in enumerate(steps):
        if literal:
            lines.append(f"    add({_own_text(f'_L{index}')})")
        if field is None or what == STEP_NONE:
            continue
        if what == STEP_PART:
            lines.append(f"    v = fields[{field!r}]")
            lines += _part("    ")
        elif what == STEP_LIST:
            lines += [
                "    first = True",
                f"    for v in fields[{field!r}] or ():",
                "        if first:",
                "            first = False",
                "        else:",
                f"            add({_own_text(repr(chr(10)))})",
                *_part("        "),
            ]
        else:
            lines += [
                f"    text = c.format_param({field!r}, fields[{field!r}], _S{index})",
                "    if text:",
                f"        add({_own_text('text')})",
            ]
    lines += [
        "    raw = tuple(out)",
        *_prompt("    ", "raw", "_join(map(_text, raw))"),
    ]
    exec("\n".join(lines), scope)  # generated from checked template steps, as dataclasses does
    render: Render = scope["render"]
    render.__qualname__ = f"{qualname}._sg_render_fast"
    render.__doc__ = (
        "The prompt from the template's steps, or None (see spangraph.nodes._fastrender)."
    )
    return render


def _all_done_thunks(steps: Steps) -> list[str]:
    """The usual shape of a dataflow step, first: every part a finished thunk, so the
    segments and the text are known in number and made at once, without a list."""
    names = [f"p{index}" for index, (_, field, _, _) in enumerate(steps) if field is not None]
    lines = [
        f"    p{index} = fields[{field!r}]"
        for index, (_, field, _, _) in enumerate(steps)
        if field is not None
    ]
    lines.append(
        "    if " + " and ".join(f"type({n}) is _Thunk and {n}.state is _DONE" for n in names) + ":"
    )
    segments: list[str] = []
    texts: list[str] = []
    for index, (literal, field, _, _) in enumerate(steps):
        if literal:
            segments.append(_own_text(f"_L{index}"))
            texts.append(f"_L{index}")
        if field is not None:
            lines.append(f"        v{index} = p{index}._value")
            segments.append(_thunk_text(f"p{index}", f"v{index}"))
            texts.append(f"v{index}")
    # An f-string joins the pieces into one new string (no intermediate ones).
    text = "f'" + "".join(f"{{{t}}}" for t in texts) + "'"
    return lines + _prompt("        ", f"({', '.join(segments)},)", text)


def _part(indent: str) -> list[str]:
    """The statements that add part ``v``: a finished thunk or a non-empty block becomes
    one segment; ``None`` is left out; anything else hands the component to the
    reference walk (the render returns ``None``)."""
    block = segment_source(text="v.text", span_id="v._id or v.id", cache="v.cache", role="role")
    lines = [
        "t = type(v)",
        "if t is _Thunk:",
        "    if v.state is not _DONE:",
        "        return None",
        f"    add({_thunk_text('v', 'v._value')})",
        "elif t is _CBlock:",
        "    if v.text:",
        f"        add({block})",
        "elif v is not None:",
        "    return None",
    ]
    return [indent + line for line in lines]


def _own_text(text: str) -> str:
    """A segment of the component's own text (``text``: an expression)."""
    return segment_source(text=text, span_id="own", role="role")


def _thunk_text(thunk: str, text: str) -> str:
    """A segment of a finished thunk's text."""
    return segment_source(text=text, span_id=f"{thunk}._id or span_id({thunk})", role="role")


def _prompt(indent: str, raw: str, text: str) -> list[str]:
    """The statements that return a ``Prompt`` of the plain segment tuples ``raw``
    whose text is ``text``, its three slots set without ``Prompt.__init__``."""
    lines = [
        "prompt = _alloc(_Prompt)",
        f"prompt._raw = {raw}",
        "prompt._segments = None",
        f"prompt.text = {text}",
        "return prompt",
    ]
    return [indent + line for line in lines]
