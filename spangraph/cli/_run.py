"""``spangraph run FILE[:NAME]``: run the spans or graph a Python file defines."""

from __future__ import annotations

import functools
import json
import os
import pathlib
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import anyio
import click
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .. import (
    InterruptError,
    ModelOutputThunk,
    NodeFailedError,
    Run,
    SpanError,
    SpanGraph,
    arun_stream,
    compile,
    run,
)
from ..cache import MemoStoreError, SQLiteStore
from ..engines import EngineError, InferenceEngine, ScriptedEngine
from ..engines._internal import ENGINE_VARIABLE, default_spec
from ..events import TokenDelta
from . import _target
from ._common import fail

#: Exit statuses: the run is done; it failed or is partial; it was interrupted (128 +
#: SIGINT); a task asked a question with ``interrupt()`` and the run waits for answers.
DONE, FAILED, INTERRUPTED, WAITING = 0, 1, 130, 3

ENGINE_HELP = (
    "The engine for generations that name none, as SPANGRAPH_ENGINE: llamacpp (the embedded "
    "default), openai:<base_url>, or scripted[:REPLY] (answers every prompt with REPLY, "
    "default 'ok': try a graph without a model). Default: $SPANGRAPH_ENGINE, else llamacpp."
)


@click.command("run", short_help="Run the spans or graph a Python file defines.")
@click.argument("target", metavar="FILE[:NAME]")
@click.option("--engine", metavar="SPEC", envvar=ENGINE_VARIABLE, help=ENGINE_HELP)
@click.option(
    "--cache",
    "cache_path",
    metavar="PATH",
    type=click.Path(dir_okay=False, path_type=pathlib.Path),
    help="An SQLite output memo (made if missing): generations it holds are served from it, "
    "new ones are stored. Default: none.",
)
@click.option(
    "--max-concurrency",
    type=click.IntRange(min=1),
    metavar="N",
    help="Generations in flight at once in the whole run.",
)
@click.option(
    "--on-error",
    type=click.Choice(["raise", "continue"]),
    default="raise",
    show_default=True,
    help="raise: the first failure stops the run; continue: independent branches finish.",
)
@click.option(
    "--trace",
    "trace_path",
    metavar="FILE.otlp.jsonl",
    type=click.Path(dir_okay=False, path_type=pathlib.Path),
    help="Write the run's spans as OTLP/JSON lines (read them with 'spangraph log').",
)
@click.option(
    "--otlp-endpoint",
    metavar="URL",
    help="Send the run's spans to an OTLP/HTTP collector (protobuf), e.g. "
    "http://127.0.0.1:4318 (/v1/traces is added to a URL without a path).",
)
@click.option(
    "--answer",
    "answers",
    metavar="ID=JSON",
    multiple=True,
    help="Resume: the answer (JSON) to the interrupt ID that an earlier run printed; "
    "use the same --cache, which keeps the questions and what was done. Repeatable.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar (on in a terminal).")
