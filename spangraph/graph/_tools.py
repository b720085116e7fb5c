"""Tools: typed Python functions a model may call, each call a node of the run.

How a tool loop runs
--------------------
``generate(action, tools=[...])`` declares round 0: a generation of a
``ToolStep`` (the action, the tools, the reply format, and the rounds so far)
and a *loop* task whose input is that generation. Nothing here overrides an
engine: a ``ToolStep`` is a component whose output is a ``ToolReply`` (an
answer or tool calls), with a JSON schema (a union of one object per tool,
``{"tool": name, "arguments": {...}}``, and ``{"answer": text}``) that engines
with constrained decoding follow; other engines are parsed as they answer.

When the generation is done, the loop task reads its reply:

- an answer: the loop returns it, parsed by the action (``.parsed``);
- tool calls: one *tool* node per call (kind ``"tool"``: its input is the
  generation, so the LogDAG has an edge generation -> tool), and a *round*
  task over their results, which the loop returns (dynamic nodes of the same
  run). The round task refuses to go on after too many tool errors, else
  declares the follow-up generation, whose ``ToolStep`` holds the earlier
  replies and the tool nodes' thunks as parts (edges tool -> follow-up), and
  its loop task, and returns that.

So the first loop task's thunk ends with the final answer, and its
``tool_calls`` walk the chain of loop and round tasks (``tool_rounds``).

A tool node validates the call's arguments against the tool's parameter
model, looks the call up in the run's memo store (tools with ``cache=True``,
keyed by the tool and its validated arguments), else calls the function. Bad
arguments and a tool that raises are not failures of the node: its result
is a ``ToolOutcome`` with the error, which the next generation reads as the
tool's answer; the round task fails the loop (``ToolArgumentsError``,
``ToolCallError``) once more than ``max_tool_errors`` such errors were fed back.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import to_jsonable_python

from ..cache._internal import run_cache
from ..engines import ToolRequest
from ..engines._internal import TOOL_STEPS
from ..nodes import Component, ModelOutputThunk, ParseError, Span, render_span
from ..nodes._internal import canonical_json, current_state
from ._interrupt import _current
from ._task import TaskProducer

_MEMO_KEY = "spangraph.tool:"


# -- errors ----------------------------------------------------------------------------


class ToolError(Exception):
    """A tool loop cannot go on. ``path`` is the span path of the node that found it
    (the loop or round task), ``tool`` the tool's name when one is concerned."""

    def __init__(self, message: str, *, path: str = "", tool: str = "") -> None:
        self.path = path
        self.tool = tool
        self.reason = message
        super().__init__(f"{path}: {message}" if path else message)


class ToolDefinitionError(ToolError, TypeError):
    """A function cannot be a tool: a parameter or the return value has no type
    hint, it has no docstring (the description the model reads), or a parameter is
    ``*args``/``**kwargs``. Raised when the ``Tool`` is made."""


class UnknownToolError(ToolError):
    """The model called a tool that the generation was not given."""


class ToolArgumentsError(ToolError):
    """A tool call's arguments did not validate against the tool's parameters, more
    times than ``max_tool_errors`` (each earlier time, the model read the errors)."""


class ToolCallError(ToolError):
    """A tool raised, more times than ``max_tool_errors`` (each earlier time, the
    model read the error as the tool's answer)."""


class ToolRoundsError(ToolError):
    """The model still called tools after ``max_tool_rounds`` rounds of tool calls."""


