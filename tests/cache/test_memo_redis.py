"""``RedisStore`` on a real redis-server: one memo shared by several drivers.

The rules are ``SQLiteStore``'s (a bad row is skipped, counted, deleted and
recomputed, its bytes never quoted; the memo never fails a run) plus the
server's: entries are written ``SET NX`` under a namespace's prefix, and an
in-flight lease is a key with a TTL.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
import warnings
from typing import Any

import pytest

from spangraph import run
from spangraph.cache import LayeredStore, MemoryStore, RedisStore
from spangraph.cache._lease import this_process
from spangraph.cache._redis import _checksum
from spangraph.engines import Request, ScriptedEngine
from tests.cache.memo_helpers import ROOT, answer, expected, fan, values
from tests.cache.test_memo_rows import GOOD, SECRET, WRONG_SHAPES
from tests.redis_server import RedisServer, redis_server

pytest.importorskip("redis")


def fresh(server: RedisServer, **kwargs: Any) -> RedisStore:
    """A store in a namespace of its own (tests share the module's server)."""
    return RedisStore(server.url, namespace=f"t{uuid.uuid4().hex[:12]}", **kwargs)


def raw_client(server: RedisServer) -> Any:
    import redis

    return redis.Redis.from_url(server.url)


def test_round_trip_set_nx_and_namespaces(redis_server: RedisServer) -> None:
    store, other = fresh(redis_server), fresh(redis_server)
    store.put("k", GOOD)
    store.put("k", {**GOOD, "text": "a second writer"})  # values never change: SET NX
    assert store.get("k") == GOOD and store.get("missing") is None
    assert other.get("k") is None and other.keys() == []  # namespaces are apart
    assert store.keys() == ["k"] and len(store) == 1
    assert store.stats.writes == 1 and store.stats.hits == 1 and store.stats.misses == 1
    assert redis_server.key not in repr(store)  # the URL's key never shows
    assert store.clear() == 1 and store.get("k") is None
    store.close()
    other.close()


def test_an_entry_with_a_ttl_expires_on_the_server(redis_server: RedisServer) -> None:
    store = fresh(redis_server)
    store.put("k", GOOD, ttl=60)
    ttl = raw_client(redis_server).pttl(f"{store.namespace}:memo:k")
    assert 0 < ttl <= 60_000
    store.put("j", GOOD)
    assert raw_client(redis_server).pttl(f"{store.namespace}:memo:j") == -1  # no expiry
    store.close()


def test_a_run_is_served_from_the_memo_and_layered_works(redis_server: RedisServer) -> None:
    store = fresh(redis_server)
    engine = ScriptedEngine(answer)
    first = run(*fan(5), engine=engine, cache=store, progress=False)
    assert first.status == "done" and engine.calls == 5 and len(store) == 5
    front = MemoryStore()
    thunks = fan(5)
    again = run(*thunks, engine=engine, cache=LayeredStore(front, store), progress=False)
    assert engine.calls == 5 and again.cache_hits == 5 and len(front) == 5
    assert values(thunks) == [expected(f"g{i}") for i in range(5)]
    store.close()


def _corrupt(client: Any, store: RedisStore, keys: list[str]) -> None:
    """One way to spoil a value per key: the checksum, the JSON, the bytes (not
    UTF-8), another key's value copied over, no checksum at all."""
    name = f"{store.namespace}:memo:"
    good = client.get(name + keys[0])
    checksum, _, data = good.partition(b" ")
    spoiled = [
        b"0" * 32 + b" " + data,
        checksum + b" " + data[:-3],
        checksum + b" " + b'{"text": "\xff\xfe' + SECRET.encode() + b'"}',
        client.get(name + keys[4]),
        SECRET.encode(),
    ]
    for key, value in zip(keys, spoiled, strict=True):
        client.set(name + key, value)


def test_bad_rows_are_skipped_counted_deleted_and_recomputed(redis_server: RedisServer) -> None:
    store = fresh(redis_server)
    engine = ScriptedEngine(answer)
    run(*fan(6), engine=engine, cache=store, progress=False)
    keys = sorted(store.keys())
    _corrupt(raw_client(redis_server), store, keys[:5])
    thunks = fan(6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(*thunks, engine=engine, cache=store, progress=False)
    assert result.status == "done" and values(thunks) == [expected(f"g{i}") for i in range(6)]
    assert result.cache_bad_entries == store.stats.bad_rows == 5
    assert engine.calls == 6 + 5 and result.cache_hits == 1
    assert len(caught) == 1 and SECRET not in str(caught[0].message)
    again = run(*fan(6), engine=engine, cache=store, progress=False)
    assert again.cache_hits == 6 and engine.calls == 11  # the rows were replaced
    store.close()


def test_wrong_shape_entries_are_bad_entries(redis_server: RedisServer) -> None:
    store = fresh(redis_server)
    count = len(WRONG_SHAPES)
    engine = ScriptedEngine(answer)
    run(*fan(count), engine=engine, cache=store, progress=False)
    client = raw_client(redis_server)
    for key, value in zip(sorted(store.keys()), WRONG_SHAPES, strict=True):
        data = json.dumps(value).encode()  # a valid checksum over the wrong shape
        client.set(f"{store.namespace}:memo:{key}", _checksum(key, data) + b" " + data)
    thunks = fan(count)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(*thunks, engine=engine, cache=store, progress=False)
    assert result.status == "done" and result.cache_bad_entries == count
    assert values(thunks) == [expected(f"g{i}") for i in range(count)]
    assert engine.calls == 2 * count
    assert all(SECRET not in str(w.message) for w in caught)
    store.close()


DRIVER = textwrap.dedent(
    """
    import sys, anyio
    from spangraph import run
    from spangraph.cache import RedisStore
    from spangraph.engines import ScriptedEngine
    from tests.cache.memo_helpers import answer, fan

    async def slow(request):
        await anyio.sleep(float(sys.argv[3]))
        return answer(request)

    store = RedisStore(sys.argv[1], namespace=sys.argv[2], lease_timeout=600)
    engine = ScriptedEngine(slow)
    print("READY", flush=True)
    sys.stdin.readline()
    result = run(*fan(8), engine=engine, cache=store, progress=False, max_concurrency=4)
    store.close()
    print(result.status, engine.calls, result.cache_hits, flush=True)
    """
)


def start_driver(url: str, namespace: str, latency: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, url, namespace, str(latency)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
    return proc


def finish(proc: subprocess.Popen[str]) -> tuple[str, int, int]:
    out, _ = proc.communicate(timeout=120)
    status, calls, hits = out.split()
    return status, int(calls), int(hits)


@pytest.mark.timeout(180)
def test_two_drivers_in_two_processes_share_one_memo(redis_server: RedisServer) -> None:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    first = start_driver(redis_server.url, namespace, 0.0)
    assert first.stdin is not None
    first.stdin.write("go\n")
    first.stdin.flush()
    assert finish(first) == ("done", 8, 0)
    second = start_driver(redis_server.url, namespace, 0.0)
    assert second.stdin is not None
    second.stdin.write("go\n")
    second.stdin.flush()
    assert finish(second) == ("done", 0, 8)


@pytest.mark.timeout(180)
def test_with_leases_concurrent_drivers_make_each_generation_once(
    redis_server: RedisServer,
) -> None:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    drivers = [start_driver(redis_server.url, namespace, 0.3) for _ in range(2)]
    for proc in drivers:  # both start at once
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [finish(proc) for proc in drivers]
    assert all(status == "done" for status, _, _ in results)
    assert sum(calls for _, calls, _ in results) == 8
    assert sum(hits for _, _, hits in results) == 8  # what one computed, the other served
    assert not list(raw_client(redis_server).scan_iter(match=f"{namespace}:lease:*"))


def test_a_lease_whose_owner_is_gone_is_taken_over(redis_server: RedisServer) -> None:
    store = fresh(redis_server, lease_timeout=3600)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    host = this_process().host
    engine = ScriptedEngine(answer)
    thunks = fan(1)
    key_probe = fresh(redis_server)
    run(*fan(1), engine=engine, cache=key_probe, progress=False)
    [key] = key_probe.keys()
    raw_client(redis_server).set(
        f"{store.namespace}:lease:{key}", f"token {dead.stdout.strip()} 1 {host}", px=3_600_000
    )
    result = run(*thunks, engine=engine, cache=store, progress=False)
    assert result.status == "done" and values(thunks) == [expected("g0")]
    assert engine.calls == 2 and store.stats.lease_takeovers == 1
    store.close()
    key_probe.close()


def test_a_failed_generation_gives_its_lease_back(redis_server: RedisServer) -> None:
    store = fresh(redis_server)

    def broken(request: Request) -> str:
        raise ValueError("the engine broke")

    failed = run(*fan(2), engine=ScriptedEngine(broken), cache=store, on_error="continue")
    assert len(failed.failed) == 2 and store.stats.leases >= 2
    assert not list(raw_client(redis_server).scan_iter(match=f"{store.namespace}:lease:*"))
    store.close()


def test_a_server_killed_mid_run_loses_nothing(redis_server: RedisServer) -> None:
    """The run's own server (not the module's): killed while generations are under
    way, the run goes on without the memo, warns once and keeps every output."""
    with redis_server_of_its_own() as server:
        store = RedisStore(server.url, namespace="killed", timeout=2)
        done: list[str] = []

        def reply(request: Request) -> str:
            done.append(request.text)
            if len(done) == 3:
                server.kill()
            return answer(request)

        engine = ScriptedEngine(reply)
        thunks = fan(8)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = run(*thunks, engine=engine, cache=store, progress=False, max_concurrency=1)
        assert result.status == "done" and engine.calls == 8
        assert values(thunks) == [expected(f"g{i}") for i in range(8)]
        assert result.cache_write_errors + result.cache_read_errors >= 5
        assert len([w for w in caught if "span cache" in str(w.message)]) == 1
        store.close()


def redis_server_of_its_own() -> Any:
    return redis_server()
