"""``DaskExecutor``: the same runs on a Dask cluster, the scheduler on the driver.

One process ``LocalCluster`` of 2 workers (1 thread each) serves the module
(it takes seconds to start). The rules: a run on the cluster gives the same
outputs, ``Run`` counters and LogDAG as a local run; only plain data crosses
the wire; each worker builds its engines once; limits hold across the
cluster; a worker's death costs only the generation it was running; a
cancelled run cancels its futures; bad input gets an ``ExecutorError`` that
says what and where.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import signal
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from spangraph import CBlock, Component, NodeFailedError, Span, generate, options, run, task
from spangraph.cache import MemoryStore
from spangraph.engines import (
    Capabilities,
    Completion,
    EngineError,
    EngineSpec,
    ExecutorError,
    ScriptedEngine,
)
from spangraph.engines._remote import completion_to_wire, from_wire, to_wire
from spangraph.events import Event, NodeFinished
from spangraph.graph import DaskExecutor, RetryPolicy
from spangraph.lowlevel import RemoteEngine, WorkerRun
from spangraph.nodes import ModelOutputThunk
from tests.cache.memo_helpers import Step, expected, fan, values
from tests.graph.dask_helpers import calls, scripted, spangraph_tasks

distributed = pytest.importorskip("distributed")

SCRIPTED = "tests.graph.dask_helpers:scripted"


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def test_the_how_tos_cluster_listens_on_loopback_only(client: Any) -> None:
    """The set-up of docs/howto/dask.md (and of these tests): Dask starts its HTTP
    server even with ``dashboard_address=None``, then on port 8787 of every
    interface; ``"127.0.0.1:0"`` keeps it, and the scheduler, on loopback."""
    scheduler = client.cluster.scheduler
    bound = [sock.getsockname()[0] for sock in scheduler.http_server._sockets.values()]
    assert bound and set(bound) == {"127.0.0.1"}
    assert scheduler.address.startswith("tcp://127.0.0.1:")
    workers = client.run(lambda dask_worker: dask_worker.address)
    assert workers and all(a.startswith("tcp://127.0.0.1:") for a in workers.values())


def executor_for(
    client: Any, log_dir: pathlib.Path, latency: float = 0.0, batch: int = 1
) -> tuple[Any, Any]:
    """The driver's engine and a ``DaskExecutor`` whose workers build the same one."""
    spec = EngineSpec(SCRIPTED, {"log_dir": str(log_dir), "latency": latency})
    engine = spec.build()
    return engine, DaskExecutor(client, engines={engine: spec}, batch=batch)


# -- what crosses the wire ---------------------------------------------------------------


class Answer(Component[dict[str, int]]):
    template = "{document}\n\nQ: {question}"
    document: Span
    question: Span


