"""``DaskExecutor``: a run's generations on a Dask cluster, the scheduler on the driver.

``run(..., executor=DaskExecutor(client, engines={engine: spec}))`` is the
only change a user makes. What runs where:

- **on the driver** (the process that called ``run()``): the scheduler,
  pure nodes, tasks, the output memo (hits never leave it), the
  prefix-aware ordering, the limits, events, spans and the LogDAG. Every
  engine of the run is replaced by its proxy, ``RemoteEngine``
  (``engines/_remote.py``), whose primitive sends the request to a worker
  as msgpack bytes (plain data: ``to_wire``) in one Dask task;
- **on each worker**: ``EnginePlugin``, a ``WorkerPlugin`` registered when
  the run starts, builds each engine from its ``EngineSpec`` once, keeps a
  private event loop in a thread of its own (engines' asynchronous
  primitives run there, not on the worker's loop), and closes both at
  teardown. A task runs step 4 (the KV prefix) and step 5 there and sends
  back the completion, the worker's address and its wall-clock times.

**Executors of the same engine specs share their engines** on the workers
(one plugin, named after the specs' keys: a model is loaded once per
worker however many drivers use it). The plugin is registered by the
first of them to start and never replaced while it is registered
(``EnginePlugin.idempotent``), so the engines, and the generations under
way on them, outlive another executor's start; the scheduler keeps which
executors hold it (its metadata, ``_HOLDERS``) and the last to close
unregisters it. Holding and letting go happen under a ``distributed.Lock``
per plugin. A driver that dies holding the plugin leaves it registered
until the cluster restarts (its engines stay loaded).

**Limits** are the scheduler's, and it is the only one to send work, so a
run's ``max_concurrency`` and each engine's ``max_concurrency`` hold across
the whole cluster (one driver). Several drivers each keep their own, unless
``limits="shared"``: then a generation also holds a lease of a named
``distributed.Semaphore`` per engine spec (``max_leases``: the engine's
``max_concurrency``), taken and given back on the client's loop, so the
drivers that use one spec share its limit. A lease of a driver that dies is
freed only by Dask's lease timeout (``distributed.scheduler.locks.lease-timeout``).

**Slots.** Each worker declares its engines' slots as a Dask worker resource
(``slot_resource``: one per engine spec, as many as the worker's engine's
``max_concurrency``), and each generation asks for one, so a worker with
more threads than its engine has slots does not overbook the engine.

**Batches** (``batch=N``, off by default): the requests ready in one turn of
the driver's loop share Dask tasks (``_DaskDispatch``), at least one per
cluster thread and at most ``N`` requests each, run one after the other on
their worker. That pays Dask's per-task cost once per batch.

**Tracing.** Each request carries the ``traceparent`` of its node's span
(``node_traceparent``, from the tracing package: the span id is allotted
when the request leaves and the span, made when the node ends, takes it),
and a worker runs the request under it, so spans made there are children
of the node's span.

**Failures.** Dask's own ``retries`` are 0: spangraph's ``RetryPolicy``
decides. An engine error comes back as its spangraph class (a transient
one is retried by the policy). A worker that dies while it runs a task: Dask
moves the task to another worker by itself (the scheduler's
``allowed-failures``); when Dask gives up (``KilledWorker``) or the
connection is lost, the generation fails with ``TransientEngineError``,
which the ``RetryPolicy`` retries. Finished nodes are on the driver and are
never recomputed. A generation that is cancelled (a timeout, a failed
run) cancels its Dask future.

**KV affinity.** A worker reports the KV prefix it now holds; the next
request that starts with it prefers the workers that hold it
(``workers=[...]``, ``allow_other_workers=True``), and the prefix-aware ordering waits for the
first generation to warm it before fanning out.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import itertools
import threading
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from hashlib import blake2b
from typing import Any, Literal, TypeVar

import anyio
from distributed import WorkerPlugin  # the ``dask`` extra (graph/__init__ says so if missing)

from ..engines import EngineSpec, ExecutorError, InferenceEngine, TransientEngineError
from ..engines._internal import RemoteEngine, serve
from ..tracing._internal import node_traceparent

#: Who holds an engine's limit: each driver its own (``"driver"``), or every driver that
#: uses the engine's spec together, through a named ``distributed.Semaphore`` (``"shared"``).
Limits = Literal["driver", "shared"]


def slot_resource(key: str) -> str:
    """The Dask worker resource of the slots of the engine whose spec's key is ``key``."""
    return f"spangraph-slots-{key}"


