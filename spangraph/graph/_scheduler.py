"""The dataflow scheduler: runs a ``SpanGraph``'s nodes as their inputs finish.

How a node is run, why each way exists, the fast paths with the tests that
hold them to their reference paths, and the figures behind them:
``docs/design/scheduler.md``.

State
-----
The compiled graph is a value: its ``NodeInfo`` objects hold only what
``compile()`` found (a node's inputs, thunks, the nodes that use it
(``_users``), its position in the graph's topological order (``_order``),
whether it is work). A run keeps its own state, in lists indexed by that
position:

- ``_by_order``: the node at each position;
- ``_status``: pending, ready, running, done, failed, skipped or cancelled;
- ``_waiting``: how many of its inputs are not done yet;
- ``_attempt_of``: its attempt number;

and ``_done``, how many nodes are done. So finishing a node walks its users'
positions, with no lookup by id, and two runs of one graph never meet
(``arun`` runs a graph that another run holds on a copy of its spans:
``SpanGraph.instance()``). A run whose work is all to do starts from two
lists ``compile()`` recorded (each node's count of inputs, the nodes without
inputs) and only claims its thunks (``_take_fresh``); any other run works
out every node's state in one pass in the graph's order (``_add_nodes``).
Edges added at run time (a task waiting for the spans it returned) are the
run's own too (``_dynamic_wait``, ``_dynamic_users``). Ready nodes sit in
one heap of positions (``_ready``). Capacity is two counters: generations
in flight in the whole run, and per engine (a view made with
``state(engine)`` shares its engine's budget). Only a handed-off generation
is in flight: one that finishes inline overlaps nothing.

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
set aside until the prefix is warm (``InferenceEngine.wait_prefix_ready``:
saved, while the claiming generation still decodes) or the claiming one
ends, so the prefix is prefilled once and then fans out over every slot,
while generations with other prefixes run meanwhile.

Execution
---------
One loop (``_drain``) starts every ready node that capacity allows, each by
its kind:

- A block or component is pure: it is done as soon as its inputs are.
  Finishing a node finishes its pure users on the spot (``_finish``), and
  theirs in turn, with no heap round trip.
- A generation is started inline and handed off if it has to wait
  (``_start_generation``). The protocol runs in the scheduler's own loop as
  far as it goes without waiting (``InferenceEngine._start``: options,
  render, the output-cache lookup and, for an engine that completes inline,
  its primitive, driven by the run's ``InlineDriver``), so a generation that
  never waits (an instant engine, an output-cache hit) ends there, with no
  task. What is left is handed off (``_hand_off``): it runs in a task of its
  own under the per-node timeout, and holds a unit of capacity until it
  ends. The tasks for a drain loop's hand-offs are made when the loop ends,
  so the generations of a fan-out start back to back. On asyncio they are
  plain asyncio tasks; the scheduler keeps the set of them, waits for them
  (and for its task group's children: either may start the other) before the
  run ends, and cancels them when the run is cancelled. On trio they are
  tasks of the run's task group, and nothing of a generation runs inline:
  what is handed off is the whole protocol. Either way the attempt ends in
  ``_generation_done`` (done) or ``_attempt_failed``.
- A task (``@task``) runs inline when it is sync, as a task of the run's
  task group when it is async, and in a worker thread with ``thread=True``.
- A sampler (``spangraph.sampling.sample``) runs as a task of the run's
  task group: the sampler calls the engine through a view that reports each
  attempt (and each judge call) as a node of its own under the sampler's.

Whatever waits in a task (a handed-off generation, an async or thread task,
a sampler) ends its attempt through one rule, ``_attempt_in_task``: the
per-node timeout, and what a return, a timeout, an error or a cancellation
does to the node.

Worked example: ``c = generate(Combine(a=generate(A(x=CBlock("a"))),
b=generate(A(x=CBlock("b")))))`` compiles to eight nodes, in this order: a
block, A, gA, a block, A, gB, Combine, gC. At the start the two blocks are
ready. The first finishes, and A above it with it, making gA ready; gA
starts and, on an engine that waits, is handed off. The second block makes
gB ready the same way, and gB is handed off too; the drain loop ends and
their two tasks are made. When gA finishes, Combine still waits for gB;
when gB finishes, Combine is done on the spot and gC starts.

Guarantees
----------
- Every node runs at most once per attempt, after all its inputs are done.
- In-flight generations never exceed ``max_concurrency`` nor any engine's
  ``max_concurrency``.
- A node's result is on all its thunks (equal declarations share a node).
- Thunks that were done before the run are reused, not recomputed.

Failures and cancellation
-------------------------
The per-node timeout (``timeout=``) bounds what an attempt awaits: a
handed-off generation's rest, an async task, a sampler (what runs inline
never waits, so there is nothing there to time out); a timed-out attempt
fails with a ``TransientEngineError``. A failed attempt whose error the
``RetryPolicy`` retries (transient engine errors and timeouts by default) is
queued again after its backoff; every attempt is an event. Otherwise the
node fails. With ``on_error="raise"``
the run stops at once (``_stopped``): from then on nothing new starts, not a
node, a retry nor a hand-off, whatever finishes late (a shielded task, a
retry's sleep that ignored the cancellation, a generation whose answer was
already on its way). The run's task group is cancelled: in-flight
generations are cancelled (their thunks say so), finished thunks keep their
results (a result that arrives late is kept too), nodes that never started
stay pending and are released (whoever awaits them learns that no run holds
them), and ``NodeFailedError`` names the failing node's span path, with the
original error chained. With ``on_error="continue"`` every node downstream
of the failure is skipped (with the reason), every independent branch
finishes, and the run returns partial results. Cancelling the run from
outside (a cancelled task group, KeyboardInterrupt) stops it the same way.
A thunk never leaves a final state (done, failed, cancelled, skipped): its
writers ignore a late result; only a new run of the node, or a retry of a
failed attempt, resets it to pending. An error in the scheduler's own
handling of a handed-off generation (a bug, not an engine error) cancels
the run and is raised from it, rather than lost in a task nobody awaits;
any single error that leaves the run's task group is raised as itself,
never inside an ``ExceptionGroup`` of one.

Events
------
Everything observable goes out as events on the run's ``EventBus``
(``spangraph.events``): queued, started, finished, failed, retried, skipped,
cancelled, nodes added, cache hit. Progress bars, the run log and tests
subscribe there; nothing else is wired into this module. The frequent ones
(queued, started, finished) are built only when some listener takes their
type (``EventBus.emitter``). Events about pure nodes (queued, finished,
skipped) go only to listeners that did not subscribe ``work_only`` (the
tracer does: pure nodes have no span), and are built only for such a one.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import inspect
import random
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.abc

from .. import events as ev
from ..engines import InferenceEngine, TransientEngineError
from ..engines._internal import InlineDriver
from ..nodes import ModelOutputThunk, ThunkState
from ..nodes._internal import is_span
from ._compile import (
    CANCELLED,
    DONE,
    FAILED,
    INTERRUPTED,
    PENDING,
    READY,
    RUNNING,
    SKIPPED,
    NodeInfo,
    SpanGraph,
)
from ._executor import Executor
from ._interrupt import Answers, Interrupt, InterruptSignal, TaskCall, _current
from ._policy import OnError, RetryPolicy
from ._task import TaskProducer, materialise, resolve, spans_in, task_text

_FINAL = (DONE, FAILED, SKIPPED, CANCELLED, INTERRUPTED)
_THUNK_DONE = ThunkState.DONE

#: What a handed-off generation's task awaits: the protocol from where it stopped.
_Rest = Callable[[], Awaitable[Any]]
_T = TypeVar("_T")


def check_run_policy(
    max_concurrency: int | None,
    timeout: float | None,
    on_error: OnError,
    retry: RetryPolicy,
) -> None:
    """Refuse a run that cannot start (bad limits or policies), before anything of it
    has begun: ``arun`` asks before it opens the run's span."""
    if max_concurrency is not None and (
        isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int)
    ):
        raise TypeError(f"max_concurrency must be an int or None, got {max_concurrency!r}")
    if max_concurrency is not None and max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1 or None, got {max_concurrency}")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds or None, got {timeout}")
    if on_error not in ("raise", "continue"):
        raise ValueError(f"on_error must be 'raise' or 'continue', got {on_error!r}")
    if not isinstance(retry, RetryPolicy):
        raise TypeError(f"retry= takes a RetryPolicy, got {type(retry).__name__}")


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
        answers: Answers | None = None,
        executor: Executor | None = None,
    ) -> None:
        check_run_policy(max_concurrency, timeout, on_error, retry)
        self.graph = graph
        #: The answers to interrupts the run was given, and the interrupts it met.
        self.answers = answers if answers is not None else Answers()
        self.interrupts: list[Interrupt] = []
        self._engine_factory = engine
        #: Where generations run (``None``: here): it gives the engine each one calls.
        self._executor = executor
        self._default_engine: InferenceEngine | None = None
        self.max_concurrency = max_concurrency
        self.retry = retry
        self.timeout = timeout
        self.on_error = on_error
        self.bus = bus
        # What to call with each kind of event, or None where nobody listens (then the
        # event is not even built): bound to the bus's listeners when the run starts.
        self._emit: Callable[[ev.Event], None] | None = None
        self._emit_pure: Callable[[ev.Event], None] | None = None
        self._emit_queued: Callable[[ev.Event], None] | None = None
        self._emit_queued_pure: Callable[[ev.Event], None] | None = None
        self._emit_started: Callable[[ev.Event], None] | None = None
        self._emit_finished: Callable[[ev.Event], None] | None = None
        self._emit_finished_pure: Callable[[ev.Event], None] | None = None
        #: Drives the primitives of engines that complete inline (see InlineDriver).
        self._driver = InlineDriver()
        self._rng = random.Random(retry.seed)
        self._sleep = retry.sleep or anyio.sleep

        # The run's state, apart from the graph (which stays a value: a graph another
        # run holds is run on a copy, see SpanGraph.instance): by each node's position
        # in the graph's order, the node, its status, how many of its inputs are not
        # done, and its attempt number. The ready heap holds positions.
        self._by_order: list[NodeInfo] = []
        self._status: list[str] = []
        self._waiting: list[int] = []
        self._attempt_of: list[int] = []
        self._done = 0
        #: Task nodes waiting for the spans they returned (by id), and those spans'
        #: extra users (the tasks): edges of this run only, not of the graph.
        self._dynamic_wait: dict[str, list[NodeInfo]] = {}
        self._dynamic_users: dict[str, list[NodeInfo]] = {}
        self._ready: list[int] = []
        self._set_aside: list[int] = []
        self._in_flight = 0
        self._in_flight_by_engine: dict[int, int] = {}
        self._prefixes: dict[str, str | None] = {}
        self._warming: dict[str, str] = {}
        #: Per prefix being warmed, the scope of the task that waits for it to be warm.
        self._warm_watchers: dict[str, anyio.CancelScope] = {}
        self._draining = False
        self._tg: anyio.abc.TaskGroup | None = None
        #: Set in ``execute``: on asyncio, generations start inline and hand-offs are
        #: plain asyncio tasks; elsewhere (trio) every generation is handed off whole,
        #: to a task of the run's task group.
        self._on_asyncio = True
        #: The drain loop's hand-offs (node, engine, rest), until the loop ends.
        self._to_hand_off: list[tuple[NodeInfo, InferenceEngine, _Rest]] = []
        #: The hand-offs' asyncio tasks not ended yet, and the task group's children
        #: not ended yet: ``execute`` waits for both (either may start the other).
        self._handed: set[asyncio.Task[None]] = set()
        self._children = 0
        self._quiet: anyio.Event | None = None
        self._crash: BaseException | None = None
        #: The run is failing (``on_error="raise"``), cancelled or over: nothing new
        #: starts (no node, retry or hand-off), whatever finishes late.
        self._stopped = False
        self._closed = False

        self.errors: dict[str, BaseException] = {}
        self.skip_reasons: dict[str, str] = {}
        self.first_failure: str | None = None
        self.generations = 0
        # Counted where they finish, so that finishing a node counts nothing: tasks and
        # samplers that finished, and the generations that samplers' attempts made.
        self._other_nodes = 0
        self._sampled = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.attempts = 0
        self.dynamic_nodes = 0

        # The graph's node table, read directly (no method call per lookup).
        self._info = graph._nodes
        graph._running += 1

    def close(self) -> None:
        """Let go of the graph (``execute`` does it; so may its caller); once only."""
        if not self._closed:
            self._closed = True
            self.graph._running -= 1

    @property
    def nodes_run(self) -> int:
        """Work nodes (generations, tasks, samplers) this run finished."""
        return self.generations - self._sampled + self._other_nodes

    def status_counts(self) -> collections.Counter[str]:
        """How many nodes are in each status."""
        if self._done == len(self._by_order):
            return collections.Counter({DONE: self._done})  # the usual case, without a walk
        return collections.Counter(self._status)

    # -- building the state ---------------------------------------------------------

    def _add_nodes(self, nodes: list[NodeInfo]) -> None:
        """Take on new nodes, in the graph's order (post-order: a node's inputs come
        first, so one pass sets every node's status and count of inputs not done).

        Ready nodes are appended to the ready heap: their positions come in
        increasing order, after every position already in it (dynamic nodes are
        numbered after the graph's), so the list stays a heap.
        """
        by_order, ready, info = self._by_order, self._ready, self._info
        status, waiting = self._status, self._waiting
        work, pure = self._emit_queued, self._emit_queued_pure
        pending = ThunkState.PENDING
        assert not nodes or nodes[0]._order == len(by_order), "nodes come in the graph's order"
        by_order.extend(nodes)
        status.extend([PENDING] * len(nodes))
        waiting.extend([0] * len(nodes))
        self._attempt_of.extend([0] * len(nodes))
        for node in nodes:
            emit = work if node._work else pure
            thunks = node.thunks
            if thunks:
                first = thunks[0]
                if first.state is pending and not node._aliased:
                    first._claimed = True
                elif self._claim(node):
                    if emit is not None:
                        emit(ev.NodeQueued(node.id, kind=node.kind))
                    continue  # finished before this run: its result is reused
            inputs = node.inputs
            if self._done:  # some node is done (finished before, or dynamic nodes)
                count = 0
                for src in inputs:
                    if status[info[src]._order] is not DONE:
                        count += 1
            else:
                count = len(inputs)
            order = node._order
            waiting[order] = count
            if not count:
                status[order] = READY
                ready.append(order)
            if emit is not None:
                emit(ev.NodeQueued(node.id, kind=node.kind))

    def _take_fresh(self, graph: SpanGraph) -> bool:
        """Take on a graph whose work is all to do (every work node a lone pending
        thunk, no dynamic node): its state is what ``compile()`` recorded (each
        node's count of inputs, the nodes without inputs ready), made with list
        copies, and only its thunks are claimed. False (nothing taken on) otherwise:
        ``_add_nodes`` then works out every node's state."""
        if graph._aliased or len(graph._input_counts) != len(graph._nodes):
            return False
        pending = ThunkState.PENDING
        for thunk in graph._work_thunks:
            if thunk.state is not pending:
                return False  # (the claims made so far, _add_nodes makes again)
            thunk._claimed = True
        nodes = list(graph.nodes())
        count = len(nodes)
        self._by_order.extend(nodes)
        self._waiting.extend(graph._input_counts)
        self._attempt_of.extend([0] * count)
        status = self._status
        status.extend([PENDING] * count)
        for order in graph._leaves:
            status[order] = READY
        self._ready.extend(graph._leaves)  # increasing positions: a heap already
        work, pure = self._emit_queued, self._emit_queued_pure
        if work is not None or pure is not None:
            for node in nodes:
                emit = work if node._work else pure
                if emit is not None:
                    emit(ev.NodeQueued(node.id, kind=node.kind))
        return True

    def _claim(self, node: NodeInfo) -> bool:
        """A node whose thunks are not one fresh thunk: True if it is done already (a
        thunk of it finished before the run: the others get its result), else its
        thunks are reset to pending and claimed by this run."""
        thunks = node.thunks
        if node._work and _finished_before(thunks):
            self._status[node._order] = DONE
            self._done += 1
            return True
        for thunk in thunks:
            if thunk.state is not ThunkState.PENDING:
                thunk._reset()
            thunk._claimed = True
        return False

    def _make_ready(self, node: NodeInfo) -> None:
        self._status[node._order] = READY
        heapq.heappush(self._ready, node._order)

    # -- the main loop ---------------------------------------------------------------

    def _listen(self) -> None:
        """Bind the run's emitters to the bus's listeners, as the run starts (so a
        listener subscribed any time before it gets every event). The bus's
        ``emitter(kind)`` is the one guard: ``None`` when nobody takes that kind of
        event (about a pure node, with ``pure``), and the event is then not built."""
        bus = self.bus
        self._emit = bus.emit if bus.listening else None
        self._emit_pure = bus.emit_pure if bus.listening else None
        self._emit_queued = bus.emitter(ev.NodeQueued)
        self._emit_queued_pure = bus.emitter(ev.NodeQueued, pure=True)
        self._emit_started = bus.emitter(ev.NodeStarted)
        self._emit_finished = bus.emitter(ev.NodeFinished)
        self._emit_finished_pure = bus.emitter(ev.NodeFinished, pure=True)

    async def execute(self) -> None:
        """Run the graph: bind the listeners, take the nodes on (claiming their
        thunks), then start what is ready, until nothing is left to do."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._on_asyncio = False  # (trio)
        error: BaseException | None = None
        try:
            self._listen()
            if not self._take_fresh(self.graph):
                self._add_nodes(list(self.graph.nodes()))
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._drain()
                await self._join()
        except BaseExceptionGroup as group:
            # anyio wraps whatever leaves a task group; a lone error is raised as itself
            # (below, outside this handler, so that the group is not its context).
            error = _lone_error(group)
            if error is None:
                raise
        finally:
            self._stopped = True
            self._tg = None
            self._settle()
            self.close()
        if error is not None:
            raise error
        if self._crash is not None:
            raise self._crash

    async def _join(self) -> None:
        """Wait until no handed-off generation and no child of the task group is left
        (either may start the other). If the wait is cancelled (``on_error="raise"``,
        a cancelled caller, KeyboardInterrupt), the run stops: nothing new starts
        from then on (``_stopped``), the handed-off generations are cancelled, and
        the wait goes on, shielded, until each has marked its thunk cancelled."""
        try:
            while self._handed or self._children:
                self._quiet = anyio.Event()
                await self._quiet.wait()
        except BaseException:
            self._stopped = True
            for task in self._handed:
                task.cancel()
            with anyio.CancelScope(shield=True):
                while self._handed:
                    await asyncio.wait(list(self._handed))
            raise
        finally:
            self._quiet = None

    def _wake(self) -> None:
        quiet = self._quiet
        if quiet is not None and not self._handed and not self._children:
            quiet.set()

    def _start_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Start a child of the run's task group (counted, so ``execute`` waits for it);
        none once the run has stopped."""
        if self._stopped or self._tg is None:
            return
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
        nodes made ready meanwhile are picked up by the loop already running. Once the
        run has stopped (failing with ``on_error="raise"``, cancelled, or over), nothing
        starts: a result that arrives late (a shielded task, say) is kept on its
        thunk, and what it made ready stays unstarted."""
        if self._draining or self._stopped:
            return
        self._draining = True
        try:
            ready, by_order, set_aside = self._ready, self._by_order, self._set_aside
            status = self._status
            pop = heapq.heappop
            # ``while True``, not ``while ready``: docs/design/scheduler.md says why.
            while True:
                if not ready or self._stopped:
                    break
                order = pop(ready)
                if status[order] is not READY:
                    continue
                node = by_order[order]
                kind = node.kind
                if kind == "generation":
                    engine = self._engine_of(node)
                    # Capacity is held only by generations handed off to tasks: with none
                    # in flight, every limit has room (and this runs per generation).
                    if self._in_flight and self._at_capacity(engine):
                        set_aside.append(order)
                        continue
                    if engine.capabilities.kv_slots and self._prefix_warming(node.id, engine):
                        set_aside.append(order)
                        continue
                    self._start_generation(node, engine)
                elif kind == "task" or kind == "tool":
                    self._start_task(node)
                elif kind == "sampler":
                    self._start_sampler(node)
                else:
                    self._finish(node)
            if set_aside:
                for order in set_aside:
                    heapq.heappush(ready, order)
                set_aside.clear()
        finally:
            self._draining = False
            if self._to_hand_off:
                self._make_handed_tasks()

    # -- capacity --------------------------------------------------------------------

    def _engine_of(self, node: NodeInfo) -> InferenceEngine:
        """The node's own engine (``generate(engine=...)``), else the run's."""
        engine: InferenceEngine | None = node.span.producer.engine
        if engine is None:
            engine = self._default_engine or self._run_engine()
        executor = self._executor
        return engine if executor is None else executor.engine(engine)

    def _run_engine(self) -> InferenceEngine:
        """The run's engine, made on first use (a run of cached nodes may need none)."""
        if self._default_engine is None:
            self._default_engine = self._engine_factory()
        return self._default_engine

    def _at_capacity(self, engine: InferenceEngine) -> bool:
        """Whether the run's limit or the engine's is reached (a view made with
        ``state(engine)`` counts against its engine's budget)."""
        base = engine._base
        limit = self.max_concurrency
        return (limit is not None and self._in_flight >= limit) or self._in_flight_by_engine.get(
            id(base), 0
        ) >= max(1, base.max_concurrency)

    def _reserve(self, engine: InferenceEngine) -> None:
        """A generation handed off to a task holds a unit of capacity (``_release``)."""
        self._in_flight += 1
        by_engine, key = self._in_flight_by_engine, id(engine._base)
        by_engine[key] = by_engine.get(key, 0) + 1

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
        if digest not in self._warm_watchers:
            self._warm_watchers[digest] = scope = anyio.CancelScope()
            self._start_soon(self._fan_out_when_warm, digest, engine, scope)
        return True

    async def _fan_out_when_warm(
        self, digest: str, engine: InferenceEngine, scope: anyio.CancelScope
    ) -> None:
        """Warm a prefix once, then fan out: once the engine says the prefix is warm
        (in a slot, or saved), the generations set aside for it start, while the one
        that warmed it may still be decoding. Cancelled when that one ends first
        (``_unwarm``: the prefix is free then, warm or not)."""
        with scope:
            await engine.wait_prefix_ready(digest)
        if self._warm_watchers.get(digest) is not scope:
            return  # the warming generation ended first (the wait may have ended too)
        del self._warm_watchers[digest], self._warming[digest]
        self._drain()

    def _release(self, engine: InferenceEngine, node: NodeInfo) -> None:
        self._in_flight -= 1
        self._in_flight_by_engine[id(engine._base)] -= 1
        if self._warming:
            self._unwarm(node)

    def _unwarm(self, node: NodeInfo) -> None:
        """The generation that warmed a cached prefix has ended: the prefix is free."""
        digest = self._prefixes.get(node.id)
        if digest is not None and self._warming.get(digest) == node.id:
            del self._warming[digest]
            watcher = self._warm_watchers.pop(digest, None)
            if watcher is not None:
                watcher.cancel()

    # -- attempts --------------------------------------------------------------------

    def _begin_attempt(self, node: NodeInfo) -> None:
        """Start an attempt of a node: its status, attempt number, the run's count,
        the event. (A generation's thunk is set running by the protocol.)"""
        order = node._order
        attempt = self._attempt_of[order] + 1
        self._attempt_of[order] = attempt
        self._status[order] = RUNNING
        self.attempts += 1
        if self._emit_started is not None:
            self._emit_started(ev.NodeStarted(node.id, attempt=attempt))

    def _begin(self, node: NodeInfo) -> None:
        """Start an attempt of a task or sampler node: the attempt, and its thunks."""
        self._begin_attempt(node)
        for thunk in node.thunks:
            thunk._set_running()

    async def _attempt_in_task(
        self, node: NodeInfo, work: Awaitable[_T], done: Callable[[_T], None]
    ) -> None:
        """Await ``work``, the part of ``node``'s attempt that waits, in a task, under
        the per-node timeout; end the attempt by how it ended, then start what is
        ready. Returned: ``done(result)``. Timed out: a transient failure (the retry
        policy may retry it). Raised: the attempt failed. Cancelled: the node is
        cancelled, and the cancellation goes on."""
        try:
            with self._deadline():
                result = await work
        except anyio.get_cancelled_exc_class():
            self._cancel_node(node)
            raise
        except InterruptSignal as signal:
            self._interrupted(node, signal.interrupt)
        except TimeoutError as exc:
            # A failure, whatever the thunks say: a protocol that saw the cancellation
            # has marked its thunk cancelled.
            for thunk in node.thunks:
                thunk._reset()
            self._attempt_failed(node, self._timed_out(exc))
        except Exception as exc:
            self._attempt_failed(node, exc)
        else:
            done(result)
        self._drain()

    def _deadline(self) -> Any:
        """The per-node timeout (``anyio.fail_after``), or no limit."""
        return anyio.fail_after(self.timeout) if self.timeout is not None else nullcontext()

    def _timed_out(self, exc: TimeoutError) -> TransientEngineError:
        """A timed-out attempt counts as transient (the retry policy may retry it)."""
        error = TransientEngineError(f"timed out after {self.timeout} s")
        error.__cause__ = exc
        return error

    # -- generations -----------------------------------------------------------------

    def _start_generation(self, node: NodeInfo, engine: InferenceEngine) -> None:
        """Start an attempt of a generation, the one way: the protocol runs inline as
        far as it goes without waiting (``InferenceEngine._start``), and what is left
        is handed off (``_hand_off``). A generation that never waits ends here.
        On trio nothing of it runs inline: what is left is the whole protocol."""
        self._begin_attempt(node)
        thunk = node.thunks[0]
        if not self._on_asyncio:
            self._hand_off(node, engine, partial(engine.generate, None, into=thunk))
            return
        rest = engine._start(thunk, self._driver)
        if rest is not None:
            self._hand_off(node, engine, rest)
            return
        if self._warming:
            self._unwarm(node)  # (a handed-off generation does it in _release)
        if thunk.state is _THUNK_DONE:
            self._generation_done(node, thunk)
        else:
            assert thunk.error is not None
            self._attempt_failed(node, thunk.error)

    def _generation_done(self, node: NodeInfo, thunk: ModelOutputThunk[Any]) -> None:
        """A generation's attempt ended with its thunk done (inline or handed off)."""
        self.generations += 1
        if thunk.cache_hit:
            self.cache_hits += 1
        elif thunk._facts is not None and thunk._facts.memo == "miss":
            self.cache_misses += 1
        self._finish(node)

    # -- the hand-off ----------------------------------------------------------------

    def _hand_off(self, node: NodeInfo, engine: InferenceEngine, rest: _Rest) -> None:
        """Finish a started generation in a task of its own: ``rest``, the protocol
        from where it stopped, under the per-node timeout. The generation holds a
        unit of capacity until the task ends (``_release``). The tasks are made when
        the drain loop ends (``_make_handed_tasks``)."""
        self._reserve(engine)
        self._to_hand_off.append((node, engine, rest))

    def _make_handed_tasks(self) -> None:
        """Start the tasks of the drain loop's hand-offs: plain asyncio tasks on
        asyncio (``execute`` waits for them, ``_join`` cancels them), tasks of the
        run's task group on other backends (trio). Their first steps would run on a
        later turn of the event loop anyway, and the generations started after them
        in the loop (whose timers, requests and the like are already under way)
        started sooner, not a task creation later each. None once the run has stopped."""
        if self._stopped:
            self._to_hand_off.clear()
            return
        if self._on_asyncio:
            create_task, handed = asyncio.get_running_loop().create_task, self._handed
            for node, engine, rest in self._to_hand_off:
                task = create_task(self._finish_handed_off(node, engine, rest))
                handed.add(task)
                task.add_done_callback(self._handed_done)
        else:
            for node, engine, rest in self._to_hand_off:
                self._start_soon(self._finish_handed_off, node, engine, rest)
        self._to_hand_off.clear()

    def _handed_done(self, task: asyncio.Task[None]) -> None:
        self._handed.discard(task)
        if not task.cancelled() and task.exception() is not None and self._crash is None:
            # A bug in the scheduler's own handling: stop the run and raise it from execute().
            self._crash = task.exception()
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
        self._wake()

    async def _finish_handed_off(
        self, node: NodeInfo, engine: InferenceEngine, rest: _Rest
    ) -> None:
        """A handed-off generation's task: the rest of the protocol, as the node's attempt."""
        work = self._rest_of_generation(node, engine, rest)
        await self._attempt_in_task(node, work, partial(self._generation_done, node))

    async def _rest_of_generation(
        self, node: NodeInfo, engine: InferenceEngine, rest: _Rest
    ) -> ModelOutputThunk[Any]:
        """Await the rest of a handed-off generation; its unit of capacity is given back
        as soon as it ends, however it ends (before the drain that follows)."""
        try:
            await rest()
        finally:
            self._release(engine, node)
        return node.thunks[0]

    # -- tasks -----------------------------------------------------------------------

    def _start_task(self, node: NodeInfo) -> None:
        producer = node.span.producer
        assert isinstance(producer, TaskProducer)
        self._begin(node)
        try:
            args = resolve(list(producer.args))
            kwargs = resolve(dict(producer.kwargs))
        except Exception as exc:
            self._attempt_failed(node, exc)
            return
        if producer.is_async or producer.thread or producer.where != "driver":
            self._start_soon(self._run_task, node, producer, args, kwargs)
            return
        token = _current.set(self._task_call(node))
        try:
            result = producer.call(args, kwargs)
        except InterruptSignal as signal:
            self._interrupted(node, signal.interrupt)
            return
        except Exception as exc:
            self._attempt_failed(node, exc)
            return
        finally:
            _current.reset(token)
        # Spans first: a pending thunk is awaitable too, and awaiting it is not how a
        # span a task returned is run (it joins this run's graph, in _task_returned).
        if not is_span(result) and (inspect.isawaitable(result) or inspect.isasyncgen(result)):
            self._start_soon(self._await_task_result, node, result)
            return
        self._task_returned(node, result)

    async def _run_task(
        self, node: NodeInfo, producer: TaskProducer, args: list[Any], kwargs: dict[str, Any]
    ) -> None:
        """An async task's attempt, a thread task's or a cluster task's, in a task of the
        run's task group."""
        _current.set(self._task_call(node))  # (this task's own context)
        if producer.where == "cluster":
            work = _call_on_cluster(self._executor, producer, args, kwargs)
        else:
            work = _call_task(producer, args, kwargs)
        await self._attempt_in_task(node, work, partial(self._task_returned, node))

    async def _await_task_result(self, node: NodeInfo, returned: Any) -> None:
        """A sync task returned an awaitable or an async generator: awaiting it is the
        rest of its attempt, in a task of the run's task group."""
        _current.set(self._task_call(node))  # (this task's own context)
        await self._attempt_in_task(node, _result_of(returned), partial(self._task_returned, node))

    def _task_returned(self, node: NodeInfo, result: Any) -> None:
        """A task's attempt returned ``result``: the spans in it join this run's graph
        (and the task waits for them), else the task is done."""
        try:
            result = materialise(result)  # one-shot iterators, walked more than once below
        except Exception as exc:
            self._attempt_failed(node, exc)
            return
        spans = spans_in(result)
        for thunk in node.thunks:
            thunk.facts.result = result
        if not spans:
            self._finish_task(node)
            return
        # Dynamic expansion: compile what the task returned into the running graph.
        try:
            root_ids, new_ids = self.graph.extend(spans, parent=node.id)
        except Exception as exc:
            self._attempt_failed(node, exc)
            return
        self.dynamic_nodes += len(new_ids)
        if self._emit is not None and new_ids:
            self._emit(ev.NodesAdded(node.id, count=len(new_ids)))
        self._add_nodes([self._info[node_id] for node_id in new_ids])
        nodes, status = self._info, self._status
        outstanding = [
            nodes[r] for r in dict.fromkeys(root_ids) if status[nodes[r]._order] is not DONE
        ]
        failed = [r for r in outstanding if status[r._order] in (FAILED, SKIPPED, CANCELLED)]
        if failed:
            self._fail_dynamic(node, failed[0])
            return
        if not outstanding:
            self._finish_task(node)
            return
        self._dynamic_wait[node.id] = outstanding
        self._waiting[node._order] = len(outstanding)
        for root in outstanding:
            self._dynamic_users.setdefault(root.id, []).append(node)

    def _finish_task(self, node: NodeInfo) -> None:
        result = node.thunks[0].facts.result
        try:
            parsed = resolve(result)
            text = task_text(result)
        except Exception as exc:
            self._attempt_failed(node, exc)
            return
        for thunk in node.thunks:
            thunk._set_done(text, parsed)
        if node.kind == "tool":  # a tool's result from the memo (graph/_tools.py)
            hit = bool(getattr(parsed, "cached", False))
            for thunk in node.thunks:
                thunk.cache_hit = hit
        self._other_nodes += 1
        self._finish(node)

    def _fail_dynamic(self, node: NodeInfo, child: NodeInfo) -> None:
        error = self.errors.get(child.id) or RuntimeError(
            f"a node this task returned was {self._status[child._order]}"
        )
        self._attempt_failed(node, error, retry=False)

    # -- interrupts --------------------------------------------------------------------

    def _task_call(self, node: NodeInfo) -> TaskCall:
        """What ``interrupt()`` in the body of ``node`` (a task) needs to know."""
        producer = node.span.producer
        return TaskCall(
            node_id=node.id,
            path=partial(self.graph.path_of, node.id),
            label=producer.given_label or producer.label,
            answers=self.answers,
            unstable=lambda: self._unstable(node.id),
        )

    def _unstable(self, node_id: str) -> str | None:
        """Why a node's id may differ in another process: a task of its own or
        upstream (its parts, whose ids its id is made of; not the nodes a task
        returned) whose arguments are not JSON data (``None``: none)."""
        stack, seen = [node_id], {node_id}
        while stack:
            info = self.graph[stack.pop()]
            producer = getattr(info.span, "producer", None)
            check = getattr(producer, "unstable_arguments", None)
            reason = check() if callable(check) else None
            if isinstance(reason, str):
                return reason
            for parent in info.inputs:
                if parent not in seen and parent in self.graph:
                    seen.add(parent)
                    stack.append(parent)
        return None

    def _interrupted(self, node: NodeInfo, asked: Interrupt) -> None:
        """A task paused with ``interrupt()``: its thunks go back to pending (a resume
        runs it again), what depends on it stays pending, and the rest of the run
        goes on."""
        self._status[node._order] = INTERRUPTED
        for thunk in node.thunks:
            thunk._reset()
            thunk._release()
        self.interrupts.append(asked)
        if self._emit is not None:
            self._emit(
                ev.NodeInterrupted(
                    node.id, interrupt_id=asked.id, path=asked.path, question=asked.question
                )
            )

    # -- samplers ----------------------------------------------------------------------

    def _start_sampler(self, node: NodeInfo) -> None:
        self._begin(node)
        self._start_soon(self._run_sampler, node)

    async def _run_sampler(self, node: NodeInfo) -> None:
        """A sampler's attempt, in a task of the run's task group."""
        await self._attempt_in_task(node, self._sample(node), partial(self._sampler_done, node))

    async def _sample(self, node: NodeInfo) -> tuple[list[ModelOutputThunk[Any]], Any]:
        """Run the sampler through an engine view that reports each of its attempts as a
        node (``AttemptEngine``); its thunks and the one it selects."""
        from ._sample import AttemptEngine

        producer: Any = node.span.producer  # a spangraph.sampling.SamplerProducer
        engine = self._engine_of(node)
        if producer.state is not None:
            engine = producer.state(engine)
        attempts_engine = AttemptEngine(engine, node.id, self.graph.path_of(node.id), self._emit)
        chosen = None
        try:
            thunks = await producer.sampler(attempts_engine, producer.action)
            try:
                chosen = (producer.select or producer.sampler.select)(thunks)
            except Exception:
                for thunk in node.thunks:  # nothing to select, but the attempts are kept
                    thunk.facts.attempts = list(thunks)
                raise
            return thunks, chosen
        finally:
            attempts_engine.finish(chosen)  # the attempts' ends: validations, the chosen one

    def _sampler_done(
        self, node: NodeInfo, sampled: tuple[list[ModelOutputThunk[Any]], Any]
    ) -> None:
        thunks, chosen = sampled
        for thunk in node.thunks:
            thunk._copy_result(chosen)
            facts = thunk.facts
            facts.attempts, facts.selected = list(thunks), chosen
        self.generations += len(thunks)
        self._sampled += len(thunks)
        self._other_nodes += 1
        self.cache_hits += sum(1 for t in thunks if t.cache_hit)
        self._finish(node)

    # -- finishing -------------------------------------------------------------------

    def _finish(self, node: NodeInfo) -> None:
        """Mark ``node`` done (work whose thunk has its result, or a ready pure node)
        and make ready each user whose inputs are now all done.

        A user that is pure (a block or component) has nothing to run, so it is
        finished right here rather than queued, and its users in turn: a loop,
        not recursion, since components may nest thousands deep.
        """
        emit_pure = self._emit_finished_pure  # for the pure nodes finished here
        if node._work:
            thunks = node.thunks
            first = thunks[0]
            first._claimed = False
            if node._aliased:
                for alias in thunks[1:]:
                    alias._copy_result(first)
                    alias._claimed = False
            if self._emit_finished is not None:
                self._emit_finished(ev.NodeFinished(node.id, cache_hit=first.cache_hit))
        elif emit_pure is not None:
            emit_pure(ev.NodeFinished(node.id))
        status, waiting = self._status, self._waiting
        status[node._order] = DONE
        done = self._done + 1
        ready, push = self._ready, heapq.heappush
        dynamic_users, dynamic_wait = self._dynamic_users, self._dynamic_wait
        pure: list[NodeInfo] | None = None  # pure users finished here, whose users are next
        while True:
            users = node._users
            if dynamic_users and node.id in dynamic_users:
                users = users + dynamic_users[node.id]
            for user in users:
                order = user._order
                if status[order] is PENDING:
                    left = waiting[order] - 1
                    waiting[order] = left
                    if left:
                        continue
                    if not user._work:
                        status[order] = DONE
                        done += 1
                        if emit_pure is not None:
                            emit_pure(ev.NodeFinished(user.id))
                        if pure is None:
                            pure = [user]
                        else:
                            pure.append(user)
                    else:
                        status[order] = READY
                        push(ready, order)
                elif dynamic_wait and status[order] is RUNNING and user.id in dynamic_wait:
                    # a task waiting for the spans it returned (only a running one waits)
                    left = waiting[order] - 1
                    waiting[order] = left
                    if left == 0:
                        del dynamic_wait[user.id]
                        self._done = done
                        self._finish_task(user)
                        done = self._done
            if not pure:
                break
            node = pure.pop()
        self._done = done

    def _attempt_failed(self, node: NodeInfo, error: BaseException, *, retry: bool = True) -> None:
        order = node._order
        attempt = self._attempt_of[order] or 1
        if retry and self.retry.should_retry(error, attempt):
            delay = self.retry.delay(attempt, self._rng)
            if self._emit is not None:
                self._emit(ev.NodeRetried(node.id, attempt=attempt, error=error, delay=delay))
            for thunk in node.thunks:
                thunk._reset()
                thunk._claimed = True
            self._status[order] = PENDING
            self._start_soon(self._retry_after, node, delay)
            return
        self._status[order] = FAILED
        self.errors[node.id] = error
        for thunk in node.thunks:
            if thunk.state is not ThunkState.FAILED:
                thunk._set_failed(error)
            thunk._claimed = False
        path = self.graph.path_of(node.id)
        if self._emit is not None:
            self._emit(ev.NodeFailed(node.id, error=error, path=path))
        if self.first_failure is None:
            self.first_failure = node.id
        if self.on_error == "raise":
            self._stopped = True  # before anything else can start
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
            return
        self._skip_downstream(node, path, error)

    async def _retry_after(self, node: NodeInfo, delay: float) -> None:
        if delay > 0:
            await self._sleep(delay)
        if self._status[node._order] is PENDING and not self._stopped:
            self._make_ready(node)
            self._drain()

    def _skip_downstream(self, node: NodeInfo, path: str, error: BaseException) -> None:
        error_type = type(error).__name__
        reason = f"input {path} failed: {error_type}: {error}"
        todo = [*node._users, *self._dynamic_users.get(node.id, ())]
        status = self._status
        while todo:
            user = todo.pop()
            state = status[user._order]
            if state in _FINAL:
                continue
            if state == RUNNING and user.id in self._dynamic_wait:
                # A task waiting for the spans it returned fails with their error (not
                # a wrapper per level: a chain of dynamic tasks, a tool loop's, would
                # nest one message in the next).
                self._dynamic_wait.pop(user.id)
                self._attempt_failed(user, error, retry=False)
                continue
            status[user._order] = SKIPPED
            self.skip_reasons[user.id] = reason
            for thunk in user.thunks:
                thunk._set_skipped(reason)
                thunk._claimed = False
            emit = self._emit if user._work else self._emit_pure
            if emit is not None:
                emit(ev.NodeSkipped(user.id, reason=reason, input_path=path, error_type=error_type))
            todo.extend(user._users)
            todo.extend(self._dynamic_users.get(user.id, ()))

    def _cancel_node(self, node: NodeInfo) -> None:
        self._status[node._order] = CANCELLED
        for thunk in node.thunks:
            if not thunk.state.finished:
                thunk._set_cancelled()
            thunk._claimed = False
        if self._emit is not None:
            self._emit(ev.NodeCancelled(node.id))

    def _settle(self) -> None:
        """After the task group: nodes that never finished are released, not left claimed."""
        if self._done == len(self._by_order):
            return  # the usual case
        status = self._status
        for node in self._by_order:
            state = status[node._order]
            if state in _FINAL:
                continue
            if self.interrupts and self.first_failure is None and node.id in self._dynamic_wait:
                # A task waiting for spans it returned, one of which was interrupted:
                # it paused too (a resume runs it again), it was not cancelled.
                del self._dynamic_wait[node.id]
                status[node._order] = INTERRUPTED
                for thunk in node.thunks:
                    thunk._reset()
                    thunk._release()
                continue
            for thunk in node.thunks:
                if thunk.state is ThunkState.RUNNING:
                    thunk._set_cancelled()
                thunk._release()  # a pending thunk's waiters learn that no run holds it
            if state == RUNNING:
                status[node._order] = CANCELLED


