"""``OpenAIEngine``: any OpenAI-compatible server, through the official ``openai`` client.

Works with OpenAI itself and with vLLM, Ollama and llama.cpp's server.
Chat mode sends the prompt as messages (``/chat/completions``); completion
mode sends it as text (``/completions``). Structured output goes as
``response_format`` (json_schema) in chat mode and as the ``json_schema``
extension in completion mode (llama.cpp, vLLM). A tool loop's rounds go
through the tools API in chat mode (``tools``, ``tool_choice``, the calls read
from ``message.tool_calls``, earlier rounds sent as ``assistant`` messages with
``tool_calls`` and ``tool`` messages): ``tool_mode="native"``, the default;
``tool_mode="schema"`` asks for the reply as JSON of the loop's reply schema
instead, for a server without a tools API. The API key is kept out of
every repr, log, record and error message.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from ..nodes import Timings, Usage
from ._base import InferenceEngine
from ._errors import (
    ContextLengthError,
    EngineError,
    EngineRequestError,
    EngineResponseError,
    EngineUnavailable,
    TransientEngineError,
)
from ._options import EXTRA_PREFIX
from ._schema import llguidance_grammar
from ._secret import Secret
from ._types import Capabilities, Completion, Request, tool_reply_text

_WRAP_KEY = "value"


class OpenAIEngine(InferenceEngine):
    """An OpenAI-compatible HTTP server. In chat mode a tool loop's rounds use its
    tools API (``tool_mode="native"``), or its JSON-schema output (``"schema"``)."""

    kind = "openai"
    provider = "openai"
    wire_names: ClassVar[Mapping[str, str]] = {
        "temperature": "temperature",
        "max_tokens": "max_tokens",
        "top_p": "top_p",
        "seed": "seed",
        "stop": "stop",
    }

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        model: str = "default",
        *,
        mode: Literal["chat", "completion"] = "chat",
        timeout: float = 120.0,
        max_concurrency: int = 8,
        defaults: Mapping[str, Any] | None = None,
        json_mode: Literal["schema", "llguidance"] = "schema",
        tool_mode: Literal["native", "schema"] = "native",
    ) -> None:
        super().__init__(defaults=defaults)
        if importlib.util.find_spec("openai") is None:  # pragma: no cover - install-dependent
            raise ImportError(
                "OpenAIEngine needs the openai package: pip install 'spangraph[openai]'"
            )
        if mode not in ("chat", "completion"):
            raise ValueError(f"mode must be 'chat' or 'completion', got {mode!r}")
        if json_mode not in ("schema", "llguidance"):
            raise ValueError(f"json_mode must be 'schema' or 'llguidance', got {json_mode!r}")
        if tool_mode not in ("native", "schema"):
            raise ValueError(f"tool_mode must be 'native' or 'schema', got {tool_mode!r}")
        self.base_url = base_url.rstrip("/")
        self._model = model
        self.max_concurrency = max_concurrency
        self.capabilities = Capabilities(streaming=True, json_schema=True, mode=mode)
        self._api_key = Secret(api_key or "none")
        #: How structured output is asked for: ``"schema"``, the JSON schema as the
        #: OpenAI API takes it (``response_format`` in chat mode, the ``json_schema``
        #: extension in completion mode); ``"llguidance"``, a llguidance grammar of
        #: the schema that allows no whitespace outside strings, as llama.cpp's
        #: ``grammar`` extension (servers built with llguidance, as the embedded one:
        #: ``LlamaCppEngine.openai_engine()``). llama.cpp turns ``response_format``
        #: into a GBNF grammar whose whitespace a small model can pad every gap with.
        self.json_mode = json_mode
        #: How a tool loop's rounds are asked for in chat mode: ``"native"``, through
        #: the tools API (``tools``, ``tool_choice``, ``message.tool_calls``);
        #: ``"schema"``, as a reply that follows the loop's JSON schema (for a server
        #: whose model has no tool-call format: llama.cpp's server then ignores
        #: ``tools``). Completion mode has no tools API: always the schema.
        self.tool_mode = tool_mode
        self._timeout = timeout
        # One client per event loop: an httpx pool belongs to the loop that
        # opened it, and each synchronous run() has a loop of its own.
        self._clients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()

    @property
    def _client(self) -> Any:
        import openai

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            # max_retries=0: retries are the scheduler's job (RetryPolicy), with
            # every attempt recorded.
            client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self._api_key.reveal(),
                timeout=self._timeout,
                max_retries=0,
            )
            self._clients[loop] = client
        return client

    @property
    def model(self) -> str:
        return self._model

    def fingerprint(self) -> dict[str, Any]:
        fingerprint = {"kind": self.kind, "model": self._model, "base_url": self.base_url}
        if self.json_mode != "schema":  # another constraint, other outputs
            fingerprint["json_mode"] = self.json_mode
        return fingerprint

    def server_address(self) -> tuple[str, int] | None:
        parts = urlsplit(self.base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return (parts.hostname or "", port)

    def __repr__(self) -> str:
        return f"OpenAIEngine(base_url={self.base_url!r}, model={self._model!r})"

    # -- the primitive -------------------------------------------------------------------

    def _native_tools(self, request: Request) -> bool:
        """Whether this request goes through the tools API."""
        return (
            request.tools is not None
            and self.tool_mode == "native"
            and self.capabilities.mode == "chat"
        )

    def _arguments(self, request: Request) -> dict[str, Any]:
        args: dict[str, Any] = {"model": self._model}
        extra: dict[str, Any] = {}
        for name, value in request.options.items():
            if name.startswith(EXTRA_PREFIX):
                extra[name[len(EXTRA_PREFIX) :]] = value
            elif name == "top_k":
                extra["top_k"] = value  # not in OpenAI's API; vLLM and llama.cpp take it
            elif name in self.wire_names:
                args[self.wire_names[name]] = list(value) if name == "stop" else value
        if request.tools is not None and self._native_tools(request):
            # The tools API: the reply is the server's tool calls or its text.
            args["messages"] = request.tools.messages(request.system)
            args["tools"] = [dict(t) for t in request.tools.tools]
            args["tool_choice"] = request.tools.tool_choice
            if extra:
                args["extra_body"] = extra
            return args
        if request.schema is not None and self.json_mode == "llguidance":
            extra["grammar"] = llguidance_grammar(request.schema)
            schema = None  # asked for by the grammar
        else:
            schema = _wrapped(request.schema)
        if self.capabilities.mode == "chat":
            args["messages"] = [{"role": t.role, "content": t.content} for t in request.messages()]
            if schema is not None:
                args["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "output", "schema": schema, "strict": True},
                }
        else:
            args["prompt"] = request.text
            if "stop" not in args:  # a chat as a transcript stops at the next role label
                stops = request.transcript_stops()
                if stops:
                    args["stop"] = stops[:4]  # OpenAI's API takes up to four
            if schema is not None:
                extra["json_schema"] = schema
        if extra:
            args["extra_body"] = extra
        return args

    async def _complete(self, request: Request) -> Completion:
        args = self._arguments(request)
        chat = self.capabilities.mode == "chat"
        endpoint = self._client.chat.completions if chat else self._client.completions
        try:
            raw = await endpoint.with_raw_response.create(**args)
        except Exception as exc:
            raise self._map_error(exc) from exc
        try:
            response: Any = raw.parse()
            choice = response.choices[0]
            if self._native_tools(request):
                text = _tool_reply(choice.message)
            else:
                text = self._unwrapped(
                    (choice.message.content if chat else choice.text) or "", request.schema
                )
        except Exception as exc:
            raise _not_a_completion(self.base_url, raw.status_code, raw.headers, raw.text) from exc
        return Completion(
            text,
            choice.finish_reason,
            _usage(response.usage),
            _timings(response),
            raw=response,
        )

    async def _stream(self, request: Request) -> AsyncIterator[str | Completion]:
        if self._native_tools(request):
            # A round's reply is read whole (calls arrive as argument fragments).
            completion = await self._complete(request)
            yield completion.text
            yield completion
            return
        args = self._arguments(request)
        args["stream"] = True
        args["stream_options"] = {"include_usage": True}
        chat = self.capabilities.mode == "chat"
        wrapped = self.json_mode == "schema" and _wrapped(request.schema) is not request.schema
        pieces: list[str] = []
        finish: str | None = None
        usage = Usage()
        last: Any = None
        try:
            if chat:
                stream: Any = await self._client.chat.completions.create(**args)
            else:
                stream = await self._client.completions.create(**args)
            response = getattr(stream, "response", None)
            if response is not None and "event-stream" not in response.headers.get(
                "content-type", ""
            ):
                body = (await response.aread()).decode(errors="replace")
                raise _not_a_completion(self.base_url, response.status_code, response.headers, body)
            async for chunk in stream:
                last = chunk
                if chunk.usage is not None:
                    usage = _usage(chunk.usage)
                for choice in chunk.choices:
                    delta = (choice.delta.content if chat else choice.text) or ""
                    if delta:
                        pieces.append(delta)
                        if not wrapped:
                            yield delta
                    if choice.finish_reason:
                        finish = choice.finish_reason
        except Exception as exc:
            raise self._map_error(exc) from exc
        if last is None:
            raise EngineResponseError(
                f"{self.base_url} answered with an event stream that held no completion chunk"
            )
        text = self._unwrapped("".join(pieces), request.schema)
        if wrapped:
            yield text
        yield Completion(text, finish, usage, _timings(last), raw=last)

    def _unwrapped(self, text: str, schema: dict[str, Any] | None) -> str:
        """The output, out of the object a schema that is not one was wrapped in."""
        return _unwrapped(text, schema) if self.json_mode == "schema" else text

    def _map_error(self, exc: Exception) -> EngineError:
        import openai

        if isinstance(exc, EngineError):
            return exc  # already says what it is

        if isinstance(exc, openai.APITimeoutError):
            return TransientEngineError(f"request to {self.base_url} timed out")
        if isinstance(exc, openai.APIConnectionError):
            return EngineUnavailable(
                "cannot connect to the OpenAI-compatible server", url=self.base_url
            )
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            message = _error_message(exc)
            said = f"{self.base_url} answered {status}: {message}"
            if status == 429 or status >= 500:
                return TransientEngineError(said)
            if "context" in message.lower() and (
                "exceed" in message.lower() or "length" in message.lower()
            ):
                return ContextLengthError(said)
            return EngineRequestError(said)
        if isinstance(exc, ValueError | KeyError | TypeError | AttributeError | IndexError):
            # The client could not read what the server sent (a stream that is not one).
            return EngineResponseError(
                f"{self.base_url} answered with something that is not a completion stream "
                f"({type(exc).__name__}: {_excerpt(str(exc))})"
            )
        return EngineError(f"{type(exc).__name__}: {exc}")

    async def aclose(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_clients"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._clients = weakref.WeakKeyDictionary()


def _tool_reply(message: Any) -> str:
    """A chat message of the tools API as the tool loop reads it (``tool_reply_text``)."""
    calls = [
        (call.function.name, call.function.arguments)
        for call in (getattr(message, "tool_calls", None) or ())
        if getattr(call, "function", None) is not None
    ]
    return tool_reply_text(calls, message.content)


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    response = getattr(exc, "response", None)
    text = getattr(response, "text", "") if response is not None else ""
    if response is not None and text:  # not an OpenAI-style error body (a proxy's page)
        kind = response.headers.get("content-type", "?")
        return f"a {kind} body: {_excerpt(text)!r}"
    return str(getattr(exc, "message", "")) or type(exc).__name__


def _excerpt(text: str, limit: int = 160) -> str:
    """The start of a body, on one line, for an error message."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