def semaphore_name(key: str) -> str:
    """The named ``distributed.Semaphore`` that holds a shared limit (``limits="shared"``)."""
    return f"spangraph-limit-{key}"


_T = TypeVar("_T")


class EnginePlugin(WorkerPlugin):
    """Builds a run's engines on a worker, once, and closes them at teardown.

    It is sent to the workers holding only plain data (the specs, by key);
    the engines and the private event loop are made on the worker, in
    ``setup``. A spec the worker cannot build is kept as an error (``errors``)
    that ``DaskExecutor.start`` reports before the run begins.
    """

    #: Registered again under its name while it is registered (another executor of the
    #: same specs starting), the plugin is left as it is: Dask does not tear its engines
    #: down under the generations running on them (the module's docstring).
    idempotent = True

    def __init__(self, name: str, specs: Mapping[str, Mapping[str, Any]]) -> None:
        self.name = name
        self.specs = {key: dict(data) for key, data in specs.items()}
        self.engines: dict[str, InferenceEngine] = {}
        self.errors: dict[str, str] = {}
        self.address = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "specs": self.specs}  # never an engine, a loop, a thread

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["name"], state["specs"])  # type: ignore[misc]

    async def setup(self, worker: Any) -> None:
        """Build the engines, start the private loop, and declare each engine's slots
        (its ``max_concurrency``) as the worker resource ``slot_resource(key)``."""
        self.address = str(worker.address)
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=loop.run_forever, name="spangraph-engines", daemon=True
        )
        self._thread.start()
        for key, data in self.specs.items():
            spec = EngineSpec.from_data(data)
            try:
                self.engines[key] = spec.build()
            except Exception as exc:
                self.errors[key] = f"{type(exc).__name__}: {exc}"
        slots = {slot_resource(key): engine.max_concurrency for key, engine in self.engines.items()}
        if slots:
            await worker.set_resources(**slots)

    def teardown(self, worker: Any) -> None:
        loop, thread = self._loop, self._thread
        for engine in self.engines.values():
            with contextlib.suppress(Exception):
                if loop is not None:
                    asyncio.run_coroutine_threadsafe(engine.aclose(), loop).result(timeout=60)
                engine.close()
        self.engines.clear()
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=60)
            loop.close()
        self._loop = self._thread = None

    def generate(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Run one request (from a Dask task's thread) on the private loop."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(
            _traced(self._engine(payload), payload, self.address), self._loop
        )
        return future.result()

    def generate_each(
        self, payloads: Sequence[Mapping[str, Any]], cancelled: Callable[[], bool]
    ) -> list[dict[str, Any]]:
        """Run a batch of requests (from a Dask task's thread) on the private loop, one
        after the other: a batch holds one of its engine's slots. Once the task is
        ``cancelled()`` (its driver gave up on it), the requests not started yet are
        not run (Dask cannot stop a running task; its result is dropped)."""
        engines = [self._engine(payload) for payload in payloads]
        assert self._loop is not None

        async def each() -> list[dict[str, Any]]:
            answers = []
            for engine, payload in zip(engines, payloads, strict=True):
                if cancelled():
                    break
                answers.append(await _traced(engine, payload, self.address))
            return answers

        return asyncio.run_coroutine_threadsafe(each(), self._loop).result()

    def _engine(self, payload: Mapping[str, Any]) -> InferenceEngine:
        key = str(payload.get("engine"))
        engine = self.engines.get(key)
        if engine is None:
            spec = EngineSpec.from_data(self.specs[key]) if key in self.specs else None
            why = self.errors.get(key, "no such engine key")
            raise ExecutorError(f"worker {self.address} cannot build engine {spec}: {why}")
        return engine


async def _traced(
    engine: InferenceEngine, payload: Mapping[str, Any], address: str
) -> dict[str, Any]:
    """``serve`` under the run's trace context (the payload's ``traceparent``), so that
    instrumentation on the worker (httpx, openai) joins the run's trace."""
    from opentelemetry import context, propagate

    traceparent = payload.get("traceparent")
    token = context.attach(propagate.extract({"traceparent": traceparent})) if traceparent else None
    try:
        return await serve(engine, payload, address)
    finally:
        if token is not None:
            context.detach(token)


def generate_on_worker(plugin_name: str, payload: bytes) -> bytes:
    """The Dask task: msgpack bytes in, msgpack bytes out (plain data both ways)."""
    import msgpack

    answer = _plugin(plugin_name).generate(msgpack.unpackb(payload))
    packed: bytes = msgpack.packb(answer)
    return packed


def generate_batch_on_worker(plugin_name: str, payloads: bytes) -> bytes:
    """The Dask task of a batch (``batch=``): a msgpack list of requests in, the list
    of their answers out, run one after the other."""
    import msgpack
    from dask.context import thread_state
    from distributed import get_worker

    worker, key = get_worker(), thread_state.key

    def cancelled() -> bool:
        task = worker.state.tasks.get(key)
        return task is None or task.state in ("cancelled", "released", "forgotten")

    answers = _plugin(plugin_name).generate_each(msgpack.unpackb(payloads), cancelled)
    packed: bytes = msgpack.packb(answers)
    return packed


def _plugin(plugin_name: str) -> EnginePlugin:
    from distributed import get_worker

    worker = get_worker()
    plugin = worker.plugins.get(plugin_name)
    if not isinstance(plugin, EnginePlugin):
        raise ExecutorError(
            f"worker {worker.address} has no spangraph engines ({plugin_name}): it joined "
            "after the run started and the plugin did not reach it"
        )
    return plugin


def call_on_worker(plugin_name: str, function: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """The Dask task of a ``@task(where="cluster")``: the function, imported on the worker
    by its name (``module:qualname``) and called there (an async one on the worker's
    private event loop). A function the worker cannot import is an ``ImportError`` of
    this task, not a worker that fails to read the task."""
    module, _, qualname = function.partition(":")
    fn: Any = importlib.import_module(module)
    for part in qualname.split("."):
        fn = getattr(fn, part)
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        from distributed import get_worker

        plugin = get_worker().plugins.get(plugin_name)
        if not isinstance(plugin, EnginePlugin) or plugin._loop is None:
            raise ExecutorError(f"worker {get_worker().address} has no spangraph event loop")
        result = asyncio.run_coroutine_threadsafe(_awaited(result), plugin._loop).result()
    return result


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


#: The Dask scheduler's metadata key under which each engine plugin's holders are kept:
#: ``[_HOLDERS, plugin name]`` → the ids of the executors that hold the plugin.
_HOLDERS = "spangraph-engine-plugin-holders"
#: How long an executor waits for another one of its specs to finish registering or
#: unregistering their shared plugin (building a model on every worker takes a while).
_LOCK_SECONDS = 600


def _build_errors(plugin_name: str, dask_worker: Any = None) -> dict[str, str]:
    """What a worker could not build (``client.run`` calls it on every worker)."""
    plugin = dask_worker.plugins.get(plugin_name) if dask_worker is not None else None
    if not isinstance(plugin, EnginePlugin):
        return {"": "the spangraph engine plugin is not set up on this worker"}
    return dict(plugin.errors)


class DaskExecutor:
    """Runs a run's generations on a Dask cluster (see the module's docstring).

    ``client``: a ``distributed.Client`` connected to the cluster (a
    synchronous one for ``run()``; with ``Client(asynchronous=True)``, use
    ``await arun(...)`` on the client's event loop). ``engines``: each engine
    the run uses (the run's ``engine=`` and any ``generate(engine=...)``),
    mapped to the ``EngineSpec`` its workers build it from. The driver's
    engine is used for what the driver does (options, render, memo keys,
    parse, telemetry); a ``LlamaCppEngine`` there loads no model, since it
    never runs a primitive.

    ``limits``: ``"driver"`` (the default): the run's and each engine's
    ``max_concurrency`` are held by this driver, for its own generations;
    ``"shared"``: each engine's limit is also held by a named
    ``distributed.Semaphore`` that every driver using the same spec shares
    (``max_leases``: the engine's ``max_concurrency`` when the first run
    starts; a driver that asks another limit for the same spec is refused).

    ``batch``: at most this many requests in one Dask task (default 1: a task
    per generation). Requests for one engine and worker preference that are
    ready in the same turn of the event loop are sent together, split into
    at least as many tasks as the cluster has threads (so a batch never
    takes parallelism away), and run one after the other on their worker,
    holding one slot. That divides the Dask scheduler's cost per generation,
    at the price of head-of-line waiting inside a batch: for many short
    generations. With ``limits="shared"``, requests are not batched.

    The workers keep their engines between runs; ``close()`` (or ``with
    DaskExecutor(...) as executor:``) has them close their engines.
    """

    def __init__(
        self,
        client: Any,
        engines: Mapping[InferenceEngine, EngineSpec],
        *,
        limits: Limits = "driver",
        batch: int = 1,
    ) -> None:
        from distributed import Client

        if not isinstance(client, Client):
            raise TypeError(f"DaskExecutor takes a distributed.Client, got {type(client).__name__}")
        if not engines:
            raise ValueError("DaskExecutor needs engines={engine: EngineSpec(...)}: none given")
        if limits not in ("driver", "shared"):
            raise ValueError(f"DaskExecutor limits= is 'driver' or 'shared', got {limits!r}")
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"DaskExecutor batch= is a whole number >= 1, got {batch!r}")
        self.client: Any = client
        self.limits: Limits = limits
        self.batch = batch
        #: The cluster's threads when the run started (how many batches at least).
        self._threads = 1
        #: The shared limit of each engine spec's key (``limits="shared"``), made at start.
        self._semaphores: dict[str, Any] = {}
        self._specs: dict[int, tuple[InferenceEngine, EngineSpec]] = {}
        for engine, spec in engines.items():
            if not isinstance(engine, InferenceEngine) or not isinstance(spec, EngineSpec):
                raise TypeError(
                    "DaskExecutor engines= maps engines to EngineSpec, got "
                    f"{type(engine).__name__} → {type(spec).__name__}"
                )
            self._specs[id(engine._base)] = (engine._base, spec)
        keys = sorted(spec.key for _, spec in self._specs.values())
        self.plugin_name = (
            "spangraph-engines-" + blake2b(" ".join(keys).encode(), digest_size=6).hexdigest()
        )
        #: Each engine's proxy (a view's: the base's proxy under the view's state), for
        #: as long as the engine lives (views come and go with the graphs that hold them).
        self._proxies: weakref.WeakKeyDictionary[InferenceEngine, InferenceEngine] = (
            weakref.WeakKeyDictionary()
        )
        self._dispatch = _DaskDispatch(self)
        self._started = False
        #: This executor among those that hold its engine plugin (``_set_holders``).
        self._id = uuid.uuid4().hex
        #: Dask keys of this executor's generation tasks: a random prefix and a count
        #: (a random key per task costs a system call).
        self._keys = itertools.count()
        self._key_prefix = f"spangraph-generate-{self._id}"

    async def start(self) -> None:
        """Hold the engine plugin, registering it unless an executor of the same specs
        has (each worker builds the engines then), and check every worker built every
        engine: ``ExecutorError`` names the worker and the spec that failed, or says
        that the cluster cannot be reached."""
        if self._started:
            return
        import sniffio

        if sniffio.current_async_library() != "asyncio":
            raise ExecutorError("DaskExecutor runs on asyncio (the Dask client's loop), not trio")
        client = self.client
        if not self._connected():
            raise ExecutorError(
                f"no Dask cluster reachable: the client's status is {client.status!r} "
                "(connect it, e.g. Client(address), before the run)"
            )
        try:
            errors = await self._hold_plugin()
        except OSError as exc:
            raise ExecutorError(f"no Dask cluster reachable ({exc})") from None
        try:
            self._check_built(errors)
            if self.batch > 1:
                threads = await self._ask(client.nthreads)
                self._threads = max(1, sum(threads.values()))
            if self.limits == "shared":
                await self._share_limits()
        except BaseException:
            with contextlib.suppress(Exception):  # the start's own error is the one to see
                await self._let_go()
            raise
        self._started = True

    async def _hold_plugin(self) -> dict[str, dict[str, str]]:
        """Hold the engine plugin, registering it (each worker builds the engines) unless
        another executor of the same specs has; what each worker could not build."""
        plugin = EnginePlugin(
            self.plugin_name,
            {spec.key: spec.to_data() for _, spec in self._specs.values()},
        )
        async with self._plugin_lock():
            await self._set_holders(add=True)
            try:
                # Idempotent: a plugin registered by another executor is left as it is.
                await self._ask(self.client.register_plugin, plugin, self.plugin_name)
                errors: dict[str, dict[str, str]] = await self._ask(
                    self.client.run, _build_errors, self.plugin_name
                )
            except BaseException:
                with contextlib.suppress(Exception):  # the registration's error is the one
                    await self._release_hold()
                raise
        return errors

    def _check_built(self, errors: Mapping[str, Mapping[str, str]]) -> None:
        """``ExecutorError`` unless every worker built every engine (``errors``: what
        each worker could not build, by engine spec key)."""
        if not errors:
            raise ExecutorError("the Dask cluster has no workers: nothing can run a generation")
        by_key = {spec.key: spec for _, spec in self._specs.values()}
        problems = [
            f"worker {address} cannot build engine {by_key.get(key, '?')}: {error}"
            for address, failed in sorted(errors.items())
            for key, error in sorted(failed.items())
        ]
        if problems:
            raise ExecutorError("; ".join(problems))

    async def _share_limits(self) -> None:
        """Register the named semaphore of each engine spec (``limits="shared"``)."""
        from distributed import Semaphore

        client = self.client
        for engine, spec in self._specs.values():
            if spec.key in self._semaphores:
                continue
            semaphore: Any = Semaphore(  # type: ignore[no-untyped-call]
                max_leases=engine.max_concurrency,
                name=semaphore_name(spec.key),
                scheduler_rpc=client.scheduler,
                loop=client.loop,
            )
            try:
                if client.asynchronous:
                    await semaphore
                else:
                    await anyio.to_thread.run_sync(semaphore.register)
            except ValueError as exc:  # the scheduler has the semaphore with another limit
                raise ExecutorError(
                    f"engine {spec} cannot share its limit ({engine.max_concurrency}) with "
                    f"the other drivers: {exc}; give every driver the same max_concurrency"
                ) from None
            self._semaphores[spec.key] = semaphore

    def _task_key(self) -> str:
        """A new key for a generation task (unique on the cluster)."""
        return f"{self._key_prefix}-{next(self._keys)}"

    def engine(self, engine: InferenceEngine) -> InferenceEngine:
        """The proxy of ``engine`` (of its base engine, under the view's state)."""
        proxy = self._proxies.get(engine)
        if proxy is not None:
            return proxy
        base = engine._base
        found = self._specs.get(id(base))
        if found is None:
            raise ExecutorError(
                f"{engine!r} has no EngineSpec in DaskExecutor(engines=...): map it to the "
                "spec its workers build it from"
            )
        remote = self._proxies.get(base)
        if remote is None:
            remote = self._proxies[base] = RemoteEngine(
                base, found[1], self._dispatch, traceparent=node_traceparent
            )
        if engine is not base:
            view = remote.with_state(engine._bound_state)
            self._proxies[engine] = view
            return view
        return remote

    def close(self) -> None:
        """Let go of the engine plugin; once no executor of the same engine specs holds
        it, it is unregistered and each worker closes its engines (a loaded model,
        threads, connections) and its event loop. A later run registers it again.
        (With an asynchronous client, ``await executor.aclose()``.)"""
        if self._started and not self.client.asynchronous:
            # In a thread of its own: this thread may be running an event loop.
            with ThreadPoolExecutor(1) as thread:
                thread.submit(anyio.run, self._let_go).result()
        self._started = False

    async def aclose(self) -> None:
        """``close`` for an asynchronous client (or from a running event loop)."""
        if self._started:
            await self._let_go()
        self._started = False

    async def _let_go(self) -> None:
        """No longer hold the engine plugin; unregister it if no other executor does.
        Through a client that is closed, nothing can be let go of: the cluster then
        keeps the hold, as it does a dead driver's."""
        if not self._connected():
            return
        async with self._plugin_lock():
            await self._release_hold()

    async def _release_hold(self) -> None:
        """Leave the engine plugin's holders (under ``_plugin_lock``); the last to leave
        unregisters it, and each worker closes its engines."""
        if not await self._set_holders(add=False):
            with contextlib.suppress(ValueError):  # "The worker plugin ... does not exist"
                await self._ask(self.client.unregister_worker_plugin, self.plugin_name)

    async def _set_holders(self, *, add: bool) -> list[str]:
        """Add this executor to the engine plugin's holders, or take it out; the holders
        now (read and written under ``_plugin_lock``)."""
        key = [_HOLDERS, self.plugin_name]
        holders = await self._ask(self.client.get_metadata, key, [])
        holders = [holder for holder in holders if holder != self._id]
        if add:
            holders.append(self._id)
        await self._ask(self.client.set_metadata, key, holders)
        return holders

    @contextlib.asynccontextmanager
    async def _plugin_lock(self) -> AsyncIterator[None]:
        """The cluster-wide lock under which executors of the engine plugin's specs hold
        it and let it go (so that none unregisters it as another registers it)."""
        from distributed import Lock

        client = self.client
        lock = Lock(  # type: ignore[no-untyped-call]
            f"{self.plugin_name}-holders", scheduler_rpc=client.scheduler, loop=client.loop
        )
        if not await self._ask(partial(lock.acquire, timeout=_LOCK_SECONDS)):
            raise ExecutorError(
                f"the engine plugin {self.plugin_name} stayed locked by another driver for "
                f"{_LOCK_SECONDS} s (building or closing the same engines)"
            )
        try:
            yield
        finally:
            await self._ask(lock.release)

    def _connected(self) -> bool:
        """Whether the client is connected (or connecting) to its cluster."""
        return self.client.status in ("running", "connecting")

    async def _ask(self, method: Callable[..., Any], *args: Any) -> Any:
        """Call a client's method: awaited on an asynchronous client, in a thread on a
        blocking one (its calls wait for the client's own loop)."""
        if self.client.asynchronous:
            return await method(*args)
        return await anyio.to_thread.run_sync(partial(method, *args))

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def call(
        self, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Any:
        """Run a ``@task(where="cluster")`` function on a worker (one Dask task,
        ``retries=0``): the function goes by its name (``module:qualname``; the module
        must be importable on the workers), its arguments and result by Dask's pickle."""
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError
        from distributed.comm.core import CommClosedError

        module = getattr(fn, "__module__", None)
        qualname = getattr(fn, "__qualname__", "")
        name = f"{module}.{qualname}"
        if not module or module == "__main__" or "<" in qualname:
            raise ExecutorError(
                f"task {name} cannot run on the cluster: workers import a task's function "
                "by its name, so it must be a module-level function of a module they can "
                "import (not defined in __main__, a function body or a lambda)"
            )
        client = self.client
        future = client.submit(
            call_on_worker,
            self.plugin_name,
            f"{module}:{qualname}",
            list(args),
            dict(kwargs),
            key=f"spangraph-task-{uuid.uuid4().hex}",
            pure=False,
            retries=0,
        )
        try:
            result: Any = await _result(client, future)
        except (KilledWorker, CommClosedError, FutureCancelledError, OSError) as exc:
            raise TransientEngineError(
                f"the Dask worker running {name} was lost ({type(exc).__name__}: {exc})"
            ) from None
        except ImportError as exc:
            raise ExecutorError(
                f"task {name} cannot run on the cluster: a worker cannot import it or what "
                f"it uses ({exc}); install its module on the workers (or put it on their "
                "PYTHONPATH)"
            ) from None
        except BaseException:
            _cancel(client, future)
            raise
        return result

    def __repr__(self) -> str:
        specs = ", ".join(str(spec) for _, spec in self._specs.values())
        return f"DaskExecutor({self.client!r}, engines=[{specs}], limits={self.limits!r})"


#: Requests that may share a batch: the engine's key and the preferred workers.
_Group = tuple[str, tuple[str, ...]]


class _Request:
    """A request waiting for its batch: the payload, its future answer, its batch."""

    __slots__ = ("batch", "payload", "waiter")

    def __init__(self, payload: dict[str, Any], waiter: asyncio.Future[dict[str, Any]]) -> None:
        self.payload = payload
        self.waiter = waiter
        self.batch: _Batch | None = None


class _Batch:
    """Requests sent in one Dask task: each one's future answer, how many are still
    awaited (none: the task is cancelled), and the task's future once sent."""

    __slots__ = ("awaited", "future", "waiters")

    def __init__(self, waiters: list[asyncio.Future[dict[str, Any]]]) -> None:
        self.waiters = waiters
        self.awaited = len(waiters)
        self.future: Any = None


class _DaskDispatch:
    """``Dispatch`` on Dask: one task per request (``retries=0``, one of its engine's
    slots), awaited without a thread; cancelling the await cancels the future. With
    shared limits, the task is submitted under a lease of its engine's semaphore.

    With ``batch > 1``: a request waits in ``_pending`` (by engine and preferred
    workers) until the end of the event loop's turn (``_flush``, scheduled by the
    first), then goes in a batch task; a task (``_collect``) hands each request
    its answer. A request cancelled before its batch is sent leaves it; the batch's
    task is cancelled when none of its requests is awaited any more."""

    def __init__(self, executor: DaskExecutor) -> None:
        self._executor = executor
        #: Requests not sent yet, by event loop (a synchronous client's runs each have
        #: one), engine key and preferred workers.
        self._pending: dict[asyncio.AbstractEventLoop, dict[_Group, list[_Request]]] = {}
        self._collecting: set[asyncio.Task[None]] = set()

    async def complete(self, payload: dict[str, Any], *, prefer: Sequence[str]) -> dict[str, Any]:
        executor = self._executor
        engine = str(payload["engine"])
        if executor.batch > 1 and engine not in executor._semaphores:
            return await self._batched(payload, engine, tuple(prefer))
        return await self._single(payload, engine, prefer)

    async def _single(
        self, payload: dict[str, Any], engine: str, prefer: Sequence[str]
    ) -> dict[str, Any]:
        import msgpack
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError
        from distributed.comm.core import CommClosedError

        executor = self._executor
        client = executor.client
        where: dict[str, Any] = {}
        if prefer:
            where = {"workers": list(prefer), "allow_other_workers": True}
        submit = partial(
            client.submit,
            generate_on_worker,
            executor.plugin_name,
            msgpack.packb(payload),
            key=executor._task_key(),
            pure=False,
            retries=0,
            resources={slot_resource(engine): 1},
            **where,
        )
        semaphore = executor._semaphores.get(engine)
        try:
            if semaphore is None:
                raw: bytes = await _submitted(client, submit)
            else:
                raw = await _on_client_loop(client, _leased(client, submit, semaphore))
        except (KilledWorker, CommClosedError, FutureCancelledError, OSError) as exc:
            raise TransientEngineError(
                f"the Dask worker running this generation was lost ({type(exc).__name__}: "
                f"{exc}); it is retried by the run's RetryPolicy"
            ) from None
        answer: dict[str, Any] = msgpack.unpackb(raw)
        return answer

    # -- batches -----------------------------------------------------------------------

    async def _batched(
        self, payload: dict[str, Any], engine: str, prefer: tuple[str, ...]
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[dict[str, Any]] = loop.create_future()
        entry = _Request(payload, waiter)
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = {}
            loop.call_soon(self._flush, loop)
        group = pending.setdefault((engine, prefer), [])
        group.append(entry)
        try:
            return await waiter
        except BaseException:
            batch = entry.batch
            if batch is None:  # not sent yet: it leaves its batch
                if entry in group:
                    group.remove(entry)
            elif waiter.cancelled():
                batch.awaited -= 1
                if batch.awaited == 0 and batch.future is not None:
                    _cancel(self._executor.client, batch.future)
            raise

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send the requests of this turn: per engine and preference, in at least as
        many batches as the cluster has threads (or one each), of at most ``batch``."""
        pending = self._pending.pop(loop, {})
        size, threads = self._executor.batch, self._executor._threads
        for (engine, prefer), entries in pending.items():
            if not entries:
                continue
            count = max(-(-len(entries) // size), min(len(entries), threads))
            for first in range(count):
                self._send(engine, prefer, entries[first::count])

    def _send(self, engine: str, prefer: tuple[str, ...], entries: list[_Request]) -> None:
        import msgpack

        executor = self._executor
        client = executor.client
        batch = _Batch([entry.waiter for entry in entries])
        for entry in entries:
            entry.batch = batch
        where: dict[str, Any] = {}
        if prefer:
            where = {"workers": list(prefer), "allow_other_workers": True}
        try:
            batch.future = client.submit(
                generate_batch_on_worker,
                executor.plugin_name,
                msgpack.packb([entry.payload for entry in entries]),
                key=executor._task_key(),
                pure=False,
                retries=0,
                resources={slot_resource(engine): 1},
                **where,
            )
        except Exception as exc:
            _fail(batch, exc)
            return
        task = asyncio.get_running_loop().create_task(self._collect(batch))
        self._collecting.add(task)
        task.add_done_callback(self._collecting.discard)

    async def _collect(self, batch: _Batch) -> None:
        """Await a batch's task; hand each request its answer (or the task's error)."""
        import msgpack
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError
        from distributed.comm.core import CommClosedError

        try:
            raw = await _result(self._executor.client, batch.future)
        except (KilledWorker, CommClosedError, FutureCancelledError, OSError) as exc:
            _fail(
                batch,
                TransientEngineError(
                    f"the Dask worker running this generation was lost ({type(exc).__name__}: "
                    f"{exc}); it is retried by the run's RetryPolicy"
                ),
            )
        except Exception as exc:
            _fail(batch, exc)
        else:
            answers = msgpack.unpackb(raw)
            for waiter, answer in zip(batch.waiters, answers, strict=False):
                if not waiter.done():
                    waiter.set_result(answer)
            # Fewer answers: the worker saw the task cancelled and stopped (a race with
            # a request still awaited; it is retried by the run's RetryPolicy).
            _fail(batch, TransientEngineError("the Dask task of this batch was cancelled"))


def _fail(batch: _Batch, error: BaseException) -> None:
    for waiter in batch.waiters:
        if not waiter.done():
            waiter.set_exception(error)


async def _submitted(client: Any, submit: Callable[[], Any]) -> Any:
    """Submit a task (``submit()``: its future) and await its result; cancelled or
    failed, the future is cancelled. (Submitted from this thread: submitting on the
    client's loop instead, in one coroutine with the gather, saves a hand-off between
    the threads but loads the client's loop, which is the busier one; it measured
    slower: ``docs/design/scale.md``.)"""
    future = submit()
    try:
        return await _result(client, future)
    except BaseException:
        _cancel(client, future)
        raise


async def _leased(client: Any, submit: Callable[[], Any], semaphore: Any) -> Any:
    """``_submitted`` under a lease of ``semaphore``; on the client's loop (where the
    semaphore's methods are coroutines), in a task of its own: a cancelled caller
    cancels it once, and it cancels the future and gives the lease back."""
    await semaphore.acquire()
    try:
        future = submit()
        try:
            return await client.gather(future, asynchronous=True)
        except BaseException:
            await client.cancel([future], asynchronous=True)
            raise
    finally:
        await semaphore.release()


#: Coroutines run on an asynchronous client's loop, kept until they are done.
_background: set[asyncio.Future[Any]] = set()


async def _on_client_loop(client: Any, coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coroutine`` on the client's loop in a task of its own, and await it here
    (cancelling the await cancels that task)."""
    if client.asynchronous:
        task = asyncio.ensure_future(coroutine)
        _background.add(task)
        task.add_done_callback(_background.discard)
        return await task
    running = asyncio.run_coroutine_threadsafe(coroutine, client.loop.asyncio_loop)
    return await asyncio.wrap_future(running)


async def _result(client: Any, future: Any) -> Any:
    """A future's result, awaited on this event loop. A synchronous client's futures
    live on the client's own loop (a thread of its own): its gather coroutine runs
    there, and this loop awaits it without a thread of its own."""
    if client.asynchronous:
        return await future
    gathering = client.gather(future, asynchronous=True)  # a coroutine, for the client's loop
    running = asyncio.run_coroutine_threadsafe(gathering, client.loop.asyncio_loop)
    return await asyncio.wrap_future(running)


#: Cancellations sent by an asynchronous client, kept until they are done.
_cancelling: set[asyncio.Future[Any]] = set()


def _cancel(client: Any, future: Any) -> None:
    """Cancel a future (an asynchronous client's cancellation is not waited for)."""
    with contextlib.suppress(Exception):
        if client.asynchronous:
            sent = asyncio.ensure_future(client.cancel([future]))
            _cancelling.add(sent)
            sent.add_done_callback(_cancelling.discard)
        else:
            client.cancel([future])