def test_a_payload_is_plain_data_that_round_trips_through_msgpack() -> None:
    engine = ScriptedEngine()
    action = Answer(document=CBlock("a long document", cache=True), question="how many?")
    with options(temperature=0, stop=["\n"], system="be brief"):
        thunk = generate(action)
    state = engine._effective_state(thunk.producer.state)
    request = engine.render(action, state, engine.handle_model_options(state, {}))
    payload = to_wire(request, "key", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    data = msgpack.packb(payload)
    assert _plain(msgpack.unpackb(data))
    back = from_wire(msgpack.unpackb(data))
    assert back.prompt == request.prompt and back.prompt.cached_prefix()
    assert dict(back.options) == dict(request.options) and back.schema == request.schema
    assert back.text == request.text and back.mode == request.mode
    assert back.action is None and back.state is None  # those stay on the driver


def _plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


def test_only_plain_data_is_sent_to_the_workers(
    client: Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, executor = executor_for(client, tmp_path)
    sent: list[tuple[Any, ...]] = []
    submit = client.submit

    def recording(fn: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(args)
        return submit(fn, *args, **kwargs)

    monkeypatch.setattr(client, "submit", recording)
    thunks = fan(3)
    run(*thunks, engine=engine, executor=executor, progress=False)
    assert values(thunks) == [expected(f"g{i}") for i in range(3)]
    assert len(sent) == 3
    assert all([type(a) for a in args] == [str, bytes] for args in sent)  # a name, msgpack
    from spangraph.graph._dask import EnginePlugin

    plugin = EnginePlugin("p", {"k": EngineSpec(SCRIPTED).to_data()})
    plugin.engines["k"] = engine  # a plugin's state holds its specs, never an engine
    assert _plain(msgpack.unpackb(msgpack.packb(plugin.__getstate__())))


# -- the same run as a local one ---------------------------------------------------------


@task
def split(text: str) -> list[ModelOutputThunk[str]]:
    with options(temperature=0):
        return [generate(Step(inputs=[word], label="part")) for word in text.split()]


@task
def combine(parts: list[str]) -> str:
    return " + ".join(parts)


def graph(seed: int, failing: bool) -> list[Any]:
    """A fan-out, a dynamic fan-out from a task, a retried generation and (``failing``)
    one that fails for good with a node downstream of it."""
    with options(temperature=0):
        first = [generate(Step(inputs=[f"w{seed}x{i}"], label="first")) for i in range(3)]
        words = generate(Step(inputs=first, label="words"))
        flaky = generate(Step(inputs=[f"flaky{seed}"], label="retried"))
        roots = [combine(split(words)), flaky]
        if failing:
            bad = generate(Step(inputs=[f"bad{seed}"], label="fails"))
            roots.append(generate(Step(inputs=[bad], label="downstream")))
    return roots


def outcome(result: Any, roots: list[Any]) -> dict[str, Any]:
    log = result.log
    ids = {node.key: node.node_id for node in log.nodes.values()}
    return {
        "values": [r.value if r.state.name == "DONE" else r.state.name for r in roots],
        "status": result.status,
        "counters": (
            result.generations,
            result.cache_hits,
            result.cache_misses,
            result.nodes_run,
            result.attempts,
            result.dynamic_nodes,
        ),
        "failed": sorted(f.path for f in result.failed),
        "skipped": sorted(s.path for s in result.skipped),
        "nodes": sorted((n.node_id, n.kind, n.status, n.attempt) for n in log.nodes.values()),
        "edges": sorted((ids[e.source], ids[e.target], e.kind) for e in log.edges),
    }


@pytest.mark.parametrize(
    ("seed", "failing", "batch"),
    [(1, False, 1), (2, False, 1), (1, True, 1), (2, True, 1), (1, True, 4), (2, False, 4)],
)
def test_the_same_outputs_counters_and_logdag_as_a_local_run(
    client: Any, tmp_path: pathlib.Path, seed: int, failing: bool, batch: int
) -> None:
    retry = RetryPolicy(attempts=3, backoff=0.01)
    local_dir, remote_dir = tmp_path / "local", tmp_path / "remote"
    local_dir.mkdir()
    remote_dir.mkdir()
    local_roots = graph(seed, failing)
    local_engine = scripted(str(local_dir))
    local = run(*local_roots, engine=local_engine, retry=retry, on_error="continue", progress=False)
    engine, executor = executor_for(client, remote_dir, batch=batch)
    remote_roots = graph(seed, failing)
    remote = run(
        *remote_roots,
        engine=engine,
        executor=executor,
        retry=retry,
        on_error="continue",
        progress=False,
    )
    assert outcome(remote, remote_roots) == outcome(local, local_roots)
    assert sorted(calls(remote_dir)) == sorted(calls(local_dir))  # the same engine calls
    assert engine.calls == 0  # the driver's engine ran no primitive
    if failing:
        with pytest.raises(NodeFailedError) as raised:
            run(*graph(seed, True), engine=engine, executor=executor, retry=retry)
        assert "fails" in str(raised.value) or "Step" in str(raised.value)


def test_on_error_raise_gives_the_same_error_as_a_local_run(
    client: Any, tmp_path: pathlib.Path
) -> None:
    engine, executor = executor_for(client, tmp_path)
    errors = []
    for kwargs in ({}, {"executor": executor}):
        with options(temperature=0):
            bad = generate(Step(inputs=["bad"], label="fails"))
        with pytest.raises(NodeFailedError) as raised:
            run(bad, engine=engine, progress=False, **kwargs)
        errors.append((raised.value.path, type(raised.value.error).__name__))
    assert errors[0] == errors[1] == (errors[0][0], "EngineRequestError")


def test_an_engine_s_own_exception_on_a_worker_is_not_a_lost_worker(
    client: Any, tmp_path: pathlib.Path
) -> None:
    """An exception of the engine's code that is no ``EngineError`` (an ``OSError``
    here) comes back as an ``EngineError`` naming its type and the worker: it is not
    taken for a lost worker, so the ``RetryPolicy`` does not retry it."""
    engine, executor = executor_for(client, tmp_path)
    with options(temperature=0):
        broken = generate(Step(inputs=["oserror"], label="broken"))
    retry = RetryPolicy(attempts=3, backoff=0.01)
    with pytest.raises(NodeFailedError) as raised:
        run(broken, engine=engine, executor=executor, retry=retry, progress=False)
    error = raised.value.error
    assert type(error) is EngineError, error
    assert "FileNotFoundError: a file the engine needs is missing (on worker" in str(error)
    assert len(calls(tmp_path)) == 1  # not retried


# -- the memo, the limits, tracing -------------------------------------------------------


def test_a_second_run_with_the_memo_makes_no_worker_call(
    client: Any, tmp_path: pathlib.Path
) -> None:
    engine, executor = executor_for(client, tmp_path)
    store = MemoryStore()
    first = run(*fan(6), engine=engine, executor=executor, cache=store, progress=False)
    assert first.generations == 6 and len(calls(tmp_path)) == 6
    thunks = fan(6)
    again = run(*thunks, engine=engine, executor=executor, cache=store, progress=False)
    assert again.cache_hits == 6 and len(calls(tmp_path)) == 6
    assert values(thunks) == [expected(f"g{i}") for i in range(6)]


def worker_times(result: Any) -> list[tuple[int, int, str]]:
    return sorted(
        (
            node.attributes["spangraph.worker.start_time"],
            node.attributes["spangraph.worker.end_time"],
            node.attributes["spangraph.worker"],
        )
        for node in result.log.filter(kind="generation")
    )


def overlaps(times: list[tuple[int, int, str]]) -> int:
    return sum(1 for a, b in itertools.pairwise(times) if b[0] < a[1])


def test_limits_hold_across_the_cluster(client: Any, tmp_path: pathlib.Path) -> None:
    engine, executor = executor_for(client, tmp_path, latency=0.3)
    one = run(*fan(4), engine=engine, executor=executor, max_concurrency=1, progress=False)
    times = worker_times(one)
    assert len(times) == 4 and overlaps(times) == 0
    two = run(*fan(4, first=4), engine=engine, executor=executor, max_concurrency=2)
    times = worker_times(two)
    assert overlaps(times) >= 1 and len({address for _, _, address in times}) == 2
    engine.max_concurrency = 1  # the engine's own limit holds across the cluster too
    try:
        three = run(*fan(4, first=8), engine=engine, executor=DaskExecutor(
            client, engines={engine: EngineSpec(SCRIPTED, {"latency": 0.3})}
        ), progress=False)  # fmt: skip
    finally:
        engine.max_concurrency = 64
    assert overlaps(worker_times(three)) == 0


def test_shared_limits_hold_across_drivers(client: Any, tmp_path: pathlib.Path) -> None:
    """Two drivers (two clients, running at once) of an engine of limit 1: with their
    own limits each runs one at a time, so the two overlap on the workers; with
    ``limits="shared"`` they share one lease, and no two generations overlap."""
    import threading

    def two_drivers(limits: str, first: int) -> list[tuple[int, int, str]]:
        (tmp_path / limits).mkdir()
        spec = EngineSpec(SCRIPTED, {"log_dir": str(tmp_path / limits), "latency": 0.3})
        results: list[Any] = []
        clients = [distributed.Client(client.scheduler.address) for _ in range(2)]
        try:

            def drive(driver: Any, offset: int) -> None:
                engine = spec.build()
                engine.max_concurrency = 1
                executor = DaskExecutor(driver, engines={engine: spec}, limits=limits)
                thunks = fan(3, first=offset)
                results.append(run(*thunks, engine=engine, executor=executor, progress=False))

            threads = [
                threading.Thread(target=drive, args=(driver, first + 3 * i))
                for i, driver in enumerate(clients)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
        finally:
            for driver in clients:
                driver.close()
        assert len(results) == 2 and all(r.status == "done" for r in results)
        for result in results:
            assert overlaps(worker_times(result)) == 0  # each driver keeps its own limit
        return sorted(worker_times(results[0]) + worker_times(results[1]))

    assert overlaps(two_drivers("driver", 0)) >= 1  # the two drivers' limits are two
    assert overlaps(two_drivers("shared", 6)) == 0  # one limit for both


def test_a_shared_limit_is_refused_when_drivers_disagree_on_it(
    client: Any, tmp_path: pathlib.Path
) -> None:
    spec = EngineSpec(SCRIPTED, {"log_dir": str(tmp_path)})
    for limit in (2, 3):
        engine = spec.build()
        engine.max_concurrency = limit
        executor = DaskExecutor(client, engines={engine: spec}, limits="shared")
        if limit == 2:
            assert run(*fan(2), engine=engine, executor=executor, progress=False).generations == 2
        else:
            with pytest.raises(ExecutorError, match=r"cannot share its limit \(3\)"):
                run(*fan(2, first=2), engine=engine, executor=executor, progress=False)
    with pytest.raises(ValueError, match="'driver' or 'shared'"):
        DaskExecutor(client, engines={engine: spec}, limits="everywhere")  # type: ignore[arg-type]


def test_a_worker_runs_no_more_generations_at_once_than_its_engine_has_slots(
    tmp_path: pathlib.Path,
) -> None:
    """Workers of 2 threads, an engine of 1 slot per worker (the workers' engine has
    ``max_concurrency=1``; the driver allows 8 at once): each worker runs one
    generation at a time (its slot is a Dask resource each generation asks for),
    and the two workers run at once."""
    from spangraph.graph._dask import slot_resource

    spec = EngineSpec(SCRIPTED, {"log_dir": str(tmp_path), "latency": 0.3, "max_concurrency": 1})
    engine = scripted(str(tmp_path), latency=0.3)
    engine.max_concurrency = 8
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=2, processes=True, dashboard_address="127.0.0.1:0"
        ) as cluster,
        distributed.Client(cluster) as two_threads,
    ):
        executor = DaskExecutor(two_threads, engines={engine: spec})
        result = run(*fan(6), engine=engine, executor=executor, progress=False)
        declared = {
            address: info["resources"]
            for address, info in two_threads.scheduler_info()["workers"].items()
        }
    assert result.status == "done"
    assert all(r == {slot_resource(spec.key): 1} for r in declared.values()) and len(declared) == 2
    times = worker_times(result)
    by_worker = {address for _, _, address in times}
    assert len(by_worker) == 2 and overlaps(times) >= 1  # the two workers ran at once
    for address in by_worker:
        assert overlaps([t for t in times if t[2] == address]) == 0  # each one at a time


def test_every_span_carries_the_run_s_trace_and_the_worker(
    client: Any, tmp_path: pathlib.Path
) -> None:
    engine, executor = executor_for(client, tmp_path)
    result = run(*fan(4), engine=engine, executor=executor, progress=False)
    log = result.log
    assert log.run is not None
    assert {r.trace_id for r in log.records} == {log.run.trace_id}
    workers = set(client.scheduler_info()["workers"])
    for node in log.filter(kind="generation"):
        assert node.attributes["spangraph.worker"] in workers
        assert (
            node.attributes["spangraph.worker.end_time"]
            >= (node.attributes["spangraph.worker.start_time"])
        )


def test_spans_made_on_a_worker_are_children_of_their_node_s_span(
    client: Any, tmp_path: pathlib.Path
) -> None:
    from tests.graph.dask_helpers import worker_spans

    spec = EngineSpec("tests.graph.dask_helpers:traced", {"log_dir": str(tmp_path)})
    engine = spec.build()
    executor = DaskExecutor(client, engines={engine: spec})
    with options(temperature=0):
        thunks = [*fan(3), generate(Step(inputs=["flaky-trace"], label="retried"))]
    retry = RetryPolicy(attempts=2, backoff=0.01)
    result = run(*thunks, engine=engine, executor=executor, retry=retry, progress=False)
    assert result.status == "done" and result.attempts == 5  # the flaky one ran twice
    log = result.log
    assert log.run is not None
    attempts = log.filter(kind="generation")
    assert len(attempts) == 5 and len({node.key for node in attempts}) == 5
    spans = worker_spans(tmp_path)
    assert len(spans) == 5 and all(span["pid"] != os.getpid() for span in spans)
    # Each worker span's parent is the span of the attempt it served (retried or not),
    # one span each, and all are in the run's trace.
    assert sorted(span["parent_id"] for span in spans) == sorted(node.key for node in attempts)
    assert {span["trace_id"] for span in spans} == {log.run.trace_id}
    assert {r.trace_id for r in log.records} == {log.run.trace_id}


# -- batches -----------------------------------------------------------------------------


def test_ready_requests_share_a_dask_task_with_batch(
    client: Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20 generations ready at once, ``batch=8``, 2 workers of 1 thread: 3 Dask tasks
    (at least one per thread, at most 8 requests each), each generation run once, the
    same answers and worker times as one task each."""
    from spangraph.graph._dask import generate_batch_on_worker

    engine, executor = executor_for(client, tmp_path, batch=8)
    submitted: list[Any] = []
    submit = client.submit

    def recording(fn: Any, *args: Any, **kwargs: Any) -> Any:
        submitted.append(fn)
        return submit(fn, *args, **kwargs)

    monkeypatch.setattr(client, "submit", recording)
    thunks = fan(20)
    result = run(*thunks, engine=engine, executor=executor, progress=False)
    assert result.status == "done" and result.generations == 20
    assert values(thunks) == [expected(f"g{i}") for i in range(20)]
    assert submitted == [generate_batch_on_worker] * 3
    assert sorted(calls(tmp_path)) == sorted(f"g{i}: x" for i in range(20))
    times = worker_times(result)
    assert len(times) == 20 and len({address for _, _, address in times}) == 2
    with pytest.raises(ValueError, match="whole number >= 1"):
        DaskExecutor(client, engines={engine: EngineSpec(SCRIPTED)}, batch=0)


def test_a_cancelled_run_cancels_its_batches(client: Any, tmp_path: pathlib.Path) -> None:
    engine, executor = executor_for(client, tmp_path, latency=1.0, batch=4)
    with options(temperature=0):
        slow = [generate(Step(inputs=[f"slow{i}"], label="slow")) for i in range(8)]
    with pytest.raises(NodeFailedError):
        run(*slow, engine=engine, executor=executor, timeout=0.5, progress=False)
    deadline = time.monotonic() + 30
    while client.run_on_scheduler(spangraph_tasks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.run_on_scheduler(spangraph_tasks) == 0
    assert len(calls(tmp_path)) <= 2 * 3  # at most one started per worker, 3 attempts


# -- failures ----------------------------------------------------------------------------


def test_a_cancelled_run_cancels_its_futures(client: Any, tmp_path: pathlib.Path) -> None:
    engine, executor = executor_for(client, tmp_path, latency=2.0)
    with options(temperature=0):
        slow = [generate(Step(inputs=[f"slow{i}"], label="slow")) for i in range(6)]
    with pytest.raises(NodeFailedError):
        run(*slow, engine=engine, executor=executor, timeout=0.5, progress=False)
    deadline = time.monotonic() + 30
    while client.run_on_scheduler(spangraph_tasks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.run_on_scheduler(spangraph_tasks) == 0
    assert len(calls(tmp_path)) <= 2 * 3  # at most the started ones, on 2 workers, 3 attempts


def test_a_worker_killed_mid_run_costs_only_what_it_was_running(
    client: Any, tmp_path: pathlib.Path
) -> None:
    engine, executor = executor_for(client, tmp_path, latency=0.5)
    pids = client.run(os.getpid)
    finished_before: list[int] = []
    killed: list[str] = []

    def kill_one(event: Event) -> None:
        if isinstance(event, NodeFinished) and not killed:
            finished_before.append(len(calls(tmp_path)))
            if len(finished_before) == 2:
                address = sorted(pids)[0]
                killed.append(address)
                os.kill(pids[address], signal.SIGKILL)

    thunks = fan(8)
    result = run(*thunks, engine=engine, executor=executor, listeners=[kill_one], progress=False)
    assert killed and result.status == "done"
    assert values(thunks) == [expected(f"g{i}") for i in range(8)]
    made = calls(tmp_path)
    # Each generation was called once, but the one the dead worker was running (it
    # runs one at a time), which another worker ran again: no finished one twice.
    assert 8 <= len(made) <= 9 and len(set(made)) == 8
    client.wait_for_workers(2, timeout=60)  # the nanny restarts it, for the next tests


# -- bad input ---------------------------------------------------------------------------


def test_an_engine_spec_a_worker_cannot_build_names_the_worker_and_the_spec(
    client: Any,
) -> None:
    """The error names each worker and the spec; and the executor does not keep the
    plugin it could not start with: the workers drop what they built (no executor of
    those specs holds it)."""
    from tests.graph.dask_helpers import worker_plugin_names

    engine = ScriptedEngine()
    for spec, why in [
        (EngineSpec("tests.graph.dask_helpers:broken", {"gpu": 1}), "no GPU on this worker"),
        (EngineSpec("no_such_module:Engine"), "No module named 'no_such_module'"),
    ]:
        executor = DaskExecutor(client, engines={engine: spec})
        with pytest.raises(ExecutorError) as raised:
            run(*fan(1), engine=engine, executor=executor, progress=False)
        message = str(raised.value)
        assert str(spec) in message and why in message
        assert all(address in message for address in client.scheduler_info()["workers"])
        assert executor.plugin_name not in client.run_on_scheduler(worker_plugin_names)
        holders = client.get_metadata(["spangraph-engine-plugin-holders", executor.plugin_name])
        assert list(holders) == []


def test_no_cluster_reachable(tmp_path: pathlib.Path) -> None:
    cluster = distributed.LocalCluster(
        n_workers=0, processes=False, dashboard_address="127.0.0.1:0"
    )
    gone = distributed.Client(cluster)
    engine = ScriptedEngine()
    executor = DaskExecutor(gone, engines={engine: EngineSpec(SCRIPTED)})
    with pytest.raises(ExecutorError, match="no workers"):
        run(*fan(1), engine=engine, executor=executor, progress=False)
    gone.close()
    cluster.close()
    with pytest.raises(ExecutorError, match="no Dask cluster reachable"):
        run(*fan(1), engine=engine, executor=executor, progress=False)


def test_an_engine_without_a_spec_is_refused_before_the_run(client: Any) -> None:
    engine, other = ScriptedEngine(), ScriptedEngine()
    executor = DaskExecutor(client, engines={engine: EngineSpec(SCRIPTED)})
    with pytest.raises(ExecutorError, match="has no EngineSpec"):
        run(*fan(1), engine=other, executor=executor, progress=False)
    assert other.calls == 0


def test_a_request_that_is_not_plain_data_names_its_span(
    client: Any, tmp_path: pathlib.Path
) -> None:
    engine, executor = executor_for(client, tmp_path)
    thunk = generate(Step(inputs=["x"], label="odd"), options={"extra:seed_bits": 2**70})
    with pytest.raises(NodeFailedError) as raised:
        run(thunk, engine=engine, executor=executor, progress=False)
    error = raised.value.error
    assert isinstance(error, ExecutorError)
    assert "generate(Step)" in str(error) and "not plain data" in str(error)
    assert calls(tmp_path) == []


# -- the real engine on the workers ------------------------------------------------------


class Ask(Component[str]):
    template = "{document}\n\nQuestion: {question}\nAnswer:"
    document: Span
    question: Span


QUESTIONS = [
    "Who is a Licensor?",
    "What is a Derivative Work?",
    "What is a Contribution?",
    "What does Object form mean?",
    "What is a Contributor?",
    "Who may grant licenses?",
    "What is Source form?",
    "What is a Work?",
    "What is the License?",
    "What does You mean?",
]


@pytest.mark.real
def test_llamacpp_on_the_workers_loads_once_and_prefills_once_per_worker(
    client: Any, llama: Any, spangraph_home: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    from spangraph.engines import LlamaCppEngine
    from tests.conftest import DOCUMENT
    from tests.graph.dask_helpers import loaded_servers

    settings = {"home": str(spangraph_home), "n_ctx": 2048, "n_parallel": 1, "n_threads": 1}
    settings["kv_dir"] = str(tmp_path / "kv")
    engine = LlamaCppEngine(**settings)  # the driver's: options, render, keys; never loaded
    spec = EngineSpec("spangraph.engines:LlamaCppEngine", settings)
    executor = DaskExecutor(client, engines={engine: spec})
    text = DOCUMENT[:2500]

    def tokens(content: str) -> int:
        return len(llama.shared().http("/tokenize", {"content": content})["tokens"])

    doc_tokens = tokens(text)
    question_tokens = max(tokens(f"\n\nQuestion: {q}\nAnswer:") for q in QUESTIONS)
    document = CBlock(text, cache=True)
    evaluated = 0
    for half in (QUESTIONS[:5], QUESTIONS[5:]) * 2:  # 20 generations, in 4 runs
        with options(temperature=0, max_tokens=4):
            thunks = [generate(Ask(document=document, question=q)) for q in half]
        result = run(*thunks, engine=engine, executor=executor, progress=False)
        assert result.status == "done" and all(isinstance(t.value, str) for t in thunks)
        assert all(t.usage.input_tokens >= doc_tokens for t in thunks)
        evaluated += sum(t.usage.input_tokens - t.usage.cached_input_tokens for t in thunks)
    servers = client.run(loaded_servers)
    assert all(count <= 1 for count in servers.values()) and sum(servers.values()) >= 1
    assert not engine.loaded  # the driver loaded no model
    # The document is prefilled at most once per worker (2), not once per generation (20).
    assert doc_tokens <= evaluated <= 2 * doc_tokens + 20 * question_tokens + 64


def test_an_asynchronous_client_runs_with_arun(client: Any, tmp_path: pathlib.Path) -> None:
    import asyncio

    from spangraph import arun

    spec = EngineSpec(SCRIPTED, {"log_dir": str(tmp_path)})
    engine = spec.build()
    thunks = fan(4)

    async def main() -> Any:
        async with distributed.Client(client.scheduler.address, asynchronous=True) as aclient:
            executor = DaskExecutor(aclient, engines={engine: spec})
            return await arun(*thunks, engine=engine, executor=executor, progress=False)

    result = asyncio.run(main())
    assert result.status == "done" and values(thunks) == [expected(f"g{i}") for i in range(4)]
    assert len(calls(tmp_path)) == 4


class _Slotted(ScriptedEngine):
    """An engine with KV slots whose every prompt starts with one cached prefix."""

    capabilities = Capabilities(kv_slots=True)

    def prefix_key(self, action: Any, state: Any) -> str | None:
        return "prefix-digest"


class _RecordingDispatch:
    """A ``Dispatch`` of one's own (what a Ray executor would write): it answers at
    once, from a new worker each time, and records which worker was preferred."""

    def __init__(self) -> None:
        self.preferred: list[list[str]] = []

    async def complete(self, payload: dict[str, Any], *, prefer: Any) -> dict[str, Any]:
        self.preferred.append(list(prefer))
        worker = WorkerRun(f"tcp://worker-{len(self.preferred)}", time.time(), time.time())
        return completion_to_wire(Completion("ok"), worker, "prefix-digest")


def test_a_request_prefers_the_worker_that_holds_its_prefix() -> None:
    local = _Slotted()
    dispatch = _RecordingDispatch()
    proxy = RemoteEngine(local, EngineSpec(SCRIPTED), dispatch)
    thunks = fan(3)
    result = run(*thunks, engine=proxy, progress=False)
    assert result.status == "done" and values(thunks) == ["ok"] * 3
    # The first warms the prefix (on worker 1); the others wait for it, then prefer
    # the workers that hold it (here each answer comes from a new one, which holds it).
    assert dispatch.preferred == [[], ["tcp://worker-1"], ["tcp://worker-1", "tcp://worker-2"]]
    assert local.calls == 0


# -- tasks on the cluster ----------------------------------------------------------------


def word_count(text: str) -> int:
    import os

    return len(text.split()) * 1000 + os.getpid() % 1  # (runs in a worker process)


def worker_pid() -> int:
    return os.getpid()


def counted_graph(where: str) -> list[Any]:
    with options(temperature=0):
        words = generate(Step(inputs=["one two"], label="words"))
    return [task(word_count, where=where)(words), task(worker_pid, where=where)()]


def test_a_task_where_cluster_runs_on_a_worker(client: Any, tmp_path: pathlib.Path) -> None:
    engine, executor = executor_for(client, tmp_path)
    count, where = roots = counted_graph("cluster")
    result = run(*roots, engine=engine, executor=executor, progress=False)
    assert result.status == "done" and count.value == "3000"  # "<words: one two>": 3 words
    assert where.parsed in client.run(os.getpid).values() and where.parsed != os.getpid()
    local_roots = counted_graph("driver")
    local = run(*local_roots, engine=engine, progress=False)
    assert local_roots[0].value == "3000" and local_roots[1].parsed == os.getpid()
    assert outcome(result, roots)["nodes"] == outcome(local, local_roots)["nodes"]
    assert outcome(result, roots)["edges"] == outcome(local, local_roots)["edges"]


def test_a_task_where_cluster_needs_an_executor_and_importable_code(
    client: Any, tmp_path: pathlib.Path
) -> None:
    counted = task(word_count, where="cluster")
    with pytest.raises(ValueError, match="give the run an executor"):
        run(counted("a b"), engine=ScriptedEngine(), progress=False)
    module = tmp_path / "driver_only_module.py"
    module.write_text("def shout(text):\n    return text.upper()\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        import driver_only_module  # type: ignore[import-not-found]

        engine, executor = executor_for(client, tmp_path)
        shout = task(driver_only_module.shout, where="cluster")
        with pytest.raises(NodeFailedError) as raised:
            run(shout("hi"), engine=engine, executor=executor, progress=False)
        error = raised.value.error
        assert isinstance(error, ExecutorError)
        assert "driver_only_module.shout" in str(error) and "install its module" in str(error)
        local = task(lambda: 1, where="cluster")
        with pytest.raises(NodeFailedError) as raised:
            run(local(), engine=engine, executor=executor, progress=False)
        assert "module-level function" in str(raised.value.error)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("driver_only_module", None)


def test_a_view_of_an_engine_runs_under_its_state_on_the_workers(
    client: Any, tmp_path: pathlib.Path
) -> None:
    engine, executor = executor_for(client, tmp_path)
    brief = options(temperature=0, system="be brief")(engine)  # a view: the engine, a state
    plain = generate(Step(inputs=["x"], label="plain"), options={"temperature": 0})
    viewed = generate(Step(inputs=["x"], label="viewed"), engine=brief)
    result = run(plain, viewed, engine=engine, executor=executor, progress=False)
    assert result.status == "done"
    assert plain.value == "<plain: x>" and viewed.value == "<be brief\n\nviewed: x>"
    assert sorted(calls(tmp_path)) == ["be brief  viewed: x", "plain: x"]


def test_closing_the_executor_closes_the_workers_engines(
    client: Any, tmp_path: pathlib.Path
) -> None:
    from tests.graph.dask_helpers import engine_plugin_keys

    engine, executor = executor_for(client, tmp_path)
    with executor:
        run(*fan(2), engine=engine, executor=executor, progress=False)
        built = client.run(engine_plugin_keys, executor.plugin_name)
        key = EngineSpec(SCRIPTED, {"log_dir": str(tmp_path), "latency": 0.0}).key
        assert all(keys == [key] for keys in built.values())
    assert all(keys == [] for keys in client.run(engine_plugin_keys, executor.plugin_name).values())
    again = run(*fan(2, first=2), engine=engine, executor=executor, progress=False)
    assert again.status == "done"  # a later run registers the engines again
    executor.close()


def test_executors_of_the_same_engines_share_them_until_the_last_closes(
    client: Any, tmp_path: pathlib.Path
) -> None:
    """Two executors of one engine spec (two drivers, say) share the workers' engines.
    The second to start leaves them as they are, with a generation of the first
    running on them (Dask used to replace the plugin: that generation never ended).
    The first to close leaves them to the other; the last to close closes them."""
    import threading

    from tests.graph.dask_helpers import engine_ids, engine_plugin_keys

    spec = EngineSpec(SCRIPTED, {"log_dir": str(tmp_path), "latency": 1.0})
    first_engine, second_engine = spec.build(), spec.build()
    first = DaskExecutor(client, engines={first_engine: spec})
    second = DaskExecutor(client, engines={second_engine: spec})
    assert first.plugin_name == second.plugin_name
    results: list[Any] = []
    running = threading.Thread(
        target=lambda: results.append(
            run(*fan(1), engine=first_engine, executor=first, progress=False)
        )
    )
    running.start()
    try:
        deadline = time.monotonic() + 60
        while not calls(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert calls(tmp_path), "the first executor's generation did not start"
        built = client.run(engine_ids, first.plugin_name)
        during = run(*fan(1, first=1), engine=second_engine, executor=second, progress=False)
    finally:
        running.join(timeout=60)
    assert not running.is_alive() and results[0].status == "done", results
    assert during.status == "done"
    assert client.run(engine_ids, first.plugin_name) == built  # neither torn down nor rebuilt
    second.close()
    assert client.run(engine_ids, first.plugin_name) == built  # the first still holds them
    after = run(*fan(1, first=2), engine=first_engine, executor=first, progress=False)
    assert after.status == "done" and after.generations == 1
    first.close()
    assert all(keys == [] for keys in client.run(engine_plugin_keys, first.plugin_name).values())


def test_closing_an_executor_whose_client_is_closed_raises_nothing(
    client: Any, tmp_path: pathlib.Path
) -> None:
    """Nothing can be let go of through a closed client (the cluster keeps the hold, as
    a dead driver's), and ``with DaskExecutor(...)`` must not hide the block's error."""
    driver = distributed.Client(client.scheduler.address)
    spec = EngineSpec(SCRIPTED, {"log_dir": str(tmp_path), "latency": 0.0})
    engine = spec.build()
    executor = DaskExecutor(driver, engines={engine: spec})
    try:
        assert run(*fan(1), engine=engine, executor=executor, progress=False).status == "done"
    finally:
        driver.close()
    executor.close()


class Echo(Component[str]):
    template = "{text}"
    text: Span


def test_a_resumed_run_keeps_its_executor(
    client: Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spangraph import interrupt

    engine, executor = executor_for(client, tmp_path)
    submitted: list[object] = []
    submit = client.submit

    def recording(fn: Any, *args: Any, **kwargs: Any) -> Any:
        submitted.append(fn)
        return submit(fn, *args, **kwargs)

    monkeypatch.setattr(client, "submit", recording)

    @task
    def approve(draft: str) -> str:
        return interrupt(f"approve {draft}?")

    with options(temperature=0):
        draft = generate(CBlock("g0"))
        final = generate(Echo(text=approve(draft)))
    store = MemoryStore()
    paused = run(final, engine=engine, executor=executor, cache=store, progress=False)
    assert paused.status == "interrupted" and len(submitted) == 1  # the draft, on a worker
    (question,) = paused.interrupts
    resumed = paused.resume({question.id: "g1"})
    assert resumed.status == "done"
    assert len(submitted) == 2  # the follow-up ran on a worker too, not in the driver