# -- tools -----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Tool:
    """A typed Python function (sync or async) a model may call.

    Made with ``@tool`` or ``Tool.from_function(fn)``: ``name`` is the function's
    name, ``description`` its docstring, ``parameters`` a pydantic model built
    from its type hints (``schema`` is that model's JSON schema). Nothing is
    written twice. ``cache=False`` says its result must not be memoised (a tool
    with side effects); otherwise a call is served from the run's memo store when
    the same tool was called with the same (validated) arguments before.
    ``Tool.from_mcp(session)`` makes the tools of an MCP server (their
    ``parameters`` is ``None``: arguments are checked against ``input_schema``).
    """

    name: str
    description: str
    fn: Callable[..., Any]
    parameters: type[BaseModel] | None
    cache: bool = True
    #: The arguments' JSON schema when there is no ``parameters`` model (an MCP tool).
    input_schema: Mapping[str, Any] | None = None

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        cache: bool = True,
    ) -> Tool:
        """A tool from ``fn``; ``name`` and ``description`` replace the function's
        name and docstring (for a function you do not own). Refused
        (``ToolDefinitionError``) without type hints or a description."""
        tool_name = name or getattr(fn, "__name__", "")
        if not tool_name or not tool_name.isidentifier():
            raise ToolDefinitionError(f"a tool needs a name that is an identifier: {tool_name!r}")
        text = description if description is not None else inspect.getdoc(fn)
        if not text:
            raise ToolDefinitionError(
                f"tool {tool_name!r} has no docstring: it is the description the model reads "
                f"(or pass description=)",
                tool=tool_name,
            )
        return cls(tool_name, text.strip(), fn, _parameters(fn, tool_name), cache)

    @classmethod
    async def from_mcp(cls, session: Any, *, cache: bool = False) -> list[Tool]:
        """The tools an MCP server offers, through an initialised ``mcp.ClientSession``
        (the official ``mcp`` package, ``pip install 'spangraph[mcp]'``): each calls
        ``session.call_tool``. Run them with ``await arun(...)`` inside the session's
        ``async with`` (a session belongs to its event loop). Not memoised unless
        ``cache=True``: a server's tool may have side effects."""
        listed = await session.list_tools()
        return [
            cls(
                item.name,
                (item.description or item.title or item.name).strip(),
                _mcp_call(session, item.name),
                None,
                cache,
                dict(item.input_schema),
            )
            for item in listed.tools
        ]

    @property
    def schema(self) -> dict[str, Any]:
        """The JSON schema of the tool's arguments (an object, closed for a function)."""
        if self.parameters is None:
            return dict(self.input_schema or {"type": "object"})
        return self.parameters.model_json_schema()

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    def __repr__(self) -> str:  # stable: it is part of a loop node's parameters
        return f"Tool({self.name})"


