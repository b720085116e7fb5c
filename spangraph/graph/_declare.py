"""``generate()``: declare a generation. Nothing runs until the graph is run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar, overload

from ..cache import CachePolicy
from ..engines import InferenceEngine
from ..engines._internal import check_options
from ..nodes import ChatHistory, Component, ExecutionState, Message, ModelOutputThunk
from ..nodes._internal import NO_OPTIONS, GenerationProducer, as_span, current_state
from ._tools import Tool, declare_loop

T = TypeVar("T")


@overload
def generate(
    action: Component[T],
    *,
    state: ExecutionState | None = None,
    options: Mapping[str, Any] | None = None,
    sample_index: int = 0,
    engine: InferenceEngine | None = None,
    cache: CachePolicy | None = None,
    label: str | None = None,
    tools: Sequence[Tool] | None = None,
    tool_choice: str = "auto",
    max_tool_rounds: int = 5,
    max_tool_errors: int = 2,
) -> ModelOutputThunk[T]: ...


@overload
def generate(
    action: Any,
    *,
    state: ExecutionState | None = None,
    options: Mapping[str, Any] | None = None,
    sample_index: int = 0,
    engine: InferenceEngine | None = None,
    cache: CachePolicy | None = None,
    label: str | None = None,
    tools: Sequence[Tool] | None = None,
    tool_choice: str = "auto",
    max_tool_rounds: int = 5,
    max_tool_errors: int = 2,
) -> ModelOutputThunk[Any]: ...


def generate(
    action: Any,
    *,
    state: ExecutionState | None = None,
    options: Mapping[str, Any] | None = None,
    sample_index: int = 0,
    engine: InferenceEngine | None = None,
    cache: CachePolicy | None = None,
    label: str | None = None,
    tools: Sequence[Tool] | None = None,
    tool_choice: str = "auto",
    max_tool_rounds: int = 5,
    max_tool_errors: int = 2,
) -> ModelOutputThunk[Any]:
    """Declare a generation of ``action`` and return its (pending) thunk.

    The execution state is ``state`` composed after the states of enclosing
    ``with`` blocks; ``options`` are per-call model options (they win over
    the state's). ``sample_index`` tells repeated samples of the same action
    apart. ``engine`` pins the generation to an engine (default: the run's);
    ``cache`` is this generation's ``CachePolicy`` (default: the state's, then the run's).
    ``label`` names the node in drawings, the LogDAG and its span
    (``spangraph.node.label``), shown as given whatever the capture mode; without
    it the label is ``generate(<class>)``, plus, with content capture on, a short
    hint from the action's parameters or leading text (never with capture off: it
    is prompt text). Equal declarations share one node, with the label of the first
    one ``compile()`` meets.
    The thunk can be a part of other components; ``run()`` executes it.
    Options are checked here, so a typo fails where it is written.

    ``tools`` (``Tool`` objects, made with ``@tool``) lets the model call them:
    each call is a node of the run (kind ``"tool"``) between the generation that
    asked for it and the follow-up generation that reads its result, until the
    model answers. ``tool_choice``: ``"auto"`` (answer or call), ``"required"``
    (call a tool), ``"none"`` (the tools are not offered: a plain generation) or a
    tool's name; ``"required"`` and a name hold for the first round, the
    follow-ups are ``"auto"``, and the last round (``max_tool_rounds``) offers no
    tools, only an answer. ``max_tool_rounds`` bounds the rounds of calls
    (``ToolRoundsError`` after), ``max_tool_errors`` the tool errors (bad arguments,
    a tool that raised) fed back to the model before the loop fails. The thunk
    returned is then the loop's: ``.parsed`` is the final answer (parsed by the
    action), ``.tool_calls`` the rounds (see docs/howto/tools.md).
    """
    span = as_span(action, path="generate(action)")
    if tools is not None:
        loop = declare_loop(
            span,
            tools=tools,
            tool_choice=tool_choice,
            max_tool_rounds=max_tool_rounds,
            max_tool_errors=max_tool_errors,
            state=state,
            options=options,
            engine=engine,
            cache=cache,
            label=label,
        )
        if loop is not None:
            return loop
    outer = current_state()
    if outer is not None and state is not None:
        state = outer | state
    elif state is None:
        state = outer
    if sample_index < 0:
        raise ValueError(f"sample_index must be >= 0, got {sample_index}")
    checked = check_options(options, where="generate()") if options else NO_OPTIONS
    if cache is not None and not isinstance(cache, CachePolicy):
        raise TypeError(f"generate(cache=...) takes a CachePolicy, got {type(cache).__name__}")
    if label is not None and not isinstance(label, str):
        raise TypeError(f"generate(label=...) takes a str, got {type(label).__name__}")
    return ModelOutputThunk(
        GenerationProducer(
            span,
            state=state,
            options=checked,
            sample_index=sample_index,
            engine=engine,
            cache=cache,
            given_label=label or None,
        )
    )


def ask(
    history: ChatHistory,
    content: Any,
    *,
    options: Mapping[str, Any] | None = None,
    engine: InferenceEngine | None = None,
    cache: CachePolicy | None = None,
) -> tuple[ModelOutputThunk[str], ChatHistory]:
    """Declare the assistant's reply to the user's ``content`` after ``history``, and
    return it with the history that now holds both messages.

    ``reply, history = ask(history, "Who wrote Hamlet?")`` is
    ``generate(Message(role="user", content=...), state=history)`` plus
    ``history.append("user", ...).append("assistant", reply)``: the reply thunk is a
    part of the new history, so the next ``ask`` depends on it and one ``run()`` runs
    the turns in order. Each role is rendered once: as ``user: ...`` and
    ``assistant:`` labels on a completion model, through the model's chat template
    on a model that has one. ``content`` is text or any span (a ``CBlock`` with
    ``cache=True`` keeps its KV state, and so that of every message before it).
    """
    if not isinstance(history, ChatHistory):
        raise TypeError(f"ask() takes a ChatHistory first, not {type(history).__name__}")
    question = Message(role="user", content=as_span(content, path="ask(content)"))
    reply: ModelOutputThunk[str] = generate(
        question, state=history, options=options, engine=engine, cache=cache
    )
    return reply, ChatHistory(
        messages=[*history.messages, question, Message(role="assistant", content=reply)]
    )
