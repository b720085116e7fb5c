"""The dataflow scheduler: runs a ``SpanGraph``'s nodes as their inputs finish.

State
-----
For every node the scheduler keeps its status (pending, ready, running,
done, failed, skipped, cancelled), the number of its inputs that are not
done yet (``waiting``), the nodes that use it (``users``) and its position
in the graph's topological order (``order``). Ready nodes sit in one heap
keyed by that position. Capacity is two counters: generations in flight in
the whole run, and per engine (a view made with ``state(engine)`` shares its
engine's budget).

Ordering policy
---------------
A node is ready the moment its last input is done; there are no
supersteps, so a slow branch never holds up an unrelated one. Among ready
nodes the one earliest in the topological order starts first (the order is
the depth-first post-order of ``compile()``, so it is deterministic for the
same roots). Dynamic nodes get positions after every existing node, in the
order they are added. A generation whose engine (or the run) is at its
limit is set aside and retried when a running generation finishes; ready
nodes behind it (other engines, tasks, pure nodes) go on.

Prefix-aware ordering: on engines with KV slots, a generation whose prompt
starts with a ``cache=True`` prefix that is not warm yet (in no slot, not
saved) claims the prefix; other ready generations with the same prefix are
set aside until it finishes, so the prefix is prefilled once, while
generations with other prefixes run meanwhile.

Execution
---------
Blocks and components are pure: they are done as soon as their inputs are.
A generation is started inline: its coroutine is driven by hand in the
scheduler's own loop, so when it never waits (an instant engine, an output
cache hit) it costs no task at all. If it reaches the engine's hand-off
point, or waits on the event loop, it moves into a task and finishes there
(see ``spangraph.engines._handoff``). On asyncio that is a plain asyncio
task, which costs a fifth of a task-group task; the scheduler keeps the set
of them, waits for them (and for its task group's children, since either
may start the other) before the run ends, and cancels them when the run is
cancelled. On other backends (trio) it is a task of the run's task group. Tasks
(``@task``) run inline when sync, as tasks when async, and in a worker
thread with ``thread=True``.

Worked example: ``c = generate(Combine(a=generate(A), b=generate(B)))``
compiles to seven nodes. At the start the two blocks inside A and B are
ready; they finish inline, making components A and B, then generations
gA and gB ready. gA starts, hands off to a task; gB starts, hands off too.
When gA finishes, Combine waits for gB; when gB finishes, Combine is done
inline and gC starts.

Sampler nodes (``spangraph.sampling.sample``) run as tasks: the sampler
calls the engine through a view that reports each attempt (and each judge
call) as a node of its own under the sampler's node.

Guarantees
----------
- Every node runs at most once per attempt, after all its inputs are done.
- In-flight generations never exceed ``max_concurrency`` nor any engine's
  ``max_concurrency``.
- A node's result is on all its thunks (equal declarations share a node).
- Thunks that were done before the run are reused, not recomputed.

Failures and cancellation
-------------------------
A failed attempt whose error the ``RetryPolicy`` retries (transient engine
errors and timeouts by default) is queued again after its backoff; every
attempt is an event. Otherwise the node fails. With ``on_error="raise"``
the run's task group is cancelled: in-flight generations are cancelled
(their thunks say so), finished thunks keep their results, nodes that never
started stay pending, and ``NodeFailedError`` names the failing node's span
path, with the original error chained. With ``on_error="continue"`` every
node downstream of the failure is skipped (with the reason), every
independent branch finishes, and the run returns partial results.
Cancelling the run from outside (a cancelled task group, KeyboardInterrupt)
cancels in-flight generations the same way and leaves finished thunks as
they are. An error in the scheduler's own handling of a handed-off
generation (a bug, not an engine error) cancels the run and is raised from
it, rather than lost in a task nobody awaits.

Events
------
Everything observable goes out as events on the run's ``EventBus``
(``spangraph.events``): queued, started, finished, failed, retried, skipped,
cancelled, nodes added, cache hit. Progress bars, the run log and tests
subscribe there; nothing else is wired into this module.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import inspect
import random
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import anyio
import anyio.abc

from .. import events as ev
from ..engines import InferenceEngine, TransientEngineError
from ..engines._handoff import HANDOFF, Resumed, stepping
from ..nodes import ModelOutputThunk, ThunkState, is_span, render_span
from ._compile import SpanGraph
from ._policy import OnError, RetryPolicy
from ._task import TaskProducer, resolve, spans_in

PENDING, READY, RUNNING, DONE, FAILED, SKIPPED, CANCELLED = (
    "pending",
    "ready",
    "running",
    "done",
    "failed",
    "skipped",
    "cancelled",
)
_WORK = ("generation", "task", "sampler")


class Scheduler:
    """Executes one run of a ``SpanGraph``. Use ``spangraph.run``/``arun``."""

    def __init__(
        self,
        graph: SpanGraph,
        *,
        engine: Callable[[], InferenceEngine],
        max_concurrency: int | None,
        retry: RetryPolicy,
        timeout: float | None,
        on_error: OnError,
        bus: ev.EventBus,
    ) -> None:
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1 or None, got {max_concurrency}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got {timeout}")
        if on_error not in ("raise", "continue"):
            raise ValueError(f"on_error must be 'raise' or 'continue', got {on_error!r}")
        self.graph = graph
        self._engine_factory = engine
        self._default_engine: InferenceEngine | None = None
        self.max_concurrency = max_concurrency
        self.retry = retry
        self.timeout = timeout
        self.on_error = on_error
        self.bus = bus
        self._emit = bus.emit if bus.listening else None
        self._rng = random.Random(retry.seed)
        self._sleep = retry.sleep or anyio.sleep

        self.status: dict[str, str] = {}
        self.order: dict[str, int] = {}
        self._waiting: dict[str, int] = {}
        self._users: dict[str, list[str]] = {}
        self._attempt: dict[str, int] = {}
        self._dynamic_wait: dict[str, list[str]] = {}
        self._ready: list[tuple[int, str]] = []
        self._set_aside: list[tuple[int, str]] = []
        self._in_flight = 0
        self._in_flight_by_engine: dict[int, int] = {}
        self._prefixes: dict[str, str | None] = {}
        self._warming: dict[str, str] = {}
        self._draining = False
        self._tg: anyio.abc.TaskGroup | None = None
        self._inline = True
        # On asyncio, handed-off generations are plain asyncio tasks (a fifth of the
        # cost of a task-group task); ``execute`` waits for them and for the task
        # group's children (``_children``), and cancels them when the run is cancelled.
        self._handed: set[asyncio.Task[None]] = set()
        self._children = 0
        self._quiet: asyncio.Future[None] | None = None
        self._crash: BaseException | None = None

        self.errors: dict[str, BaseException] = {}
        self.skip_reasons: dict[str, str] = {}
        self.first_failure: str | None = None
        self.nodes_run = 0
        self.generations = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.attempts = 0
        self.dynamic_nodes = 0

        # The graph's node table, read directly on the hot path (no method call per lookup).
        self._info = graph._nodes
        self._add_nodes(list(graph))

    # -- building the state ---------------------------------------------------------

    def _add_nodes(self, node_ids: list[str]) -> None:
        """Take on nodes, in the graph's order (post-order: a node's inputs come first,
        so one pass sets every node's status, users and count of inputs not done)."""
        graph = self._info
        status, waiting, users, order = self.status, self._waiting, self._users, self.order
        emit = self._emit
        pending = ThunkState.PENDING
        new_ready: list[str] = []
        for node_id in node_ids:
            if node_id in status:
                continue
            info = graph[node_id]
            order[node_id] = len(order)
            users[node_id] = []
            thunks = info.thunks
            if thunks and info.kind in _WORK and _finished_before(thunks):
                status[node_id] = DONE
                waiting[node_id] = 0
                for src in info.inputs:
                    users[src].append(node_id)
            else:
                status[node_id] = PENDING
                for thunk in thunks:
                    if thunk.state is not pending:
                        thunk._reset()
                    thunk._claimed = True
                count = 0
                for src in info.inputs:
                    users[src].append(node_id)
                    if status[src] != DONE:
                        count += 1
                waiting[node_id] = count
                if count == 0:
                    new_ready.append(node_id)
            if emit is not None:
                emit(ev.NodeQueued(node_id, kind=info.kind))
        for node_id in new_ready:
            self._make_ready(node_id)

    def _make_ready(self, node_id: str) -> None:
        self.status[node_id] = READY
        heapq.heappush(self._ready, (self.order[node_id], node_id))

    # -- the main loop ---------------------------------------------------------------

    async def execute(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._inline = False  # not asyncio (trio): always start generations as tasks
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._drain()
                if self._inline:
                    await self._join_handed()
        finally:
            self._tg = None
            self._settle()
        if self._crash is not None:
            raise self._crash

    async def _join_handed(self) -> None:
        """Wait until no handed-off generation and no child of the task group is left
        (either may start the other). If the wait is cancelled (``on_error="raise"``,
        a cancelled caller, KeyboardInterrupt), cancel the handed-off generations and
        wait, shielded, until each has marked its thunk cancelled."""
        loop = asyncio.get_running_loop()
        try:
            while self._handed or self._children:
                self._quiet = loop.create_future()
                await self._quiet
        except BaseException:
            for task in self._handed:
                task.cancel()
            with anyio.CancelScope(shield=True):
                while self._handed:
                    await asyncio.wait(list(self._handed))
            raise
        finally:
            self._quiet = None

    def _hand_off(self, coro: Any) -> None:
        """Run a started generation's remainder as a plain asyncio task."""
        task = asyncio.get_running_loop().create_task(coro)
        self._handed.add(task)
        task.add_done_callback(self._handed_done)

    def _handed_done(self, task: asyncio.Task[None]) -> None:
        self._handed.discard(task)
        if not task.cancelled() and task.exception() is not None and self._crash is None:
            # A bug in the scheduler's own handling: stop the run and raise it from execute().
            self._crash = task.exception()
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
        self._wake()

    def _wake(self) -> None:
        quiet = self._quiet
        if quiet is not None and not self._handed and not self._children and not quiet.done():
            quiet.set_result(None)

    def _start_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Start a child of the run's task group (counted, so ``execute`` waits for it)."""
        assert self._tg is not None
        self._children += 1
        self._tg.start_soon(self._child, fn, args)

    async def _child(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            await fn(*args)
        finally:
            self._children -= 1
            self._wake()

    def _drain(self) -> None:
        """Start every ready node that capacity allows. Re-entrant calls just return:
        nodes made ready meanwhile are picked up by the loop already running."""
        if self._draining:
            return
        self._draining = True
        try:
            ready, status, graph = self._ready, self.status, self._info
            limit = self.max_concurrency
            by_engine = self._in_flight_by_engine
            pop = heapq.heappop
            while ready:
                _, node_id = pop(ready)
                if status[node_id] != READY:
                    continue
                kind = graph[node_id].kind
                if kind == "generation":
                    engine = self._engine_of(node_id)
                    # Capacity (the run's and the engine's), inline: this runs per generation.
                    base = engine._base
                    if (limit is not None and self._in_flight >= limit) or by_engine.get(
                        id(base), 0
                    ) >= max(1, base.max_concurrency):
                        self._set_aside.append((self.order[node_id], node_id))
                        continue
                    if engine.capabilities.kv_slots and self._prefix_warming(node_id, engine):
                        self._set_aside.append((self.order[node_id], node_id))
                        continue
                    self._start_generation(node_id, engine)
                elif kind == "task":
                    self._start_task(node_id)
                elif kind == "sampler":
                    self._start_sampler(node_id)
                else:
                    self._finish(node_id)
            if self._set_aside:
                for item in self._set_aside:
                    heapq.heappush(ready, item)
                self._set_aside.clear()
        finally:
            self._draining = False

    # -- capacity --------------------------------------------------------------------

    def _engine_of(self, node_id: str) -> InferenceEngine:
        """The node's own engine (``generate(engine=...)``), else the run's."""
        engine = getattr(self._info[node_id].span.producer, "engine", None)
        if engine is not None:
            return engine  # type: ignore[no-any-return]
        if self._default_engine is None:
            self._default_engine = self._engine_factory()
        return self._default_engine

    def _prefix_warming(self, node_id: str, engine: InferenceEngine) -> bool:
        """Prefix-aware ordering: while one generation warms a cached prefix,
        others with the same prefix wait (and other work goes ahead)."""
        if node_id not in self._prefixes:
            producer = self._info[node_id].span.producer
            try:
                state = engine._effective_state(producer.state)
                self._prefixes[node_id] = engine.prefix_key(producer.action, state)
            except Exception:
                self._prefixes[node_id] = None  # the generation itself will report it
        digest = self._prefixes[node_id]
        if digest is None or engine.prefix_ready(digest):
            return False
        owner = self._warming.get(digest)
        if owner is None or owner == node_id:
            self._warming[digest] = node_id
            return False
        return True

    def _reserve(self, engine: InferenceEngine) -> None:
        self._in_flight += 1
        key = id(engine._base)
        self._in_flight_by_engine[key] = self._in_flight_by_engine.get(key, 0) + 1

    def _release(self, engine: InferenceEngine, node_id: str | None = None) -> None:
        self._in_flight -= 1
        self._in_flight_by_engine[id(engine._base)] -= 1
        if node_id is not None and self._warming:
            digest = self._prefixes.get(node_id)
            if digest is not None and self._warming.get(digest) == node_id:
                del self._warming[digest]

    # -- generations -----------------------------------------------------------------

    def _start_generation(self, node_id: str, engine: InferenceEngine) -> None:
        thunk = self._info[node_id].thunks[0]
        attempt = self._attempt.get(node_id, 0) + 1
        self._attempt[node_id] = attempt
        self.status[node_id] = RUNNING
        self._reserve(engine)
        self.attempts += 1
        if self._emit is not None:
            self._emit(ev.NodeStarted(node_id, attempt=attempt))
        thunk._id = node_id
        coro = engine.generate(None, into=thunk)
        if not self._inline or self.timeout is not None:
            self._start_soon(self._finish_generation_task, node_id, engine, coro, HANDOFF)
            return
        token = stepping.set(True)
        try:
            first = coro.send(None)
        except StopIteration:
            self._release(engine, node_id)
            self._generation_done(node_id, thunk)
            return
        except anyio.get_cancelled_exc_class():
            self._release(engine, node_id)
            raise
        except Exception as exc:
            self._release(engine, node_id)
            self._attempt_failed(node_id, exc)
            return
        finally:
            stepping.reset(token)
        self._hand_off(self._finish_generation_task(node_id, engine, coro, first))

    async def _finish_generation_task(
        self, node_id: str, engine: InferenceEngine, coro: Any, first: Any
    ) -> None:
        thunk = self._info[node_id].thunks[0]
        try:
            with self._deadline():
                await Resumed(coro, first)
        except TimeoutError as exc:
            self._release(engine, node_id)
            error = self._timed_out(exc)
            thunk._set_failed(error)
            self._attempt_failed(node_id, error)
            self._drain()
            return
        except anyio.get_cancelled_exc_class():
            self._release(engine, node_id)
            self.status[node_id] = CANCELLED
            for alias in self._info[node_id].thunks:
                if not alias.state.finished:
                    alias._set_cancelled()
            if self._emit is not None:
                self._emit(ev.NodeCancelled(node_id))
            raise
        except Exception as exc:
            self._release(engine, node_id)
            self._attempt_failed(node_id, exc)
            self._drain()
            return
        self._release(engine, node_id)
        self._generation_done(node_id, thunk)
        self._drain()

    def _generation_done(self, node_id: str, thunk: ModelOutputThunk[Any]) -> None:
        self.generations += 1
        if thunk.cache_hit:
            self.cache_hits += 1
        elif thunk.meta and thunk.meta.get("cache") == "miss":
            self.cache_misses += 1
        self._finish(node_id)

    # -- tasks -----------------------------------------------------------------------

    def _begin(self, node_id: str) -> None:
        """Start an attempt of a task or sampler node: status, counters, event, thunks."""
        attempt = self._attempt.get(node_id, 0) + 1
        self._attempt[node_id] = attempt
        self.status[node_id] = RUNNING
        self.attempts += 1
        if self._emit is not None:
            self._emit(ev.NodeStarted(node_id, attempt=attempt))
        for thunk in self._info[node_id].thunks:
            thunk._set_running()

    def _start_task(self, node_id: str) -> None:
        producer = self._info[node_id].span.producer
        assert isinstance(producer, TaskProducer)
        self._begin(node_id)
        try:
            args = resolve(list(producer.args))
            kwargs = resolve(dict(producer.kwargs))
        except Exception as exc:
            self._attempt_failed(node_id, exc)
            return
        if producer.is_async or producer.thread:
            self._start_soon(self._run_task, node_id, producer, args, kwargs)
            return
        try:
            result = producer.fn(*args, **kwargs)
        except Exception as exc:
            self._attempt_failed(node_id, exc)
            return
        if inspect.isawaitable(result):
            self._start_soon(self._await_task_result, node_id, result)
            return
        self._task_returned(node_id, result)

    async def _run_task(
        self, node_id: str, producer: TaskProducer, args: list[Any], kwargs: dict[str, Any]
    ) -> None:
        if producer.thread:
            awaitable = anyio.to_thread.run_sync(lambda: producer.fn(*args, **kwargs))
        else:
            awaitable = producer.fn(*args, **kwargs)
        await self._await_task_result(node_id, awaitable)

    async def _await_task_result(self, node_id: str, awaitable: Any) -> None:
        try:
            with self._deadline():
                result = await awaitable
        except anyio.get_cancelled_exc_class():
            self._cancel_node(node_id)
            raise
        except TimeoutError as exc:
            self._attempt_failed(node_id, self._timed_out(exc))
            self._drain()
            return
        except Exception as exc:
            self._attempt_failed(node_id, exc)
            self._drain()
            return
        self._task_returned(node_id, result)
        self._drain()

    def _deadline(self) -> Any:
        """The per-node timeout (``anyio.fail_after``), or no limit."""
        return anyio.fail_after(self.timeout) if self.timeout is not None else nullcontext()

    def _timed_out(self, exc: TimeoutError) -> TransientEngineError:
        """A timed-out attempt counts as transient (the retry policy may retry it)."""
        error = TransientEngineError(f"timed out after {self.timeout} s")
        error.__cause__ = exc
        return error

    def _task_returned(self, node_id: str, result: Any) -> None:
        spans = spans_in(result)
        info = self._info[node_id]
        for thunk in info.thunks:
            thunk.meta["result"] = result
        if not spans:
            self._finish_task(node_id)
            return
        # Dynamic expansion: compile what the task returned into the running graph.
        try:
            root_ids, new_ids = self.graph.extend(spans, parent=node_id)
        except Exception as exc:
            self._attempt_failed(node_id, exc)
            return
        self.dynamic_nodes += len(new_ids)
        if self._emit is not None and new_ids:
            self._emit(ev.NodesAdded(node_id, count=len(new_ids)))
        self._add_nodes(new_ids)
        outstanding = [r for r in dict.fromkeys(root_ids) if self.status[r] != DONE]
        failed = [r for r in outstanding if self.status[r] in (FAILED, SKIPPED, CANCELLED)]
        if failed:
            self._fail_dynamic(node_id, failed[0])
            return
        if not outstanding:
            self._finish_task(node_id)
            return
        self._dynamic_wait[node_id] = outstanding
        self._waiting[node_id] = len(outstanding)
        for root in outstanding:
            self._users[root].append(node_id)

    def _finish_task(self, node_id: str) -> None:
        info = self._info[node_id]
        result = info.thunks[0].meta.get("result")
        try:
            parsed = resolve(result)
            text = _task_text(result)
        except Exception as exc:
            self._attempt_failed(node_id, exc)
            return
        for thunk in info.thunks:
            thunk._set_done(text, parsed)
        self._finish(node_id)

    def _fail_dynamic(self, node_id: str, child: str) -> None:
        error = self.errors.get(child) or RuntimeError(
            f"a node this task returned was {self.status[child]}"
        )
        self._attempt_failed(node_id, error, retry=False)

    # -- samplers ----------------------------------------------------------------------

    def _start_sampler(self, node_id: str) -> None:
        self._begin(node_id)
        self._start_soon(self._run_sampler, node_id)

    async def _run_sampler(self, node_id: str) -> None:
        from ._sample import AttemptEngine

        info = self._info[node_id]
        producer: Any = info.span.producer  # a spangraph.sampling.SamplerProducer
        engine = self._engine_of(node_id)
        if producer.state is not None:
            engine = producer.state(engine)
        attempts_engine = AttemptEngine(engine, node_id, self.graph.path_of(node_id), self._emit)
        try:
            with self._deadline():
                thunks = await producer.sampler(attempts_engine, producer.action)
            chosen = (producer.select or producer.sampler.select)(thunks)
        except anyio.get_cancelled_exc_class():
            self._cancel_node(node_id)
            raise
        except Exception as exc:
            attempts_engine.finish()
            self._attempt_failed(node_id, exc)
            self._drain()
            return
        attempts_engine.finish()
        for thunk in info.thunks:
            thunk._copy_result(chosen)
            thunk.meta["attempts"] = list(thunks)
            thunk.meta["selected"] = chosen
        self.generations += len(thunks)
        self.cache_hits += sum(1 for t in thunks if t.cache_hit)
        self._finish(node_id)
        self._drain()

    # -- finishing -------------------------------------------------------------------

    def _finish(self, node_id: str) -> None:
        """Mark ``node_id`` done and make ready each user whose inputs are now all done.

        A user that is pure (a block or component) is finished right here rather
        than queued: it has nothing to run, so it only costs a heap round trip.
        """
        status, info_of, waiting, emit = self.status, self._info, self._waiting, self._emit
        users_of, dynamic_wait, order = self._users, self._dynamic_wait, self.order
        ready, push = self._ready, heapq.heappush
        todo = [node_id]
        while todo:
            current = todo.pop()
            was = status[current]
            status[current] = DONE
            info = info_of[current]
            if info.kind in _WORK:
                self.nodes_run += 1
                thunks = info.thunks
                first = thunks[0]
                if len(thunks) > 1:
                    for alias in thunks[1:]:
                        alias._copy_result(first)
                for alias in thunks:
                    alias._claimed = False
                if emit is not None:
                    emit(ev.NodeFinished(current, cache_hit=first.cache_hit))
            elif was != DONE and emit is not None:
                emit(ev.NodeFinished(current))
            for user in users_of[current]:
                state = status[user]
                if state == PENDING:
                    left = waiting[user] - 1
                    waiting[user] = left
                    if left:
                        continue
                    if dynamic_wait and user in dynamic_wait:
                        del dynamic_wait[user]
                        self._finish_task(user)
                    elif info_of[user].kind in _WORK:
                        status[user] = READY
                        push(ready, (order[user], user))
                    else:
                        status[user] = READY
                        todo.append(user)
                elif state == RUNNING and user in dynamic_wait:
                    left = waiting[user] - 1
                    waiting[user] = left
                    if left == 0:
                        del dynamic_wait[user]
                        self._finish_task(user)

    def _attempt_failed(self, node_id: str, error: BaseException, *, retry: bool = True) -> None:
        attempt = self._attempt.get(node_id, 1)
        info = self._info[node_id]
        if retry and self.retry.should_retry(error, attempt):
            delay = self.retry.delay(attempt, self._rng)
            if self._emit is not None:
                self._emit(ev.NodeRetried(node_id, attempt=attempt, error=error, delay=delay))
            for thunk in info.thunks:
                thunk._reset()
                thunk._claimed = True
            self.status[node_id] = PENDING
            self._start_soon(self._retry_after, node_id, delay)
            return
        self.status[node_id] = FAILED
        self.errors[node_id] = error
        for thunk in info.thunks:
            if thunk.state is not ThunkState.FAILED:
                thunk._set_failed(error)
            thunk._claimed = False
        path = self.graph.path_of(node_id)
        if self._emit is not None:
            self._emit(ev.NodeFailed(node_id, error=error, path=path))
        if self.first_failure is None:
            self.first_failure = node_id
        if self.on_error == "raise":
            assert self._tg is not None
            self._tg.cancel_scope.cancel()
            return
        self._skip_downstream(node_id, f"input {path} failed: {type(error).__name__}: {error}")

    async def _retry_after(self, node_id: str, delay: float) -> None:
        if delay > 0:
            await self._sleep(delay)
        if self.status[node_id] == PENDING:
            self._make_ready(node_id)
            self._drain()

    def _skip_downstream(self, node_id: str, reason: str) -> None:
        todo = list(self._users[node_id])
        while todo:
            user = todo.pop()
            state = self.status[user]
            if state in (DONE, FAILED, SKIPPED, CANCELLED):
                continue
            if state == RUNNING and user in self._dynamic_wait:
                self._dynamic_wait.pop(user)
                self._attempt_failed(user, RuntimeError(reason), retry=False)
                continue
            self.status[user] = SKIPPED
            self.skip_reasons[user] = reason
            for thunk in self._info[user].thunks:
                thunk._set_skipped(reason)
                thunk._claimed = False
            if self._emit is not None:
                self._emit(ev.NodeSkipped(user, reason=reason))
            todo.extend(self._users[user])

    def _cancel_node(self, node_id: str) -> None:
        self.status[node_id] = CANCELLED
        for thunk in self._info[node_id].thunks:
            if not thunk.state.finished:
                thunk._set_cancelled()
            thunk._claimed = False
        if self._emit is not None:
            self._emit(ev.NodeCancelled(node_id))

    def _settle(self) -> None:
        """After the task group: nodes that never finished are released, not left claimed."""
        if collections.Counter(self.status.values())[DONE] == len(self.status):
            return  # the usual case, counted in C
        for node_id, state in self.status.items():
            if state in (DONE, FAILED, SKIPPED, CANCELLED):
                continue
            for thunk in self._info[node_id].thunks:
                thunk._claimed = False
                if thunk.state is ThunkState.RUNNING:
                    thunk._set_cancelled()
            if state == RUNNING:
                self.status[node_id] = CANCELLED


def _finished_before(thunks: list[ModelOutputThunk[Any]]) -> bool:
    for thunk in thunks:
        if thunk.state is ThunkState.DONE:
            for alias in thunks:
                if alias is not thunk and alias.state is not ThunkState.DONE:
                    alias._copy_result(thunk)
            return True
    return False


def _task_text(result: Any) -> str:
    """How a task's result appears in a prompt."""
    if is_span(result):
        return render_span(result).text
    if isinstance(result, list | tuple) and result and all(is_span(r) for r in result):
        return "\n".join(render_span(r).text for r in result)
    return str(result)