def _parameters(fn: Callable[..., Any], name: str) -> type[BaseModel]:
    try:
        signature = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
    except (TypeError, ValueError, NameError) as exc:
        raise ToolDefinitionError(f"tool {name!r}: cannot read its signature: {exc}") from exc
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolDefinitionError(
                f"tool {name!r}: *{param.name} cannot be described to a model; name each parameter",
                tool=name,
            )
        if param.name not in hints:
            raise ToolDefinitionError(
                f"tool {name!r}: parameter {param.name!r} has no type hint "
                f"(the model is told the argument types from them)",
                tool=name,
            )
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (hints[param.name], default)
    if "return" not in hints:
        raise ToolDefinitionError(
            f"tool {name!r} has no return type hint (its result is shown to the model)",
            tool=name,
        )
    model: type[BaseModel] = create_model(
        f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model


def tool(fn: Callable[..., Any] | None = None, *, cache: bool = True) -> Any:
    """Make ``fn`` a ``Tool`` (``@tool`` or ``@tool(cache=False)``); see ``Tool``."""
    if fn is None:
        return lambda f: Tool.from_function(f, cache=cache)
    return Tool.from_function(fn, cache=cache)


# -- replies ---------------------------------------------------------------------------


class ToolCall(BaseModel):
    """One call a model asked for: the tool's ``name``, its ``arguments`` as the
    model wrote them, and the call's ``id``."""

    model_config = ConfigDict(frozen=True)

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    id: str = ""


class ToolReply(BaseModel):
    """What a generation of a ``ToolStep`` said: an ``answer`` or tool ``calls``."""

    answer: Any = None
    calls: list[ToolCall] = Field(default_factory=list)


class ToolOutcome(BaseModel):
    """A tool node's result: the call, and the tool's ``value`` or its ``error``
    (``error_type``: ``"arguments"`` when the arguments did not validate, else the
    exception's class). ``cached``: served from the memo store."""

    name: str
    call_id: str
    arguments: dict[str, Any]
    value: Any = None
    error: str | None = None
    error_type: str | None = None
    #: Not in the outcome's JSON, which is what the next prompt reads: a result from
    #: the memo must give the same prompt (and so the same memo key) as a fresh one.
    cached: bool = Field(default=False, exclude=True)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class ToolRound:
    """One round of a tool loop: the calls the model made, with their outcomes."""

    index: int
    calls: list[ToolOutcome]


class ToolResult(Component[str]):
    """A tool's answer, as the next generation reads it (the tool node is its part)."""

    template = "Tool result ({name}, call {call_id}):\n{outcome}\n"
    name: str
    call_id: str
    outcome: Span


class ToolStep(Component[ToolReply]):
    """One generation of a tool loop: the action, the tools it may call, how to
    reply, and the rounds so far (each model reply and its tool results, as parts)."""

    template = "{action}\n\n{instructions}\n{history}"
    action: Span
    history: list[Span] = Field(default_factory=list)
    instructions: str
    tools_schema: list[dict[str, Any]]
    choice: str
    round: int = 0

    def output_schema(self) -> dict[str, Any] | None:  # type: ignore[override]
        return _reply_schema(self.tools_schema, self.choice)

    def parse_output(self, text: str) -> ToolReply:
        return _parse_reply(text, round_index=self.round, choice=self.choice)

    def tool_request(self) -> ToolRequest:
        """This round for an engine with a tools API (``engines.ToolRequest``): the
        tools as function definitions, the choice, the action's own prompt (without
        the reply instructions), and each earlier round as an ``assistant`` message
        with ``tool_calls`` and one ``tool`` message per call, whose content is the
        tool's result as the JSON-schema prompt shows it."""
        history: list[dict[str, Any]] = []
        for part in self.history:
            if isinstance(part, ToolResult):
                outcome = part.outcome
                content = outcome.value if isinstance(outcome, ModelOutputThunk) else str(outcome)
                history.append({"role": "tool", "tool_call_id": part.call_id, "content": content})
            elif isinstance(part, ModelOutputThunk) and isinstance(part.parsed, ToolReply):
                reply: ToolReply = part.parsed
                history.append(
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": call.id,
                                "type": "function",
                                "function": {
                                    "name": call.name,
                                    "arguments": json.dumps(call.arguments),
                                },
                            }
                            for call in reply.calls
                        ],
                    }
                )
        tools = tuple(
            {
                "type": "function",
                "function": {
                    "name": entry["name"],
                    "description": entry.get("description", ""),
                    "parameters": entry["parameters"],
                },
            }
            for entry in self.tools_schema
        )
        return ToolRequest(tools, self.choice, render_span(self.action), tuple(history))


TOOL_STEPS[ToolStep] = ToolStep.tool_request


def _instructions(tools: Sequence[Tool], choice: str) -> str:
    if choice == "none":  # the last round
        return 'No more tool calls. Answer with JSON only: {"answer": TEXT}.'
    lines = ["You can call these tools:"]
    for item in tools:
        params = json.dumps(item.schema.get("properties", {}), separators=(",", ":"))
        lines.append(f"- {item.name}: {item.description} Arguments: {params}")
    call = '{"tool": NAME, "arguments": {...}}'
    if choice == "auto":
        lines.append(f'Reply with JSON only: {call} to call a tool, or {{"answer": TEXT}}.')
    elif choice == "required":
        lines.append(f"Reply with JSON only: {call}.")
    else:
        lines.append(f'Reply with JSON only: {{"tool": "{choice}", "arguments": {{...}}}}.')
    return "\n".join(lines)


