"""What the Dask workers of the executor tests build and call (importable on them).

``scripted`` is the engine of the tests: a ``ScriptedEngine`` that answers
``<prompt>``, logs each call's start to ``<log_dir>/calls.log`` (one line per
call, from every process: appends of one short line are atomic), fails for
good on prompts with ``bad`` in them (with an ``OSError``, its own
bug, on prompts with ``oserror``) and once (then succeeds) on prompts with
``flaky``, and sleeps ``latency`` seconds. ``traced`` is the same engine,
instrumented: each call makes a span on the worker, exported to a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from spangraph.engines import EngineRequestError, Request, ScriptedEngine, TransientEngineError
from tests.cache.memo_helpers import answer


def scripted(log_dir: str = "", latency: float = 0.0, max_concurrency: int = 64) -> ScriptedEngine:
    return ScriptedEngine(_reply(log_dir, latency), max_concurrency=max_concurrency)


def _reply(log_dir: str, latency: float) -> Callable[[Request], Awaitable[str]]:
    async def reply(request: Request) -> str:
        text = request.text
        if log_dir:
            line = text.replace("\n", " ") + "\n"
            fd = os.open(pathlib.Path(log_dir, "calls.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        if latency:
            await anyio.sleep(latency)
        if "bad" in text:
            raise EngineRequestError("the engine refuses this prompt")
        if "oserror" in text:
            raise FileNotFoundError("a file the engine needs is missing")  # a bug of its own
        if "flaky" in text and log_dir:
            marker = pathlib.Path(log_dir, "flaky-" + hashlib.sha1(text.encode()).hexdigest())
            if not marker.exists():
                marker.touch()
                raise TransientEngineError("overloaded, try again")
        return answer(request)

    return reply


def traced(log_dir: str) -> ScriptedEngine:
    """``scripted``, instrumented as an HTTP client would be: each call opens a span on
    the worker (an SDK tracer of its own, under the current context) around the
    reply, and the span is exported to ``<log_dir>/spans.jsonl`` (read by
    ``worker_spans``)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_FileExporter(pathlib.Path(log_dir))))
    tracer = provider.get_tracer("worker-instrumentation")
    inner = _reply(log_dir, 0.0)

    async def reply(request: Request) -> str:
        with tracer.start_as_current_span("POST /completion"):
            return await inner(request)

    return ScriptedEngine(reply)


class _FileExporter(SpanExporter):
    def __init__(self, log_dir: pathlib.Path) -> None:
        self.path = log_dir / "spans.jsonl"

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            context, parent = span.get_span_context(), span.parent
            line = {
                "name": span.name,
                "trace_id": f"{context.trace_id:032x}",
                "span_id": f"{context.span_id:016x}",
                "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
                "pid": os.getpid(),
            }
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, (json.dumps(line) + "\n").encode())
            finally:
                os.close(fd)
        return SpanExportResult.SUCCESS


def worker_spans(log_dir: str | pathlib.Path) -> list[dict[str, Any]]:
    """The spans ``traced`` engines exported, in every process."""
    path = pathlib.Path(log_dir, "spans.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def calls(log_dir: str | pathlib.Path) -> list[str]:
    """The prompts the engines were called with, in every process, in order."""
    path = pathlib.Path(log_dir, "calls.log")
    return path.read_text().splitlines() if path.exists() else []


def broken(**_: Any) -> ScriptedEngine:
    raise RuntimeError("no GPU on this worker")


def worker_plugin_names(dask_scheduler: Any) -> list[str]:
    """The worker plugins the Dask scheduler holds (and gives to joining workers)."""
    return sorted(dask_scheduler.worker_plugins)


def spangraph_tasks(dask_scheduler: Any) -> int:
    """How many spangraph generations the Dask scheduler still knows of."""
    return sum(1 for key in dask_scheduler.tasks if str(key).startswith("spangraph-generate"))


def loaded_servers() -> int:
    from spangraph.engines._llamacpp import loaded_servers as count

    return count()


def engine_plugin_keys(plugin_name: str, dask_worker: Any = None) -> list[str]:
    plugin = dask_worker.plugins.get(plugin_name) if dask_worker is not None else None
    return sorted(plugin.engines) if plugin is not None else []


def engine_ids(plugin_name: str, dask_worker: Any = None) -> list[int]:
    """The identity of each engine the worker's plugin built (the same ids: not rebuilt)."""
    plugin = dask_worker.plugins.get(plugin_name) if dask_worker is not None else None
    return [id(engine) for engine in plugin.engines.values()] if plugin is not None else []
