"""In-flight leases: processes sharing a memo compute a key once, and a dead
lease holder blocks nobody.

The rules: a generation that misses takes the key's lease; another one
(in this process or another) that misses meanwhile waits without blocking
the event loop and serves the entry as a hit; the lease goes back with the
entry, or when the generation fails or is cancelled; a lease whose owner
is gone is taken over at once, so a crash never leaves a deadlock.
"""

from __future__ import annotations

import json
import pathlib
import signal
import sqlite3
import subprocess
import sys
import textwrap
from typing import Any

import anyio
import pytest

from spangraph import arun, run
from spangraph.cache import SQLiteStore
from spangraph.engines import Request, ScriptedEngine
from spangraph.graph import RetryPolicy
from tests.cache.memo_helpers import ROOT, answer, expected, fan, values

#: Long enough that a test which waited it out would hit pytest's timeout first.
FOREVER = 3600.0


def leases(path: pathlib.Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM lease").fetchone()[0])
    finally:
        conn.close()


HOLDER = textwrap.dedent(
    """
    import sys, anyio
    from spangraph import run
    from spangraph.cache import SQLiteStore
    from spangraph.engines import ScriptedEngine
    from tests.cache.memo_helpers import answer, fan

    async def slow(request):
        print("COMPUTING", flush=True)  # the lease is taken before the engine is called
        await anyio.sleep(float(sys.argv[2]))
        return answer(request)

    store = SQLiteStore(sys.argv[1], lease_timeout=3600)
    run(*fan(1), engine=ScriptedEngine(slow), cache=store, progress=False)
    print("STORED", flush=True)
    """
)


def start_holder(path: pathlib.Path, seconds: float) -> subprocess.Popen[str]:
    """A process that takes the lease of ``fan(1)``'s key and computes for ``seconds``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(seconds)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "COMPUTING"
    return proc


@pytest.mark.timeout(120)
def test_a_killed_lease_holder_blocks_nobody(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memo.db"
    SQLiteStore(path).close()
    holder = start_holder(path, FOREVER)
    assert leases(path) == 1
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    store = SQLiteStore(path, lease_timeout=FOREVER)
    engine = ScriptedEngine(answer)
    thunks = fan(1)
    result = run(*thunks, engine=engine, cache=store, progress=False)
    assert result.status == "done" and values(thunks) == [expected("g0")]
    assert engine.calls == 1 and store.stats.lease_takeovers == 1
    assert leases(path) == 0 and len(store) == 1


@pytest.mark.timeout(120)
def test_a_live_lease_holder_is_waited_for_and_served_as_a_hit(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memo.db"
    SQLiteStore(path).close()
    holder = start_holder(path, 1.0)
    store = SQLiteStore(path, lease_timeout=FOREVER)
    engine = ScriptedEngine(answer)
    thunks = fan(1)
    result = run(*thunks, engine=engine, cache=store, progress=False)
    assert holder.wait(timeout=60) == 0
    assert result.status == "done" and values(thunks) == [expected("g0")]
    assert engine.calls == 0 and result.cache_hits == 1 and thunks[0].cache_hit
    assert store.stats.leases == 0 and leases(path) == 0


@pytest.mark.timeout(120)
def test_an_expired_lease_is_taken_over(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memo.db"
    SQLiteStore(path).close()
    holder = start_holder(path, FOREVER)
    try:
        conn = sqlite3.connect(path)
        conn.execute("UPDATE lease SET expires = 0")  # as if it had run past its lease
        conn.commit()
        conn.close()
        store = SQLiteStore(path, lease_timeout=FOREVER)
        engine = ScriptedEngine(answer)
        result = run(*fan(1), engine=engine, cache=store, progress=False)
        assert result.status == "done" and engine.calls == 1
        assert store.stats.lease_takeovers == 1
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.timeout(120)
def test_generations_of_one_process_wait_for_each_other(tmp_path: pathlib.Path) -> None:
    """Two runs at once in one event loop, on one store: each key is computed once, and
    the waiting generations leave the loop free (else the owner could never finish)."""
    store = SQLiteStore(tmp_path / "memo.db")
    engine = ScriptedEngine(answer, latency=0.05)
    firsts, seconds = fan(6), fan(6)
    results: list[Any] = []

    async def main() -> None:
        async def one(thunks: list[Any]) -> None:
            results.append(await arun(*thunks, engine=engine, cache=store, progress=False))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, firsts)
            tg.start_soon(one, seconds)

    anyio.run(main)
    assert values(firsts) == values(seconds) == [expected(f"g{i}") for i in range(6)]
    assert engine.calls == 6 and sum(r.cache_hits for r in results) == 6
    assert leases(tmp_path / "memo.db") == 0


@pytest.mark.timeout(120)
def test_a_waiter_that_gives_up_leaves_the_owners_lease(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memo.db"
    store = SQLiteStore(path)
    owner_engine = ScriptedEngine(answer, latency=2.0)
    seen: list[int] = []

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: arun(*fan(1), engine=owner_engine, cache=store, progress=False))
            while not leases(path):
                await anyio.sleep(0.01)
            waiter = await arun(
                *fan(1),
                engine=ScriptedEngine(answer),
                cache=store,
                timeout=0.05,
                on_error="continue",
                retry=RetryPolicy(attempts=1),
                progress=False,
            )
            assert len(waiter.failed) == 1  # it timed out waiting
            seen.append(leases(path))  # the owner still computes under its lease

    anyio.run(main)
    assert seen == [1] and owner_engine.calls == 1 and leases(path) == 0 and len(store) == 1


def test_a_failed_or_cancelled_generation_gives_its_lease_back(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memo.db"
    store = SQLiteStore(path)

    def broken(request: Request) -> str:
        raise ValueError("the engine broke")

    failed = run(*fan(2), engine=ScriptedEngine(broken), cache=store, on_error="continue")
    assert len(failed.failed) == 2 and leases(path) == 0
    slow = ScriptedEngine(answer, latency=FOREVER)
    timed_out = run(*fan(2), engine=slow, cache=store, on_error="continue", timeout=0.05)
    assert len(timed_out.failed) == 2 and leases(path) == 0
    assert store.stats.leases == store.stats.misses >= 4  # one per attempt (retries too)
    engine = ScriptedEngine(answer)
    assert run(*fan(2), engine=engine, cache=store).status == "done" and engine.calls == 2


def test_no_leases_on_request_or_when_read_only(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memo.db"
    store = SQLiteStore(path, lease_timeout=None)
    run(*fan(3), engine=ScriptedEngine(answer), cache=store, progress=False)
    assert store.stats.leases == 0 and len(store) == 3
    store.close()
    reader = SQLiteStore(path, read_only=True)
    with pytest.warns(RuntimeWarning, match="read-only"):
        run(*fan(4), engine=ScriptedEngine(answer), cache=reader, progress=False)
    assert reader.stats.leases == 0 and reader.stats.lease_errors == 0


WORKER = textwrap.dedent(
    """
    import json, os, pathlib, random, sys, time
    from spangraph import Component, Span, generate, options, run
    from spangraph.cache import SQLiteStore
    from spangraph.engines import ScriptedEngine
    from tests.cache.memo_helpers import answer, expected, fan

    path, me, workers, leases = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    store = SQLiteStore(path, lease_timeout=600 if leases == "on" else None)
    labels = [(me * 25 + i) % 225 for i in range(50)]  # neighbours share 25 keys
    random.Random(me).shuffle(labels)
    thunks = [fan(1, first=i)[0] for i in labels]
    engine = ScriptedEngine(answer, latency=0.02, max_concurrency=8)
    ready = pathlib.Path(path).with_name(f"ready-{me}")
    ready.touch()
    while len(list(ready.parent.glob("ready-*"))) < workers:  # start together
        time.sleep(0.01)
    result = run(*thunks, engine=engine, cache=store, progress=False)
    kept = all(t.value == expected(f"g{i}") for t, i in zip(thunks, labels))
    print(json.dumps({"calls": engine.calls, "kept": kept, "status": result.status}))
    """
)


def shared_memo_calls(tmp_path: pathlib.Path, leases: str) -> tuple[int, int]:
    """8 processes × 50 generations over 225 keys on one memo: engine calls, entries."""
    path = tmp_path / "memo.db"
    SQLiteStore(path).close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), str(me), "8", leases],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me in range(8)
    ]
    calls = 0
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        report = json.loads(out)
        assert report["status"] == "done" and report["kept"]
        calls += report["calls"]
    return calls, len(SQLiteStore(path))


@pytest.mark.timeout(600)
def test_processes_sharing_a_memo_compute_each_key_once(tmp_path: pathlib.Path) -> None:
    (tmp_path / "on").mkdir()
    calls, entries = shared_memo_calls(tmp_path / "on", "on")
    assert entries == 225 and calls == 225


@pytest.mark.timeout(600)
def test_without_leases_processes_may_compute_a_key_twice_but_lose_nothing(
    tmp_path: pathlib.Path,
) -> None:
    calls, entries = shared_memo_calls(tmp_path, "off")
    assert entries == 225 and calls >= 225
