"""Engines on other processes or machines: the remote hop, below the generate protocol.

An executor (``spangraph.graph.DaskExecutor``) keeps the scheduler, pure
nodes and the output memo on the driver, and sends only a generation that
has to wait to a worker. The hop sits in an engine proxy, ``RemoteEngine``:
the driver's engine does steps 1-3 and 6-8 as always (options, render, the
memo, parse, store, telemetry: the protocol is unchanged), and the proxy's
primitive (step 5) sends the request to a worker, where the engine built
there from its ``EngineSpec`` does step 4 (the KV prefix) and its own step 5.

**What crosses the wire** is plain data, msgpack-serialisable (``to_wire``):
the prompt's segments (text, span id, cache flag, role, label), the
canonical options, the JSON schema, the mode, the sample index, the
engine's key (its spec's digest), a W3C ``traceparent`` (the node's span's,
when the executor can tell it: see ``RemoteEngine``) and the node's id and
label (for error messages). No component, pydantic model or live
engine is pickled. What comes back (``completion_to_wire``) is the
completion (text, finish reason, usage, timings), the worker's address, its
wall-clock start and end (``WorkerRun``, on ``Completion.raw``: telemetry
puts them on the node's span) and the digest of the KV prefix the worker
now holds (the driver prefers that worker for the next request with it).

An engine error on the worker comes back as data too (its spangraph class
name and message) and is raised on the driver as that class: a transient
one stays a ``TransientEngineError``, so the run's ``RetryPolicy`` decides.

A new executor (Ray, say) implements ``Dispatch``: one coroutine that sends
a payload to some worker and returns the answer; ``serve`` is what a worker
runs with it.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any, Protocol

from ..nodes import ExecutionState, ModelOutputThunk, Prompt, Segment, Timings, Usage
from ._base import InferenceEngine
from ._errors import EngineError
from ._types import Capabilities, Completion, Request, ToolRequest, WorkerRun

#: The wire format's version: a worker refuses a payload of another one.
WIRE_VERSION = 2  # 2: a tool round's ToolRequest ("tools")


class ExecutorError(Exception):
    """An executor cannot run a generation where it was asked to: the cluster cannot
    be reached, a worker cannot build an engine from its spec (the message names
    the worker and the spec), an engine of the run has no spec, or a request
    cannot be sent as plain data (the message names the span)."""


@dataclass(frozen=True)
class EngineSpec:
    """How a worker builds an engine: ``factory`` is an importable ``"module:name"``
    (an engine class, or a function that returns an engine) and ``kwargs`` its
    keyword arguments, plain data (msgpack: strings, numbers, lists, dicts).

    ``EngineSpec("spangraph.engines:LlamaCppEngine", {"n_parallel": 2})`` builds the
    embedded engine on each worker. The factory's module must be importable on the
    workers (installed there, or on their ``PYTHONPATH``).
    """

    factory: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        module, colon, name = self.factory.partition(":")
        if not colon or not module or not name:
            raise ValueError(
                f"EngineSpec factory must be 'module:name' (e.g. "
                f"'spangraph.engines:LlamaCppEngine'), got {self.factory!r}"
            )
        try:
            json.dumps(dict(self.kwargs), sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"EngineSpec({self.factory!r}) kwargs must be plain data (strings, numbers, "
                f"lists, dicts): {exc}"
            ) from None

    @property
    def key(self) -> str:
        """The spec's digest: the engine's key on the wire and on workers."""
        text = json.dumps([self.factory, dict(self.kwargs)], sort_keys=True)
        return blake2b(text.encode(), digest_size=8).hexdigest()

    def to_data(self) -> dict[str, Any]:
        return {"factory": self.factory, "kwargs": dict(self.kwargs)}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> EngineSpec:
        return cls(str(data["factory"]), dict(data["kwargs"]))

    def build(self) -> InferenceEngine:
        """Import the factory and call it (on a worker)."""
        module, _, name = self.factory.partition(":")
        target: Any = importlib.import_module(module)
        for part in name.split("."):
            target = getattr(target, part)
        engine = target(**self.kwargs)
        if not isinstance(engine, InferenceEngine):
            raise TypeError(f"{self.factory} returned {type(engine).__name__}, not an engine")
        return engine

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.kwargs.items()))
        return f"{self.factory}({args})"


class Dispatch(Protocol):
    """What an executor offers its engine proxies: send a payload (``to_wire``) to a
    worker (``prefer``: the addresses of those that hold the request's KV prefix,
    first warmed first; empty: any) and return what ``serve`` answered there.
    Cancelling the coroutine cancels the remote work."""

    async def complete(
        self, payload: dict[str, Any], *, prefer: Sequence[str]
    ) -> dict[str, Any]: ...


# -- the driver's side -------------------------------------------------------------------------


class RemoteEngine(InferenceEngine):
    """The proxy of an engine whose primitive runs on a worker (see the module's
    docstring). It is its engine for everything but step 5: the same options,
    render, fingerprint (so the same memo keys), parse and telemetry; its
    ``max_concurrency`` is the engine's, and the scheduler holds it across the
    whole cluster (the scheduler is the only one to send work).

    ``traceparent``: node id → the W3C ``traceparent`` of that node's span (the
    attempt under way), or ``None`` when it cannot be told; the executor gives
    the tracing package's (``node_traceparent``), so that spans made on the
    worker are children of the node's span. Without it, or when it gives
    ``None``, the request carries the current span's (the run's)."""

    kind = "remote"

    def __init__(
        self,
        local: InferenceEngine,
        spec: EngineSpec,
        dispatch: Dispatch,
        *,
        traceparent: Callable[[str], str | None] | None = None,
    ) -> None:
        super().__init__(defaults=local.defaults)
        self.local = local
        self.spec = spec
        self._dispatch = dispatch
        self._node_traceparent = traceparent
        self._key = spec.key
        self.max_concurrency = local.max_concurrency
        # Deltas do not cross the wire: a streamed thunk gets its text at once.
        self.capabilities: Capabilities = Capabilities(
            streaming=False,
            json_schema=local.capabilities.json_schema,
            kv_slots=local.capabilities.kv_slots,
            logprobs=local.capabilities.logprobs,
            mode=local.capabilities.mode,
        )
        #: KV prefixes warmed on workers: digest → the addresses of those holding it.
        self.warm: dict[str, list[str]] = {}
        self.span_cache = local.span_cache

    @property
    def model(self) -> str:
        return self.local.model

    def fingerprint(self) -> dict[str, Any]:
        return self.local.fingerprint()

    def server_address(self) -> tuple[str, int] | None:
        return self.local.server_address()

    def prefix_key(self, action: Any, state: ExecutionState) -> str | None:
        return self.local.prefix_key(action, state)

    def prefix_ready(self, digest: str) -> bool:
        """Warm when some worker holds it (the driver's own disk says nothing)."""
        return digest in self.warm

    def handle_model_options(
        self, state: ExecutionState, call: Mapping[str, Any]
    ) -> dict[str, Any]:
        return self.local.handle_model_options(state, call)

    def render(
        self,
        action: Any,
        state: ExecutionState,
        options: Mapping[str, Any],
        sample_index: int = 0,
    ) -> Request:
        return self.local.render(action, state, options, sample_index)

    def parse(self, action: Any, completion: Completion) -> Any:
        return self.local.parse(action, completion)

    def telemetry(
        self,
        thunk: ModelOutputThunk[Any],
        state: ExecutionState,
        request: Request | None,
        completion: Completion | None,
        cache_hit: bool,
        error: BaseException | None,
        started: float,
    ) -> None:
        self.local.telemetry(thunk, state, request, completion, cache_hit, error, started)

    def _traceparent(self, request: Request) -> str | None:
        """The request's node's span's ``traceparent``, else the current span's."""
        thunk = request.thunk
        if self._node_traceparent is not None and thunk is not None and thunk._id:
            found = self._node_traceparent(thunk._id)
            if found is not None:
                return found
        from opentelemetry import propagate

        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return carrier.get("traceparent")

    async def _complete(self, request: Request) -> Completion:
        payload = to_wire(request, self._key, self._traceparent(request))
        prefix = None
        if self.capabilities.kv_slots and request.action is not None:
            prefix = self.prefix_key(request.action, request.state or _identity())
        holders = self.warm.get(prefix, ()) if prefix is not None else ()
        answer = await self._dispatch.complete(payload, prefer=holders)
        completion = completion_from_wire(answer)
        held = answer.get("prefix")
        if isinstance(held, str) and isinstance(completion.raw, WorkerRun):
            holding = self.warm.setdefault(held, [])
            if completion.raw.address not in holding:
                holding.append(completion.raw.address)
        return completion

    def __repr__(self) -> str:
        return f"RemoteEngine({self.local!r}, spec={self.spec})"


def _identity() -> ExecutionState:
    from ._states import Identity

    return Identity()


def to_wire(request: Request, engine_key: str, traceparent: str | None) -> dict[str, Any]:
    """The request as plain data (see the module's docstring); ``ExecutorError``, naming
    the span, when it is not plain data."""
    thunk = request.thunk
    node = (thunk._id or "") if thunk is not None else ""
    payload: dict[str, Any] = {
        "v": WIRE_VERSION,
        "engine": engine_key,
        "segments": [list(seg) for seg in request.prompt.segments],
        "options": dict(request.options),
        "schema": request.schema,
        "mode": request.mode,
        "sample_index": request.sample_index,
        "traceparent": traceparent,
        "node": node,
        "tools": request.tools.to_plain() if request.tools is not None else None,
    }
    import msgpack

    try:
        msgpack.packb(payload)
    except (TypeError, ValueError, OverflowError) as exc:
        label = _label(request)
        raise ExecutorError(
            f"generation {label} (node {node}) cannot be sent to a worker: its request is "
            f"not plain data ({exc}); options and schemas must be strings, numbers, "
            "lists and dicts"
        ) from None
    return payload


def _label(request: Request) -> str:
    from ..nodes._internal import span_label

    return f"generate({span_label(request.action)})" if request.action is not None else "?"


def from_wire(payload: Mapping[str, Any]) -> Request:
    """The request a worker's engine runs (no action, no state: those stay on the driver)."""
    if payload.get("v") != WIRE_VERSION:
        raise ExecutorError(
            f"a worker got a request of wire version {payload.get('v')!r}, not "
            f"{WIRE_VERSION}: the workers run another spangraph version than the driver"
        )
    segments = tuple(Segment(*seg) for seg in payload["segments"])
    options = dict(payload["options"])
    if isinstance(options.get("stop"), list):
        options["stop"] = tuple(options["stop"])
    request = Request.of(
        prompt=Prompt(segments),
        options=options,
        schema=payload["schema"],
        mode=payload["mode"],
        action=None,
        state=None,
        sample_index=int(payload["sample_index"]),
    )
    tools = payload.get("tools")
    if tools is not None:
        request.tools = ToolRequest.from_plain(tools)
    return request


def completion_to_wire(
    completion: Completion, worker: WorkerRun, prefix: str | None
) -> dict[str, Any]:
    return {
        "text": completion.text,
        "finish_reason": completion.finish_reason,
        "usage": list(completion.usage),
        "timings": list(completion.timings),
        "worker": list(worker),
        "prefix": prefix,
    }


def completion_from_wire(answer: Mapping[str, Any]) -> Completion:
    """The completion a worker sent back (``raw``: the ``WorkerRun``), or the engine
    error it reported, raised."""
    error = answer.get("error")
    if error is not None:
        name, message = error
        raise _engine_error(str(name), str(message))
    return Completion(
        answer["text"],
        answer["finish_reason"],
        Usage(*answer["usage"]),
        Timings(*answer["timings"]),
        WorkerRun(*answer["worker"]),
    )


# -- the worker's side -------------------------------------------------------------------------


async def serve(
    engine: InferenceEngine, payload: Mapping[str, Any], address: str
) -> dict[str, Any]:
    """Run one request on a worker's engine: step 4 (the KV prefix), step 5 (the
    primitive); the answer as plain data. An engine error is an answer too (its
    kind and message), so that no exception object has to cross the wire; any other
    exception of the engine's is an ``EngineError`` naming its type."""
    started = time.time()
    request = from_wire(payload)
    try:
        request = await engine.handle_input_cache(request)
        completion = await engine._complete(request)
    except EngineError as exc:
        return {"error": [_error_name(exc), f"{exc} (on worker {address})"]}
    except Exception as exc:
        # A fault of the engine's own code. Raised as itself, it would reach the driver
        # as the Dask task's error, where an OSError reads as a lost worker (retried).
        return {"error": ["EngineError", f"{type(exc).__name__}: {exc} (on worker {address})"]}
    prefix = request.prefix.digest if request.prefix is not None else None
    return completion_to_wire(completion, WorkerRun(address, started, time.time()), prefix)


def _error_name(exc: EngineError) -> str:
    """The name of the nearest spangraph engine error class of ``exc``."""
    from . import _errors

    for cls in type(exc).__mro__:
        if getattr(_errors, cls.__name__, None) is cls:
            return str(cls.__name__)
    return "EngineError"


def _engine_error(name: str, message: str) -> EngineError:
    """The engine error a worker reported, as its spangraph class (a transient one stays
    a ``TransientEngineError``: the run's ``RetryPolicy`` decides)."""
    from . import _errors

    cls = getattr(_errors, name, None)
    if isinstance(cls, type) and issubclass(cls, EngineError):
        try:
            return cls(message)
        except TypeError:
            pass
    return EngineError(message)
