"""Compiled renders: one render function per component class, made from its template.

A component class with a template (and no ``_sg_render_items`` of its own)
renders the same way every time: literal text, then a part, then literal
text... ``compile_render`` turns those steps into the source of one Python
function, the way ``dataclasses`` writes ``__init__``: no loop over steps,
no tests of what a step is, each literal a constant. On the scheduler
benchmark's components (``"{a}+{b}"``) it costs about a third of the
step-walking render it replaces.

The function handles the usual shape only: parts that are blocks or
finished thunks. For anything else (a nested component, a thunk that is not
done, a subclass of either) it returns ``None`` and ``render_span``'s
general walk renders the component, or says why it cannot. Both give equal
prompts (tested).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

from ._cblock import CBlock
from ._prompt import Prompt
from ._span import STEP_LIST, STEP_NONE, STEP_PART, span_id
from ._thunk import ModelOutputThunk, ThunkState

Render = Callable[[Any], "Prompt | None"]

# A part: a finished thunk or a non-empty block becomes one segment; None is left
# out; anything else hands the component to the general walk.
_PART = """\
    t = type(v)
    if t is _Thunk:
        if v.state is not _DONE:
            return None
        add((v._value, v._id or span_id(v), False, role, False))
    elif t is _CBlock:
        if v.text:
            add((v.text, v._id or v.id, v.cache, role, False))
    elif v is not None:
        return None
"""


def compile_render(
    qualname: str,
    steps: Sequence[tuple[str, str | None, int, str]],
    *,
    own_role: bool,
) -> Render:
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
        "_text": itemgetter(0),
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
        # A pydantic model's attributes are read through its __getattr__ hook, a few
        # times the cost of a dict lookup: one read of __dict__ serves every field.
        lines.append("    fields = c.__dict__")
    if fields and all(what in (STEP_PART, STEP_NONE) for _, _, what, _ in steps):
        lines += _all_done_thunks(steps)
    lines += ["    out = []", "    add = out.append"]
    for index, (literal, field, what, _) in enumerate(steps):
        if literal:
            lines.append(f"    add((_L{index}, own, False, role, False))")
        if field is None or what == STEP_NONE:
            continue
        if what == STEP_PART:
            lines.append(f"    v = fields[{field!r}]")
            lines.append(_PART.rstrip("\n"))
        elif what == STEP_LIST:
            lines += [
                "    first = True",
                f"    for v in fields[{field!r}] or ():",
                "        if first:",
                "            first = False",
                "        else:",
                '            add(("\\n", own, False, role, False))',
                _indent(_PART).rstrip("\n"),
            ]
        else:
            lines += [
                f"    text = c.format_param({field!r}, fields[{field!r}], _S{index})",
                "    if text:",
                "        add((text, own, False, role, False))",
            ]
    lines += [
        "    raw = tuple(out)",
        "    prompt = _alloc(_Prompt)",  # a Prompt of plain segment tuples (see Prompt)
        "    prompt._raw = raw",
        "    prompt._segments = None",
        "    prompt.text = _join(map(_text, raw))",
        "    return prompt",
    ]
    exec("\n".join(lines), scope)  # generated from checked template steps, as dataclasses does
    render: Render = scope["render"]
    render.__qualname__ = f"{qualname}._sg_render_fast"
    render.__doc__ = (
        "The prompt from the template's steps, or None (see spangraph.nodes._fastrender)."
    )
    return render


def _all_done_thunks(steps: Sequence[tuple[str, str | None, int, str]]) -> list[str]:
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
            segments.append(f"(_L{index}, own, False, role, False)")
            texts.append(f"_L{index}")
        if field is not None:
            lines.append(f"        v{index} = p{index}._value")
            segments.append(f"(v{index}, p{index}._id or span_id(p{index}), False, role, False)")
            texts.append(f"v{index}")
    lines += [
        "        prompt = _alloc(_Prompt)",
        f"        prompt._raw = ({', '.join(segments)},)",
        "        prompt._segments = None",
        # An f-string joins the pieces into one new string (no intermediate ones).
        "        prompt.text = f'" + "".join(f"{{{t}}}" for t in texts) + "'",
        "        return prompt",
    ]
    return lines


def _indent(block: str) -> str:
    return "".join(f"    {line}\n" for line in block.splitlines())