async def _call_task(producer: TaskProducer, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Call an async task's function (or a thread task's, in a worker thread) and
    return what it gives."""
    if producer.thread:
        return await anyio.to_thread.run_sync(partial(producer.call, args, kwargs))
    return await _result_of(producer.call(args, kwargs))


async def _call_on_cluster(
    executor: Executor | None, producer: TaskProducer, args: list[Any], kwargs: dict[str, Any]
) -> Any:
    """Call a ``@task(where="cluster")`` function on a worker of the run's executor."""
    name = producer.label
    if executor is None:
        raise ValueError(
            f"{name} runs on the cluster (@task(where='cluster')): give the run an executor, "
            "e.g. run(..., executor=DaskExecutor(client, engines=...))"
        )
    if producer.state is not None:
        raise ValueError(
            f"{name} runs on the cluster: declare it outside `with options(...)` blocks "
            "(a task on the cluster declares no generations, so a state means nothing there)"
        )
    result = await executor.call(producer.fn, args, kwargs)
    if spans_in(result):
        raise ValueError(
            f"{name} ran on the cluster and returned spans: a task on the cluster cannot "
            "declare generations; return plain values, and declare generations in a task "
            "on the driver"
        )
    return result


async def _result_of(returned: Any) -> Any:
    """What an awaitable gives, or every item of an async generator, as a list."""
    if inspect.isasyncgen(returned):
        return [item async for item in returned]
    return await returned


def _lone_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one error inside ``group`` (through nested groups), or ``None`` if several."""
    errors: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        item = stack.pop()
        if isinstance(item, BaseExceptionGroup):
            stack.extend(item.exceptions)
        else:
            errors.append(item)
    return errors[0] if len(errors) == 1 else None


def _finished_before(thunks: list[ModelOutputThunk[Any]]) -> bool:
    for thunk in thunks:
        if thunk.state is ThunkState.DONE:
            for alias in thunks:
                if alias is not thunk and alias.state is not ThunkState.DONE:
                    alias._reset()  # (a new run's explicit way out of a final state)
                    alias._copy_result(thunk)
            return True
    return False
