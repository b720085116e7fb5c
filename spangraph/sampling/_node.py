"""``sample()``: a sampler as a graph node."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..nodes import ExecutionState, ModelOutputThunk
from ..nodes._internal import action_hint, as_span, current_state
from ._samplers import Sampler

Select = Callable[[Sequence[ModelOutputThunk[Any]]], ModelOutputThunk[Any]]


@dataclass(frozen=True, eq=False)
class SamplerProducer:
    """The producer of a sampler node: an action, a sampler, and how to select."""

    action: Any
    sampler: Sampler
    select: Select | None = None
    state: ExecutionState | None = None
    engine: Any = None
    #: The user's label for the node (``sample(label=)``): presentation only.
    given_label: str | None = None

    @property
    def kind(self) -> str:
        return "sampler"

    @property
    def label(self) -> str:
        return f"{type(self.sampler).__name__}({type(self.action).__name__})"

    def hint(self) -> str | None:
        """What tells this node apart from its siblings (content: see ``nodes._label``)."""
        return action_hint(self.action)

    def inputs(self) -> Sequence[Any]:
        prefix = self.state.prefix_spans() if self.state is not None else ()
        return (*prefix, self.action)

    def map_spans(self, fn: Callable[[Any], Any]) -> SamplerProducer:
        """This producer with the spans it holds (action, state) replaced by ``fn(x)``."""
        return replace(self, action=fn(self.action), state=fn(self.state))

    def params(self) -> str:
        # A sampler holds callables (validators, scorers): it is identified by the
        # object itself, so equal declarations with different samplers stay apart.
        state = self.state.fingerprint() if self.state is not None else ""
        return f"{type(self.sampler).__qualname__}@{id(self.sampler):x}|{state}"


def sample(
    action: Any,
    sampler: Sampler,
    *,
    select: Select | None = None,
    state: ExecutionState | None = None,
    engine: Any = None,
    label: str | None = None,
) -> ModelOutputThunk[Any]:
    """Declare a sampler node. Its thunk is the selected result (``select``, else the
    sampler's own ``select``); ``thunk.facts.attempts`` lists every attempt, each with
    its ``facts.validation``. The run's scheduler executes it. ``label`` names the
    node as ``generate(label=)`` does (default: ``<Sampler>(<class>)``, plus a hint
    with content capture on)."""
    if not isinstance(sampler, Sampler):
        raise TypeError(f"sample() needs a Sampler, got {type(sampler).__name__}")
    outer = current_state()
    if outer is not None and state is not None:
        state = outer | state
    elif state is None:
        state = outer
    if label is not None and not isinstance(label, str):
        raise TypeError(f"sample(label=...) takes a str, got {type(label).__name__}")
    span = as_span(action, path="sample(action)")
    return ModelOutputThunk(
        SamplerProducer(
            span, sampler, select=select, state=state, engine=engine, given_label=label or None
        )
    )
