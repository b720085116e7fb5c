"""Fresh copies of spans: the same program, with thunks of its own.

A thunk is one future: a run that holds it writes its result there. To run a
program while another run holds its thunks (two runs of one compiled graph at
once, say, on different engines), the second run works on a copy in which
every thunk is a new one. Blocks are immutable and shared; components are
copied only where a part changed; a thunk's producer is copied through its
``map_spans`` (the spans it holds: action, state, a task's arguments), and
everything else it holds (engines, options, functions, samplers) is shared.
A thunk already done before the copy keeps its result in the copy, so the
copy does not compute it again. Content ids are unchanged: they are digests
of content, not of objects.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from ._cblock import CBlock
from ._span import MODEL, NOT_SPAN, THUNK, span_type
from ._state import ComposedState
from ._thunk import ModelOutputThunk, ThunkState


def fresh_copies(spans: Sequence[Any]) -> list[Any]:
    """``spans`` with every thunk in them (at any depth) replaced by a fresh one."""
    return _Copier().spans(spans)


class _Copier:
    """One copy: equal objects stay one object (a graph stays a graph, not a tree)."""

    def __init__(self) -> None:
        self._made: dict[int, Any] = {}
        self._keep: list[Any] = []  # keeps originals alive, so their id() stays unique

    def spans(self, spans: Sequence[Any]) -> list[Any]:
        return [self.span(span) for span in spans]

    def span(self, span: Any) -> Any:
        made = self._made.get(id(span))
        if made is not None:
            return made
        kind = span_type(span)
        if isinstance(span, CBlock) or kind == NOT_SPAN:
            made = span
        elif kind == THUNK:
            made = self._thunk(span)
        elif kind == MODEL:
            made = self._component(span)
        else:
            made = self._custom(span)
        self._made[id(span)] = made
        self._keep.append(span)
        return made

    def value(self, value: Any) -> Any:
        """Any value a producer holds: a span, a state holding spans, or as it is."""
        if span_type(value) != NOT_SPAN:
            return self.span(value)
        if isinstance(value, ComposedState):  # states applied in turn (a chat among them)
            states = [self.value(state) for state in value.states]
            if any(new is not old for new, old in zip(states, value.states, strict=True)):
                return ComposedState(states)
        return value

    def _thunk(self, thunk: ModelOutputThunk[Any]) -> ModelOutputThunk[Any]:
        producer = thunk.producer
        if producer is not None:
            map_spans: Callable[[Callable[[Any], Any]], Any] | None = getattr(
                producer, "map_spans", None
            )
            if map_spans is None:
                raise TypeError(
                    f"cannot copy a thunk of {type(producer).__name__}: its producer has no "
                    "map_spans(fn) (the spans it holds, replaced by fn(span))"
                )
            producer = map_spans(self.value)
        fresh: ModelOutputThunk[Any] = ModelOutputThunk(producer)
        if thunk.state is ThunkState.DONE:
            fresh._copy_result(thunk)  # done before: the copy need not compute it again
        return fresh

    def _component(self, component: Any) -> Any:
        update: dict[str, Any] = {}
        for name in component._sg_part_fields:
            value = getattr(component, name)
            if value is None:
                continue
            if name in component._sg_list_fields:
                items = [self.span(item) for item in value]
                if any(new is not old for new, old in zip(items, value, strict=True)):
                    update[name] = type(value)(items)
            else:
                new = self.span(value)
                if new is not value:
                    update[name] = new
        return component.model_copy(update=update) if update else component

    def _custom(self, component: Any) -> Any:
        """A component of the component protocol: a shallow copy whose attributes that
        hold spans (or lists or tuples of spans) hold the copies."""
        attributes = getattr(component, "__dict__", None)
        if attributes is None:
            return component
        update: dict[str, Any] = {}
        for name, value in attributes.items():
            if isinstance(value, list | tuple):
                items = [self.span(item) for item in value]
                if any(new is not old for new, old in zip(items, value, strict=True)):
                    update[name] = type(value)(items)
            elif span_type(value) != NOT_SPAN:
                new = self.span(value)
                if new is not value:
                    update[name] = new
        if not update:
            return component
        made = copy.copy(component)
        made.__dict__.update(update)
        return made
