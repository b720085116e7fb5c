"""``generate()``: declare a generation. Nothing runs until the graph is run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, overload

from ..nodes import (
    Component,
    ExecutionState,
    GenerationProducer,
    ModelOutputThunk,
    current_state,
)
from ..nodes._span import as_span

T = TypeVar("T")


@overload
def generate(
    action: Component[T],
    *,
    state: ExecutionState | None = None,
    options: Mapping[str, Any] | None = None,
    sample_index: int = 0,
) -> ModelOutputThunk[T]: ...


@overload
def generate(
    action: Any,
    *,
    state: ExecutionState | None = None,
    options: Mapping[str, Any] | None = None,
    sample_index: int = 0,
) -> ModelOutputThunk[Any]: ...


def generate(
    action: Any,
    *,
    state: ExecutionState | None = None,
    options: Mapping[str, Any] | None = None,
    sample_index: int = 0,
) -> ModelOutputThunk[Any]:
    """Declare a generation of ``action`` and return its (pending) thunk.

    The execution state is ``state`` composed after the states of enclosing
    ``with`` blocks; ``options`` are per-call model options (they win over
    the state's). ``sample_index`` tells repeated samples of the same action
    apart. The thunk can be a part of other components; ``run()`` executes it.
    """
    span = as_span(action, path="generate(action)")
    outer = current_state()
    if outer is not None and state is not None:
        state = outer | state
    elif state is None:
        state = outer
    if sample_index < 0:
        raise ValueError(f"sample_index must be >= 0, got {sample_index}")
    return ModelOutputThunk(GenerationProducer(span, state, dict(options or {}), sample_index))