@click.option(
    "--stream",
    is_flag=True,
    help="Print each generation's text as it arrives, under its node's label.",
)
def run_command(
    target: str,
    engine: str | None,
    cache_path: pathlib.Path | None,
    max_concurrency: int | None,
    on_error: str,
    trace_path: pathlib.Path | None,
    otlp_endpoint: str | None,
    answers: tuple[str, ...],
    no_progress: bool,
    stream: bool,
) -> int:
    """Run the spans or graph that a Python file defines, and print their outputs and the
    run's summary.

    NAME is a top-level name of FILE holding a span, a list of spans, a SpanGraph, or a
    function of no arguments returning one. Without NAME: the name 'graph', else the
    file's only SpanGraph, else its only generation (a thunk or a list of thunks).

    Exit status: 0 done, 1 failed or partial, 3 waiting for answers (a task called
    interrupt(): the questions are printed, answer them with --answer), 130
    interrupted, 2 a usage error.
    """
    path, name = _target.split(target)
    run_engine = _engine(engine)
    endpoint = traces_url(otlp_endpoint, "--otlp-endpoint") if otlp_endpoint else None
    try:
        module = _target.load(path)
        found = _target.find(module, path, name)
    except _target.LoadError as exc:
        fail(str(exc))
    resume = _answers(answers)
    store = _memo(cache_path) if cache_path is not None else None
    label = path.stem if name is None else f"{path.stem}:{name}"
    with _tracing(trace_path, endpoint):
        try:
            options: dict[str, Any] = {
                "engine": run_engine,
                "cache": store,
                "max_concurrency": max_concurrency,
                "on_error": "continue" if on_error == "continue" else "raise",
                "name": label,
                "resume": resume,
            }
            if stream:  # the printed text is the progress
                result = anyio.run(functools.partial(_streamed, compile(*found.roots), options))
            else:
                result = run(*found.roots, progress=False if no_progress else None, **options)
        except NodeFailedError as exc:
            click.echo(f"error: {exc}", err=True)
            if not isinstance(exc.run, Run):
                return FAILED
            result = exc.run
        except KeyboardInterrupt:
            click.echo("interrupted: the run was cancelled", err=True)
            return INTERRUPTED
        except (
            SpanError,
            EngineError,
            MemoStoreError,
            InterruptError,
            ImportError,
            ValueError,
        ) as exc:
            fail(f"{label}: {type(exc).__name__}: {exc}")
        finally:
            if store is not None:
                store.close()
    _report(result, found)
    if result.status == "interrupted":
        return WAITING
    return DONE if result.status == "done" else FAILED


def _answers(given: tuple[str, ...]) -> dict[str, Any] | None:
    """``--answer ID=JSON`` options as ``run(resume=...)``'s dict (a usage error if bad)."""
    answers: dict[str, Any] = {}
    for item in given:
        interrupt_id, sep, text = item.partition("=")
        if not sep or not interrupt_id:
            raise click.BadParameter(f"takes ID=JSON, got {item!r}", param_hint="--answer")
        try:
            answers[interrupt_id] = json.loads(text)
        except ValueError as exc:
            raise click.BadParameter(
                f"{interrupt_id}: not JSON ({exc}); quote a string: '\"yes\"'",
                param_hint="--answer",
            ) from None
    return answers or None


async def _streamed(graph: SpanGraph, options: dict[str, Any]) -> Run:
    """Run ``graph``, printing each generation's text as it arrives: a line with the
    node's label in brackets whenever the text printed comes from another node."""
    shown: str | None = None
    async with arun_stream(graph, tokens=True, progress=False, **options) as events:
        async for event in events:
            if isinstance(event, TokenDelta):
                if event.node_id != shown:
                    if shown is not None:
                        click.echo()
                    click.secho(f"[{graph[event.node_id].label}]", bold=True)
                    shown = event.node_id
                click.echo(event.text, nl=False)
            elif isinstance(event, Run):
                if shown is not None:
                    click.echo()
                return event
    raise AssertionError("a run stream ends with its Run")


def _engine(spec: str | None) -> InferenceEngine | None:
    """The run's engine: a ``ScriptedEngine`` for ``scripted[:REPLY]``; otherwise ``None``
    (the default engine, chosen by ``SPANGRAPH_ENGINE``, set here to ``spec``), checked
    before anything runs. No engine is made and no model is loaded here."""
    if spec is None:
        return None
    kind, sep, reply = spec.partition(":")
    if kind == "scripted":
        # The variable is checked by every run: a value it does not know must not stay.
        os.environ.pop(ENGINE_VARIABLE, None)
        return ScriptedEngine(reply if sep else "ok", name="scripted")
    before = os.environ.get(ENGINE_VARIABLE)
    os.environ[ENGINE_VARIABLE] = spec
    try:
        default_spec()
    except ValueError as exc:
        if before is None:
            del os.environ[ENGINE_VARIABLE]
        else:
            os.environ[ENGINE_VARIABLE] = before
        raise click.BadParameter(
            f"{exc} (the command also takes scripted[:REPLY])", param_hint="--engine"
        ) from None
    return None


