"""``run()`` and ``arun()``: execute spans, and the ``Run`` they return."""

from __future__ import annotations

import contextlib
import dataclasses
import html
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from .. import events as ev
from ..cache import CacheSetting
from ..cache._internal import (
    describe_bad_entries,
    describe_failure,
    split_cache_setting,
    use_run_cache,
)
from ..engines import InferenceEngine
from ..nodes import ThunkState
from ..nodes._internal import WORK_KINDS
from ..tracing import LogDAG
from ..tracing._internal import RunLog, TracedRun, mimebundle
from ._compile import CANCELLED, DONE, FAILED, SKIPPED, SpanGraph, compile
from ._errors import NodeFailedError
from ._executor import Executor
from ._gcfreeze import gc_scope
from ._interrupt import Answers, Interrupt, checked_answers, remember
from ._policy import OnError, RetryPolicy
from ._progress import ProgressBar, wanted
from ._scheduler import Scheduler, check_run_policy
from ._signature import keywords_checked
from ._traced import TracedSpanGraph, finish_tracing

DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class NodeOutcome:
    """A node that did not finish: its id, span path, and why."""

    node_id: str
    path: str
    reason: str
    error: BaseException | None = None


@dataclass
class Run:
    """What a run produced and how it went.

    ``outputs`` are the roots (thunks are done unless the run failed);
    ``status`` is ``"done"``, ``"partial"`` (``on_error="continue"`` with
    failures), ``"interrupted"`` (a task asked a question with ``interrupt()``:
    the questions are in ``interrupts``, and ``resume(answers)`` goes on),
    ``"failed"`` or ``"cancelled"``. ``log`` is the run's LogDAG (built from its
    OpenTelemetry spans) and ``events`` its event stream.
    """

    graph: SpanGraph
    outputs: list[Any]
    status: str
    failed: list[NodeOutcome]
    skipped: list[NodeOutcome]
    duration: float
    nodes_run: int = 0
    generations: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    attempts: int = 0
    dynamic_nodes: int = 0
    #: Output-memo operations that failed and were gone without (the outputs are
    #: kept): writes (entries not stored, evictions, leases not given back) and reads.
    cache_write_errors: int = 0
    cache_read_errors: int = 0
    #: Memo entries that could not be used (corrupt, wrong shape): skipped, recomputed.
    cache_bad_entries: int = 0
    #: Every event of the run, in order, when it ran with ``keep_events=True`` (the
    #: run's record is ``log``; a big run makes several events per generation).
    events: list[ev.Event] = field(default_factory=list)
    #: The questions tasks asked with ``interrupt()`` that wait for an answer (the
    #: run's status is then ``"interrupted"``), in the order they were asked.
    interrupts: list[Interrupt] = field(default_factory=list)
    _log: RunLog | None = field(default=None, repr=False)
    #: Runs the same roots again with answers (``resume``), with this run's settings.
    _again: Callable[[Mapping[str, Any]], Awaitable[Run]] | None = field(default=None, repr=False)

    @property
    def log(self) -> LogDAG | None:
        """The run's LogDAG, built from its spans on first use (``None`` when untraced)."""
        return self._log.get() if self._log is not None else None

    @property
    def output(self) -> Any:
        """The single root's output (the first root's when there are several)."""
        return self.outputs[0]

    def __getitem__(self, index: int) -> Any:
        return self.outputs[index]

    def resume(self, answers: Mapping[str, Any]) -> Run:
        """Run the same roots again, with the same settings, answering this run's
        interrupts (``{interrupt.id: answer}``; answers this run was given are kept).
        Every answer is checked against its interrupt's schema before anything runs
        (``InterruptError``, naming the task's span path). Nodes done here are reused,
        generations are served from the output memo, and each interrupted task runs
        again, its ``interrupt()`` returning the answer. Use ``aresume`` in async code."""
        return _run_sync(lambda: self.aresume(answers))

    async def aresume(self, answers: Mapping[str, Any]) -> Run:
        """``resume``, awaited (in a notebook cell or an async program)."""
        if self._again is None:
            raise RuntimeError("this Run was not made by run()/arun(): it cannot resume")
        return await self._again(answers)

    @property
    def generations_avoided(self) -> int:
        """Generations served from the output memo instead of the engine."""
        return self.cache_hits

    @property
    def engine_calls(self) -> int:
        return self.generations - self.cache_hits

    def summary(self) -> str:
        return (
            f"{self.status}: {self.nodes_run} nodes run, {self.generations} generations, "
            f"{self.cache_hits} cache hits, {len(self.failed)} failed, "
            f"{len(self.skipped)} skipped in {self.duration:.2f} s"
        )

    def __repr__(self) -> str:
        return f"<Run {self.summary()}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """In a notebook: the summary above the LogDAG's drawing (HTML), the drawing
        alone (SVG), and the summary as text; only text without a trace or graphviz."""
        bundle = {"text/plain": repr(self)}
        log = self.log
        if log is None:
            return bundle
        svg = mimebundle(log.to_graphviz()).get("image/svg+xml")
        if svg is not None:
            bundle["image/svg+xml"] = svg
            bundle["text/html"] = f"<p><code>{html.escape(self.summary())}</code></p>{svg}"
        return bundle


def _graph_of(roots: Sequence[Any]) -> SpanGraph:
    if len(roots) == 1 and isinstance(roots[0], SpanGraph):
        return roots[0]
    if any(isinstance(r, SpanGraph) for r in roots):
        raise TypeError("pass either one compiled SpanGraph or spans, not both")
    return compile(*roots)


@keywords_checked
async def arun(
    *roots: Any,
    engine: InferenceEngine | None = None,
    cache: CacheSetting = None,
    max_concurrency: int | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    on_error: OnError = "raise",
    progress: bool | None = None,
    trace: bool = True,
    name: str = "spangraph",
    listeners: Sequence[Callable[[ev.Event], None]] = (),
    keep_events: bool = False,
    resume: Mapping[str, Any] | None = None,
    executor: Executor | None = None,
) -> Run:
    """Run spans (or one compiled ``SpanGraph``) to completion; see ``run``."""
    graph = _graph_of(roots)
    if graph.held():  # another run holds it: this one runs a copy (the two never meet)
        graph = graph.instance()
    retry = retry if retry is not None else DEFAULT_RETRY
    # What can be known to be wrong is refused before the run begins (no span opened,
    # no node started): the limits and policies, the cache setting, and
    # the default engine (a bad SPANGRAPH_ENGINE or SPANGRAPH_HOME).
    check_run_policy(max_concurrency, timeout, on_error, retry)
    store, policy = split_cache_setting(cache)
    given, answered = checked_answers(resume, store) if resume else ({}, [])
    answers = Answers(given, store)
    if engine is None:
        engine = _default_engine_for(graph)
    run_engine = engine
    if executor is not None:
        await _start_executor(executor, graph, engine)
    else:
        _refuse_cluster_tasks(graph)
    bus = ev.EventBus()
    log: list[ev.Event] = []
    traced: TracedRun | None = None
    if keep_events:
        bus.subscribe(log.append)
    if trace:
        resumed = [(i.trace_id, i.span_id) for i in answered if i.trace_id and i.span_id]
        traced = TracedRun(TracedSpanGraph(graph), name, bus, resumes=resumed)
    gc_freeze = gc_scope(bus, traced=trace)
    faults = _CacheFaults()
    bus.subscribe(faults, only=(ev.CacheFailed, ev.CacheBadEntry))
    for listener in listeners:
        bus.subscribe(listener)
    bar = ProgressBar(bus) if wanted(progress) else None

    def default_engine() -> InferenceEngine:
        if run_engine is not None:
            return run_engine
        from ..engines import default

        return default()

    started = time.perf_counter()
    scheduler = Scheduler(
        graph,
        engine=default_engine,
        max_concurrency=max_concurrency,
        retry=retry,
        timeout=timeout,
        on_error=on_error,
        bus=bus,
        answers=answers,
        executor=executor,
    )
    cancelled = False
    failure: BaseException | None = None
    try:
        with (
            ev.use_bus(bus),
            use_run_cache(store, policy),
            traced.current() if traced is not None else contextlib.nullcontext(),
            gc_freeze,
        ):
            await scheduler.execute()
    except BaseException as exc:
        failure = exc
        cancelled = scheduler.first_failure is None
        if cancelled:
            raise
    finally:
        scheduler.close()  # execute() does it too; this covers a failure before it ran
        if bar is not None:
            bar.close()
        dag = finish_tracing(traced, scheduler, failure) if traced is not None else None
    outcome = _make_run(graph, scheduler, time.perf_counter() - started, log, cancelled)
    outcome._log = dag
    faults.count_on(outcome)
    if traced is not None and outcome.interrupts:
        trace_id, span_id = traced.span_ids()
        outcome.interrupts = [
            dataclasses.replace(i, trace_id=trace_id, span_id=span_id) for i in outcome.interrupts
        ]
    remember(outcome.interrupts, store)

    async def again(more: Mapping[str, Any]) -> Run:
        return await arun(
            *graph.root_spans,
            engine=engine,
            cache=cache,
            max_concurrency=max_concurrency,
            retry=retry,
            timeout=timeout,
            on_error=on_error,
            progress=progress,
            trace=trace,
            name=name,
            listeners=listeners,
            keep_events=keep_events,
            resume={**answers.given, **more},
            executor=executor,
        )

    outcome._again = again
    if scheduler.first_failure is not None and on_error == "raise":
        node_id = scheduler.first_failure
        error = scheduler.errors[node_id]
        raise NodeFailedError(graph.path_of(node_id), error, outcome) from error
    return outcome


async def _start_executor(
    executor: Executor, graph: SpanGraph, engine: InferenceEngine | None
) -> None:
    """Get the executor's workers ready, and check that it can run every engine the
    graph names, before the run begins (what a task makes later is checked then)."""
    if not isinstance(executor, Executor):
        raise TypeError(
            f"executor= takes an executor (e.g. DaskExecutor), got {type(executor).__name__}"
        )
    await executor.start()
    engines = [engine] if engine is not None else []
    for thunk in graph._work_thunks:
        pinned = getattr(thunk.producer, "engine", None)
        if pinned is not None:
            engines.append(pinned)
    for each in engines:
        executor.engine(each)


def _refuse_cluster_tasks(graph: SpanGraph) -> None:
    """A ``@task(where="cluster")`` in a run without an executor: refused before the run."""
    # By the node's kind first: only a task's producer has ``where``, and a missing
    # attribute would be looked up (and missed) once per generation of the graph.
    for info in graph.nodes():
        if info.kind == "task" and info.span.producer.where == "cluster":
            raise ValueError(
                f"{graph.path_of(info.id)} runs on the cluster "
                "(@task(where='cluster')): give the run an executor, e.g. "
                "run(..., executor=DaskExecutor(client, engines=...))"
            )


def _default_engine_for(graph: SpanGraph) -> InferenceEngine | None:
    """The default engine, made now if a generation of the graph will need it (a bad
    setting fails here, before the run); ``None`` if none will, as far as can be
    known before the run (then a task's dynamic generations make it on first use,
    and a bad ``SPANGRAPH_ENGINE`` has still been refused here)."""
    from ..engines import default
    from ..engines._internal import default_spec

    default_spec()  # checks SPANGRAPH_ENGINE, without making an engine
    for thunk in graph._work_thunks:
        producer = thunk.producer
        if (
            thunk.state is not ThunkState.DONE
            and getattr(producer, "kind", "") in ("generation", "sampler")
            and getattr(producer, "engine", None) is None
        ):
            return default()
    return None


class _CacheFaults:
    """Counts a run's output-memo faults (``CacheFailed``, ``CacheBadEntry``) and
    warns at the first failure and at the first bad entry (once each per run)."""

    __slots__ = ("bad_entries", "read_errors", "write_errors")

    def __init__(self) -> None:
        self.write_errors = self.read_errors = self.bad_entries = 0

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.CacheBadEntry):
            if not self.bad_entries:
                warnings.warn(describe_bad_entries(event.where), RuntimeWarning, stacklevel=2)
            self.bad_entries += event.count
            return
        assert isinstance(event, ev.CacheFailed) and event.error is not None
        if not (self.write_errors or self.read_errors):
            message = describe_failure(event.where, event.operation, event.error)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        if event.operation == "get":
            self.read_errors += 1
        else:
            self.write_errors += 1

    def count_on(self, run: Run) -> None:
        run.cache_write_errors = self.write_errors
        run.cache_read_errors = self.read_errors
        run.cache_bad_entries = self.bad_entries


def _make_run(
    graph: SpanGraph, scheduler: Scheduler, duration: float, log: list[ev.Event], cancelled: bool
) -> Run:
    failed = [
        NodeOutcome(n, graph.path_of(n), f"{type(e).__name__}: {e}", e)
        for n, e in scheduler.errors.items()
    ]
    # Blocks and components downstream of a failure are skipped too, but only the
    # work they fed (generations, tasks, samplers) is worth reporting.
    skipped = [
        NodeOutcome(n, graph.path_of(n), reason)
        for n, reason in scheduler.skip_reasons.items()
        if graph[n].kind in WORK_KINDS
    ]
    states = scheduler.status_counts()
    if cancelled or states[CANCELLED]:
        status = "cancelled"
    elif failed and scheduler.on_error == "raise":
        status = "failed"
    elif scheduler.interrupts:
        status = "interrupted"
    elif failed or states[FAILED] or states[SKIPPED]:
        status = "partial"
    else:
        status = "done" if states[DONE] == sum(states.values()) else "partial"
    return Run(
        graph=graph,
        outputs=list(graph.root_spans),
        status=status,
        failed=failed,
        skipped=skipped,
        duration=duration,
        nodes_run=scheduler.nodes_run,
        generations=scheduler.generations,
        cache_hits=scheduler.cache_hits,
        cache_misses=scheduler.cache_misses,
        attempts=scheduler.attempts,
        dynamic_nodes=scheduler.dynamic_nodes,
        events=log,
        interrupts=list(scheduler.interrupts),
    )


@keywords_checked
def run(
    *roots: Any,
    engine: InferenceEngine | None = None,
    cache: CacheSetting = None,
    max_concurrency: int | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    on_error: OnError = "raise",
    progress: bool | None = None,
    trace: bool = True,
    name: str = "spangraph",
    listeners: Sequence[Callable[[ev.Event], None]] = (),
    keep_events: bool = False,
    resume: Mapping[str, Any] | None = None,
    executor: Executor | None = None,
) -> Run:
    """Run spans (or one compiled ``SpanGraph``) and return the ``Run``.

    - ``engine``: the engine for generations not pinned to one (default:
      ``spangraph.engines.default()``, made before the run starts, so a bad
      ``SPANGRAPH_ENGINE`` fails here);
    - ``cache``: a memo store, a ``CachePolicy``, or both as a tuple;
    - ``max_concurrency``: generations in flight at once in the whole run;
    - ``retry``: a ``RetryPolicy`` (default: transient engine errors, 3 attempts);
    - ``timeout``: seconds per node attempt;
    - ``on_error``: ``"raise"`` (the first failure stops the run: nothing new
      starts, work in flight is cancelled, ``NodeFailedError`` is raised with
      the partial ``Run`` on it) or ``"continue"`` (independent branches
      finish; the run returns partial results);
    - ``progress``: a progress bar (``None``: on in terminals and notebooks);
    - ``trace``: emit OpenTelemetry spans and build ``Run.log``;
    - ``name``: the run span's name;
    - ``listeners``: functions called with every event of the run;
    - ``keep_events``: keep every event in ``Run.events``;
    - ``resume``: answers to the interrupts of an earlier run of these roots,
      ``{interrupt_id: answer}`` (see ``interrupt`` and ``Run.resume``), each
      checked against its question's schema before anything runs.
    - ``executor``: where generations run (default: this process); e.g.
      ``DaskExecutor(client, engines=...)`` sends them to a Dask cluster while
      the scheduler, the memo and the tracing stay here.

    Inside a running event loop (a notebook cell, an async program),
    ``run()`` cannot start a second loop in the same thread, so it runs the
    graph on a fresh loop in a helper thread and waits for it; ``await
    arun(...)`` avoids the thread and is preferred there.
    """

    async def call() -> Run:
        return await arun(
            *roots,
            engine=engine,
            cache=cache,
            max_concurrency=max_concurrency,
            retry=retry,
            timeout=timeout,
            on_error=on_error,
            progress=progress,
            trace=trace,
            name=name,
            listeners=listeners,
            keep_events=keep_events,
            resume=resume,
            executor=executor,
        )

    return _run_sync(call)


def _run_sync(call: Callable[[], Awaitable[Run]]) -> Run:
    """``await call()`` from sync code: on a new event loop, in a helper thread when
    this thread already runs one."""
    if not _loop_running():
        result: Run = anyio.run(call)
        return result
    box: dict[str, Any] = {}

    def worker() -> None:
        try:
            box["run"] = anyio.run(call)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=worker, name="spangraph-run", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    threaded: Run = box["run"]
    return threaded


def _loop_running() -> bool:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