def _reply_schema(tools_schema: list[dict[str, Any]], choice: str) -> dict[str, Any]:
    """The union of one object per tool (``{"tool": name, "arguments": ...}``) and,
    with ``choice="auto"``, ``{"answer": text}``; each tool's ``$defs`` hoisted."""
    defs: dict[str, Any] = {}
    options: list[dict[str, Any]] = []
    for entry in tools_schema:
        if choice == "none" or (choice not in ("auto", "required") and entry["name"] != choice):
            continue
        arguments = dict(entry["parameters"])
        defs.update(arguments.pop("$defs", {}))
        options.append(
            {
                "type": "object",
                "properties": {"tool": {"const": entry["name"]}, "arguments": arguments},
                "required": ["tool", "arguments"],
                "additionalProperties": False,
            }
        )
    if choice in ("auto", "none"):
        options.append(
            {
                "type": "object",
                "properties": {"answer": {"type": "string"}},
                "required": ["answer"],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = options[0] if len(options) == 1 else {"anyOf": options}
    if defs:
        schema = {**schema, "$defs": defs}
    return schema


def _parse_reply(text: str, *, round_index: int, choice: str) -> ToolReply:
    """A reply: ``{"tool": ..., "arguments": ...}``, ``{"tool_calls": [...]}``,
    ``{"answer": ...}``, or (with ``choice="auto"``) text that is not such JSON, as
    the answer."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    calls: list[dict[str, Any]] = []
    if isinstance(value, dict):
        if "tool" in value:
            calls = [{"name": value["tool"], "arguments": value.get("arguments") or {}}]
        elif isinstance(value.get("tool_calls"), list):
            calls = list(value["tool_calls"])
        elif "answer" in value and choice in ("auto", "none"):
            return ToolReply(answer=value["answer"])
    if not calls:
        if choice in ("auto", "none"):
            return ToolReply(answer=text)
        raise ParseError(
            f"tool_choice={choice!r} asks for a tool call; the model wrote no call",
            raw=text,
            expected="a tool call",
        )
    made = []
    for index, call in enumerate(calls):
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise ParseError("a tool call without a tool name", raw=text, expected="a tool call")
        arguments = call.get("arguments")
        if isinstance(arguments, str):  # the OpenAI wire format: arguments as JSON text
            try:
                arguments = json.loads(arguments)
            except ValueError:
                arguments = {"$unparsed": arguments}
        if not isinstance(arguments, dict):
            arguments = {"$unparsed": arguments}
        call_id = call.get("id") or f"call_{round_index}_{index}"
        made.append(ToolCall(name=call["name"], arguments=arguments, id=str(call_id)))
    return ToolReply(calls=made)


# -- the loop --------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopConfig:
    """A tool loop's settings (the same for each of its rounds)."""

    tools: tuple[Tool, ...]
    choice: str
    max_rounds: int
    max_errors: int
    options: Mapping[str, Any] | None
    engine: Any
    cache: Any
    label: str | None

    def tool(self, name: str) -> Tool | None:
        for item in self.tools:
            if item.name == name:
                return item
        return None

    def __repr__(self) -> str:
        return canonical_json(
            {
                "tools": [t.name for t in self.tools],
                "choice": self.choice,
                "max_rounds": self.max_rounds,
                "max_errors": self.max_errors,
                "options": dict(self.options or {}),
                # (not its repr, which may hold an address: ids are stable across
                # processes, and an interrupt's id is made from them)
                "engine": None
                if self.engine is None
                else f"{type(self.engine).__name__}:{getattr(self.engine, 'model', '')}",
            }
        )


@dataclass(frozen=True, slots=True, eq=False)
class LoopProducer(TaskProducer):
    """A tool loop's task node: it reads a generation's reply (``args[0]``, its
    thunk) and ends the loop or starts a round of tool calls."""

    @property
    def label(self) -> str:
        return f"tool_loop(round {_step_of(self.args[0]).round})"

    @property
    def name(self) -> str:
        return "tool_loop"

    def unstable_arguments(self) -> str | None:
        return None  # its id is made of canonical JSON (LoopConfig's repr is)

    def hint(self) -> str | None:
        return None

    def call(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        # The reply's thunk (not only its value): a part of the next round's prompt.
        reply = self.args[0]
        return TaskProducer.call(self, [reply, args[0], _step_of(reply), *args[1:]], kwargs)

    def tool_rounds(self, thunk: ModelOutputThunk[Any]) -> list[ToolRound]:
        return tool_rounds(thunk)


@dataclass(frozen=True, slots=True, eq=False)
class RoundProducer(TaskProducer):
    """The task after a round's tool nodes: checks the errors fed back, then
    declares the next generation and its loop."""

    @property
    def label(self) -> str:
        return f"tool_round({_step_of(self.args[0]).round})"

    @property
    def name(self) -> str:
        return "tool_round"

    def unstable_arguments(self) -> str | None:
        return None  # its id is made of canonical JSON (LoopConfig's repr is)

    def hint(self) -> str | None:
        return None

    def call(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        # The reply's thunk and the tool nodes' thunks: parts of the next round's prompt.
        reply = self.args[0]
        return TaskProducer.call(self, [reply, self.args[1], _step_of(reply), *args[2:]], kwargs)


@dataclass(frozen=True, slots=True, eq=False)
class ToolProducer(TaskProducer):
    """A tool call's node (kind ``"tool"``): ``args[0]`` is the generation that asked
    for it; the call is its reply's ``index``-th."""

    tool: Tool | None = None
    index: int = 0
    call_id: str = ""

    @property
    def kind(self) -> str:
        return "tool"

    @property
    def label(self) -> str:
        return f"tool({self.tool_name})"

    @property
    def name(self) -> str:
        return self.tool_name

    @property
    def tool_name(self) -> str:
        return self.tool.name if self.tool is not None else "?"

    def unstable_arguments(self) -> str | None:
        return None  # its id is made of canonical JSON (LoopConfig's repr is)

    def hint(self) -> str | None:
        return None

    @property
    def is_async(self) -> bool:
        return self.tool is not None and self.tool.is_async

    def params(self) -> str:
        return canonical_json(
            {"tool": self.tool_name, "index": self.index, "call_id": self.call_id}
        )

    def call(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        """Run the call: its arguments validated, the memo looked up, the function
        called (an awaitable for an async tool); a ``ToolOutcome`` either way."""
        assert self.tool is not None
        reply: ToolReply = args[0]
        call = reply.calls[self.index]
        if self.tool.is_async:
            return _call_async(self.tool, call)
        return _call_sync(self.tool, call)


def declare_loop(
    action: Any,
    *,
    tools: Sequence[Tool],
    tool_choice: str,
    max_tool_rounds: int,
    max_tool_errors: int,
    state: Any,
    options: Mapping[str, Any] | None,
    engine: Any,
    cache: Any,
    label: str | None,
) -> ModelOutputThunk[Any] | None:
    """Declare round 0 of a tool loop (see the module's docstring) and return its loop
    thunk; ``None`` with ``tool_choice="none"`` (the tools checked, not offered)."""
    from ._declare import generate

    checked = _checked_tools(tools, tool_choice)
    if tool_choice == "none":
        return None
    if isinstance(max_tool_rounds, bool) or not isinstance(max_tool_rounds, int):
        raise TypeError(f"max_tool_rounds takes an int, got {max_tool_rounds!r}")
    if max_tool_rounds < 1:
        raise ValueError(f"max_tool_rounds must be >= 1, got {max_tool_rounds}")
    if max_tool_errors < 0:
        raise ValueError(f"max_tool_errors must be >= 0, got {max_tool_errors}")
    config = LoopConfig(
        tools=checked,
        choice=tool_choice,
        max_rounds=max_tool_rounds,
        max_errors=max_tool_errors,
        options=options,
        engine=engine,
        cache=cache,
        label=label,
    )
    step = ToolStep(
        action=action,
        history=[],
        instructions=_instructions(checked, tool_choice),
        tools_schema=[
            {"name": t.name, "description": t.description, "parameters": t.schema} for t in checked
        ],
        choice=tool_choice,
        round=0,
    )
    reply = generate(
        step,
        state=state,
        options=options,
        engine=engine,
        cache=cache,
        label=_round_label(label, action, 0),
    )
    # The loop's rounds are declared under the generation's whole state (the
    # enclosing ``with`` blocks' and ``state``), as round 0 was.
    return _loop_thunk(reply, config, getattr(reply.producer, "state", None))


def _round_label(label: str | None, action: Any, round_index: int) -> str:
    """A round's generation's label: the user's (or the action's class), and the round
    (structural: never content)."""
    return f"{label or f'generate({type(action).__name__})'} round {round_index}"


def _checked_tools(tools: Sequence[Tool], choice: str) -> tuple[Tool, ...]:
    if isinstance(tools, Tool) or not isinstance(tools, Sequence):
        raise TypeError("generate(tools=...) takes a list of Tool (made with @tool)")
    for item in tools:
        if not isinstance(item, Tool):
            raise TypeError(
                f"generate(tools=...) takes Tool objects (made with @tool or "
                f"Tool.from_function), got {type(item).__name__}"
            )
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise ValueError(f"generate(tools=...): two tools share a name: {names}")
    if not isinstance(choice, str) or (
        choice not in ("auto", "required", "none") and choice not in names
    ):
        raise ValueError(
            f"tool_choice must be 'auto', 'required', 'none' or a tool's name "
            f"({', '.join(names)}), got {choice!r}"
        )
    return tuple(tools)


def _loop_thunk(
    reply: ModelOutputThunk[Any], config: LoopConfig, state: Any
) -> ModelOutputThunk[Any]:
    # Its inputs: the reply alone (its step, all the rounds so far, is the reply's
    # action: as an input too, every earlier round would be drawn into each loop node).
    return ModelOutputThunk(
        LoopProducer(_loop_body, (reply, config), {}, state=state, given_label=None)
    )


def _path() -> str:
    call = _current.get()
    return call.path() if call is not None else ""


def _loop_body(
    reply_thunk: ModelOutputThunk[Any], reply: ToolReply, step: ToolStep, config: LoopConfig
) -> Any:
    """A loop task: the answer, parsed by the action; or a round of tool nodes."""
    if not reply.calls:
        answer = reply.answer
        text = answer if isinstance(answer, str) else json.dumps(answer)
        parse = getattr(step.action, "parse_output", None)
        return parse(text) if callable(parse) else text
    if step.round >= config.max_rounds:
        raise ToolRoundsError(
            f"the model still called tools ({', '.join(c.name for c in reply.calls)}) after "
            f"max_tool_rounds={config.max_rounds} rounds; raise the limit, or ask for an "
            f"answer more plainly",
            path=_path(),
        )
    nodes: list[ModelOutputThunk[ToolOutcome]] = []
    for index, call in enumerate(reply.calls):
        chosen = config.tool(call.name)
        if chosen is None:
            raise UnknownToolError(
                f"the model called tool {call.name!r}, which this generation was not given "
                f"(its tools: {', '.join(t.name for t in config.tools)})",
                path=_path(),
                tool=call.name,
            )
        nodes.append(
            ModelOutputThunk(
                ToolProducer(
                    chosen.fn,
                    (reply_thunk,),
                    {},
                    tool=chosen,
                    index=index,
                    call_id=call.id,
                )
            )
        )
    return ModelOutputThunk(
        RoundProducer(
            _round_body,
            (reply_thunk, nodes, config),
            {},
            state=current_state(),
        )
    )


def _round_body(
    reply_thunk: ModelOutputThunk[Any],
    tool_thunks: list[ModelOutputThunk[ToolOutcome]],
    step: ToolStep,
    config: LoopConfig,
) -> Any:
    """A round task: the errors fed back so far within the limit, the next generation
    (its prompt holds this round's reply and tool results) and its loop task."""
    outcomes: list[ToolOutcome] = [t.parsed for t in tool_thunks]
    errors = [o for o in _outcomes_of(step) + outcomes if not o.ok]
    if len(errors) > config.max_errors:
        last = errors[-1]
        kind = ToolArgumentsError if last.error_type == "arguments" else ToolCallError
        raise kind(
            f"tool {last.name!r} (call {last.call_id}): {last.error}; {len(errors)} tool "
            f"errors were more than max_tool_errors={config.max_errors}",
            path=_path(),
            tool=last.name,
        )
    from ._declare import generate

    history = [
        *step.history,
        reply_thunk,
        *(
            ToolResult(name=o.name, call_id=o.call_id, outcome=thunk)
            for o, thunk in zip(outcomes, tool_thunks, strict=True)
        ),
    ]
    # ``tool_choice`` ("required", a name) holds for the first round: after it the
    # model may answer (forced every round, a loop could never end). The last round
    # is offered no tools: an engine that follows the schema answers there.
    choice = "auto" if step.round + 1 < config.max_rounds else "none"
    next_step = step.model_copy(
        update={
            "history": history,
            "round": step.round + 1,
            "choice": choice,
            "instructions": _instructions(config.tools, choice),
        }
    )
    next_reply = generate(
        next_step,
        options=config.options,
        engine=config.engine,
        cache=config.cache,
        label=_round_label(config.label, step.action, next_step.round),
    )
    return _loop_thunk(next_reply, config, current_state())


def _step_of(reply: ModelOutputThunk[Any]) -> ToolStep:
    """The ``ToolStep`` a round's generation generated (its action)."""
    step = getattr(reply.producer, "action", None)
    assert isinstance(step, ToolStep)
    return step


def _outcomes_of(step: ToolStep) -> list[ToolOutcome]:
    return [
        part.outcome.parsed
        for part in step.history
        if isinstance(part, ToolResult) and isinstance(part.outcome, ModelOutputThunk)
    ]


class MCPToolError(RuntimeError):
    """An MCP server said its tool failed (``isError``); fed back like any tool error."""


def _mcp_call(session: Any, name: str) -> Callable[..., Any]:
    async def call(**arguments: Any) -> Any:
        result = await session.call_tool(name, arguments)
        text = "\n".join(
            str(getattr(part, "text", part)) for part in getattr(result, "content", None) or ()
        )
        if getattr(result, "is_error", False):
            raise MCPToolError(text or f"tool {name} failed")
        structured = getattr(result, "structured_content", None)
        return structured if structured is not None else text

    call.__qualname__ = f"mcp.{name}"
    return call


def _validated(chosen: Tool, call: ToolCall) -> Mapping[str, Any] | ToolOutcome:
    """The call's arguments, checked (``parameters``, else ``input_schema``), or the
    outcome that reports why they do not validate."""
    if chosen.parameters is None:
        try:
            jsonschema.validate(call.arguments, chosen.schema)
        except jsonschema.ValidationError as exc:
            return ToolOutcome(
                name=chosen.name,
                call_id=call.id,
                arguments=call.arguments,
                error=f"the arguments do not validate: {exc.message}",
                error_type="arguments",
            )
        return call.arguments
    try:
        return dict(chosen.parameters.model_validate(call.arguments))
    except ValidationError as exc:
        return ToolOutcome(
            name=chosen.name,
            call_id=call.id,
            arguments=call.arguments,
            error=_validation_text(exc),
            error_type="arguments",
        )


def _validation_text(exc: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}" for e in exc.errors()
    ]
    return "the arguments do not validate: " + "; ".join(problems)


def _memo_key(chosen: Tool, arguments: Mapping[str, Any]) -> str:
    fn = chosen.fn
    where = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', chosen.name)}"
    text = canonical_json(
        {"tool": chosen.name, "fn": where, "arguments": to_jsonable_python(arguments)}
    )
    return _MEMO_KEY + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _memo_get(chosen: Tool, arguments: Mapping[str, Any]) -> tuple[bool, Any]:
    store = run_cache()[0]
    if store is None or not chosen.cache:
        return False, None
    try:
        entry = store.get(_memo_key(chosen, arguments))
    except Exception:
        return False, None
    if entry is None or "value" not in entry:
        return False, None
    return True, entry["value"]


def _memo_put(chosen: Tool, arguments: Mapping[str, Any], value: Any) -> None:
    store = run_cache()[0]
    if store is None or not chosen.cache:
        return
    try:
        store.put(_memo_key(chosen, arguments), {"value": to_jsonable_python(value)})
    except Exception:
        return  # a value JSON cannot hold, or a store that cannot write: not memoised


def _outcome(chosen: Tool, call: ToolCall, value: Any, *, cached: bool = False) -> ToolOutcome:
    return ToolOutcome(
        name=chosen.name,
        call_id=call.id,
        arguments=call.arguments,
        value=to_jsonable_python(value, fallback=str),
        cached=cached,
    )


def _raised(chosen: Tool, call: ToolCall, exc: Exception) -> ToolOutcome:
    return ToolOutcome(
        name=chosen.name,
        call_id=call.id,
        arguments=call.arguments,
        error=f"{type(exc).__name__}: {exc}",
        error_type=type(exc).__name__,
    )


def _before_call(chosen: Tool, call: ToolCall) -> ToolOutcome | Mapping[str, Any]:
    """What a call comes to before the function runs: an outcome (its arguments do not
    validate, or the memo has its result), else the validated arguments."""
    arguments = _validated(chosen, call)
    if isinstance(arguments, ToolOutcome):
        return arguments
    hit, value = _memo_get(chosen, arguments)
    if hit:
        return _outcome(chosen, call, value, cached=True)
    return arguments


def _call_sync(chosen: Tool, call: ToolCall) -> ToolOutcome:
    arguments = _before_call(chosen, call)
    if isinstance(arguments, ToolOutcome):
        return arguments
    try:
        value = chosen.fn(**dict(arguments))
    except Exception as exc:
        return _raised(chosen, call, exc)
    _memo_put(chosen, arguments, value)
    return _outcome(chosen, call, value)


async def _call_async(chosen: Tool, call: ToolCall) -> ToolOutcome:
    """``_call_sync`` for an async function: the same steps, its call awaited."""
    arguments = _before_call(chosen, call)
    if isinstance(arguments, ToolOutcome):
        return arguments
    try:
        value = await chosen.fn(**dict(arguments))
    except Exception as exc:
        return _raised(chosen, call, exc)
    _memo_put(chosen, arguments, value)
    return _outcome(chosen, call, value)


# -- the rounds, read back -------------------------------------------------------------


def tool_rounds(thunk: ModelOutputThunk[Any]) -> list[ToolRound]:
    """The rounds of tool calls of the loop whose first task's thunk is ``thunk``, as
    far as the run got: a chain of loop and round tasks (each's ``facts.result`` is
    the next)."""
    rounds: list[ToolRound] = []
    current: Any = thunk
    while isinstance(current, ModelOutputThunk) and isinstance(current.producer, LoopProducer):
        facts = current._facts
        following = facts.result if facts is not None else None
        if not isinstance(following, ModelOutputThunk) or not isinstance(
            following.producer, RoundProducer
        ):
            break
        tool_thunks = following.producer.args[1]
        outcomes = [t.parsed for t in tool_thunks if t.done]
        rounds.append(ToolRound(index=len(rounds), calls=outcomes))
        facts = following._facts
        current = facts.result if facts is not None else None
    return rounds