def _memo(path: pathlib.Path) -> SQLiteStore:
    try:
        return SQLiteStore(path)
    except MemoStoreError as exc:
        raise click.BadParameter(str(exc), param_hint="--cache") from None


def traces_url(url: str, option: str) -> str:
    """An OTLP/HTTP traces URL: ``http(s)://host[:port]``, with ``/v1/traces`` added
    when it has no path (as ``OTEL_EXPORTER_OTLP_ENDPOINT`` would be read)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.BadParameter(
            f"{url!r} is not an http(s) URL, e.g. http://127.0.0.1:4318/v1/traces",
            param_hint=option,
        )
    if parts.path in ("", "/"):
        parts = parts._replace(path="/v1/traces")
    return urllib.parse.urlunsplit(parts)


@contextmanager
def _tracing(trace_path: pathlib.Path | None, endpoint: str | None) -> Iterator[None]:
    """Send the run's spans where the options say, whatever the run's outcome (an
    interrupted run's spans too). spangraph emits to the application's SDK
    ``TracerProvider`` when there is one: here the command is the application, and
    installs one (or adds to the one the file installed) only when asked to."""
    if trace_path is None and endpoint is None:
        yield
        return
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(resource=Resource.create({"service.name": "spangraph"}))
        trace.set_tracer_provider(provider)
    kept = InMemorySpanExporter()
    if trace_path is not None:
        provider.add_span_processor(SimpleSpanProcessor(kept))
    sent: _Counted | None = None
    if endpoint is not None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        sent = _Counted(OTLPSpanExporter(endpoint=endpoint, timeout=10))
        provider.add_span_processor(BatchSpanProcessor(sent))
    try:
        yield
    finally:
        provider.force_flush()
        if trace_path is not None:
            _write_trace(trace_path, kept.get_finished_spans())
        if sent is not None:
            if sent.failed:
                click.echo(f"error: {sent.failed} spans could not be sent to {endpoint}", err=True)
            click.echo(f"{sent.sent} spans sent to {endpoint}", err=True)


class _Counted(SpanExporter):
    """A span exporter that counts what the exporter it wraps sent and failed to send."""

    def __init__(self, exporter: Any) -> None:
        self.exporter = exporter
        self.sent = self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result: SpanExportResult = self.exporter.export(spans)
        if result is SpanExportResult.SUCCESS:
            self.sent += len(spans)
        else:
            self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.exporter.force_flush(timeout_millis))


def _write_trace(path: pathlib.Path, spans: Any) -> None:
    from ..tracing import LogDAG
    from ..tracing._internal import semconv

    ours = [s for s in spans if semconv.RUN_ID in (s.attributes or {})]
    try:
        written = LogDAG.from_spans(ours).write_otlp_json(path)
    except OSError as exc:
        click.echo(f"error: the trace cannot be written to {path}: {exc}", err=True)
        return
    click.echo(f"trace written to {written}", err=True)


def _report(result: Run, found: _target.Target) -> None:
    """The roots' outputs (a generation's text), then the run's summary, on stdout;
    what failed, on stderr."""
    names = found.names
    if len(names) != len(result.outputs):  # a SpanGraph's roots
        names = [f"{names[0]}[{i}]" for i in range(len(result.outputs))]
    for shown, output in zip(names, result.outputs, strict=True):
        if not isinstance(output, ModelOutputThunk):
            continue
        if output.done:
            click.echo(f"{shown}: {output.value}")
        else:
            click.echo(f"{shown}: ({output.state.value})")
    click.echo(result.summary())
    for outcome in result.failed:
        click.echo(f"failed: {outcome.path}: {outcome.reason}", err=True)
    for outcome in result.skipped:
        click.echo(f"skipped: {outcome.path}: {outcome.reason}", err=True)
    for asked in result.interrupts:
        schema = json.dumps(dict(asked.schema), separators=(",", ":"))
        click.echo(f"waiting: {asked.id}: {asked.path}: {asked.question} (answer: {schema})")
    if result.interrupts:
        click.echo(
            "answer with: spangraph run ... --answer ID=JSON (with the same --cache)", err=True
        )