def _not_a_completion(base_url: str, status: int, headers: Any, body: str) -> EngineResponseError:
    """A server answered, but not with a completion (not JSON, or JSON of another shape)."""
    kind = headers.get("content-type", "?") if headers is not None else "?"
    return EngineResponseError(
        f"{base_url} answered {status} with a {kind} body that is not a completion: "
        f"{_excerpt(body)!r}. Is base_url the server's OpenAI-compatible root (often ending "
        "in /v1), and is nothing (a proxy, a login page) answering in its place?"
    )


def _wrapped(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """Servers want an object at the schema's root: wrap anything else in one."""
    if schema is None or schema.get("type") == "object":
        return schema
    defs = schema.get("$defs")
    inner = {k: v for k, v in schema.items() if k != "$defs"}
    out: dict[str, Any] = {
        "type": "object",
        "properties": {_WRAP_KEY: inner},
        "required": [_WRAP_KEY],
        "additionalProperties": False,
    }
    if defs:
        out["$defs"] = defs
    return out


def _unwrapped(text: str, schema: dict[str, Any] | None) -> str:
    if schema is None or schema.get("type") == "object":
        return text
    try:
        return json.dumps(json.loads(text)[_WRAP_KEY])
    except (ValueError, KeyError, TypeError):
        return text


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage()
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) or 0
    return Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0, cached)


def _timings(response: Any) -> Timings:
    """llama.cpp's server adds its own timings to responses; use them when present."""
    extra = getattr(response, "model_extra", None) or {}
    timings = extra.get("timings") if isinstance(extra, dict) else None
    if not isinstance(timings, dict):
        return Timings()
    prefill = float(timings.get("prompt_ms", 0.0))
    decode = float(timings.get("predicted_ms", 0.0))
    return Timings(0.0, prefill, decode, prefill + decode)
