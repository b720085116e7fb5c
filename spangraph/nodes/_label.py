"""Node labels a person can read: what drawings, the LogDAG and node spans call a node.

A work node's label is, in order:

1. the label the user gave (``generate(..., label=)``, ``@task(label=)``,
   ``sample(..., label=)``): their own choice, shown as given in every mode;
2. else its producer's structural label (``generate(Answer)``,
   ``task(fetch)``, ``RejectionSampler(Answer)``) followed, **only with
   content capture on**, by a short hint in curly quotes that tells sibling
   nodes apart: ``generate(Answer) “Which version of the…”``.

The hint is the first scalar parameter of the action (a string, number or
bool field of a pydantic component, or of ``params()``), else the first words
of its leading text part that is not a ``CBlock(cache=True)`` (a cached block
is the shared prefix siblings have in common, so it never tells them apart);
for a task, its first scalar argument. It is cut at a word boundary to at
most ``HINT_CHARS`` characters. Parameters and text parts render into the
prompt: they are content, so with capture off (the default) a label never
carries a hint, and nodes of the same kind and class share their label; give
them ``label=`` to tell them apart in every mode.

A block's label is its text's start with capture on, else its length.
"""

from __future__ import annotations

from typing import Any

from ._cblock import CBlock
from ._thunk import ModelOutputThunk

#: A hint keeps at most this many characters (the ``…`` included).
HINT_CHARS = 32
#: Opens a label's hint: ``structural label`` + ``HINT_OPEN`` + hint + ``HINT_CLOSE``.
HINT_OPEN = " “"
HINT_CLOSE = "”"


def display_label(span: Any, *, captured: bool) -> str:
    """The label of ``span``'s node (see the module docstring); ``captured``: content
    capture is on, so the label may carry text of the prompt."""
    if isinstance(span, CBlock):
        if not captured:
            return f"CBlock ({len(span.text)} chars)"
        return repr(shorten(span.text, 28))
    if not isinstance(span, ModelOutputThunk):
        return type(span).__name__
    producer = span.producer
    if producer is None:
        return "ModelOutputThunk"
    given: str | None = getattr(producer, "given_label", None)
    if given:
        return given
    base: str = producer.label
    if not captured:
        return base
    hint_of = getattr(producer, "hint", None)
    hint = hint_of() if hint_of is not None else None
    return f"{base}{HINT_OPEN}{hint}{HINT_CLOSE}" if hint else base


def structural_part(label: str) -> str:
    """``label`` without its hint (what sibling nodes of one kind and class share)."""
    return label.partition(HINT_OPEN)[0]


def action_hint(action: Any) -> str | None:
    """The hint of a generation or sampler of ``action``: its first scalar parameter,
    else the first words of its leading uncached text part."""
    fields = getattr(type(action), "_sg_param_fields", None)
    if fields is not None:
        values = [getattr(action, name, None) for name in fields]
    else:
        params = getattr(action, "params", None)
        found = params() if callable(params) else None
        values = list(found.values()) if isinstance(found, dict) else []
    for value in values:
        hint = value_hint(value)
        if hint:
            return hint
    parts = getattr(action, "parts", None)
    for part in parts() if callable(parts) else ():
        if isinstance(part, CBlock) and not part.cache:
            hint = shorten(part.text, HINT_CHARS)
            if hint:
                return hint
    return None


def value_hint(value: Any) -> str | None:
    """A scalar's hint (a string's first words, a number, a bool); ``None`` for others."""
    if isinstance(value, str):
        return shorten(value, HINT_CHARS) or None
    if isinstance(value, bool | int | float):
        return str(value)
    return None


def shorten(text: str, width: int) -> str:
    """``text`` on one line, cut at a word boundary to at most ``width`` characters."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    cut = flat[: width - 1]
    space = cut.rfind(" ")
    if space >= width // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:") + "…"
