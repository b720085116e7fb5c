"""A completed generation keeps its output whatever the memo store does.

The rule: a store's failure (get, put, evict) is never the generation's.
The run warns once and counts (``Run.cache_write_errors`` /
``cache_read_errors``). Checked with a store that raises, a real full disk
(a file-size limit, and a 96 KiB tmpfs where mounts are allowed), and
read-only memos (a read-only file, folder and medium, and ``read_only=True``),
on the scripted engine inline and handed off, and once on the real engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import textwrap
import warnings
from collections.abc import Mapping
from typing import Any

import anyio
import pytest

from spangraph import CBlock, generate, run
from spangraph.cache import CacheStats, LayeredStore, MemoryStore, MemoStoreError, SQLiteStore
from spangraph.engines import ScriptedEngine, cached
from tests.cache.memo_helpers import (
    answer,
    can_unshare_mounts,
    digest,
    expected,
    fan,
    filled_memo,
    read_only,
    run_python,
    values,
)


class FailingStore:
    """A memory store whose chosen operations raise, as a full disk would."""

    name = "failing"

    def __init__(self, *failing: str) -> None:
        self.failing = set(failing)
        self.inner = MemoryStore()
        self.stats: CacheStats = self.inner.stats

    def _check(self, operation: str) -> None:
        if operation in self.failing:
            raise OSError(28, "No space left on device")

    def get(self, key: str) -> dict[str, Any] | None:
        self._check("get")
        return self.inner.get(key)

    def put(self, key: str, value: Mapping[str, Any], ttl: float | None = None) -> None:
        self._check("put")
        self.inner.put(key, value, ttl)

    def evict(self) -> None:
        self._check("evict")
        self.inner.evict()

    def __repr__(self) -> str:
        return f"FailingStore({sorted(self.failing)})"


@pytest.mark.parametrize("latency", [0.0, 0.005], ids=["inline", "handed-off"])
@pytest.mark.parametrize(
    ("failing", "writes", "reads"),
    [(("put",), 6, 0), (("evict",), 6, 0), (("get",), 0, 6), (("get", "put", "evict"), 12, 6)],
    ids=["put", "evict", "get", "all"],
)
def test_a_failing_store_keeps_every_output(
    failing: tuple[str, ...], writes: int, reads: int, latency: float
) -> None:
    store = FailingStore(*failing)
    engine = ScriptedEngine(answer, latency=latency)
    thunks = fan(6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(*thunks, engine=engine, cache=store, progress=False)
    assert result.status == "done" and engine.calls == 6
    assert values(thunks) == [expected(f"g{i}") for i in range(6)]
    assert (result.cache_write_errors, result.cache_read_errors) == (writes, reads)
    [warning] = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    message = str(warning.message)
    assert "FailingStore" in message and "OSError" in message and "No space left" in message


def test_each_run_warns_once() -> None:
    store = FailingStore("put")
    engine = ScriptedEngine(answer)
    for first in (0, 10):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = run(*fan(4, first=first), engine=engine, cache=store, progress=False)
        assert len(caught) == 1 and result.cache_write_errors == 4


def test_a_direct_generate_keeps_its_output_and_warns() -> None:
    engine = ScriptedEngine(answer)
    with cached(FailingStore("get", "put")):
        action = CBlock("hello")

        async def main() -> str:
            thunk = await engine.generate(action, options={"temperature": 0})
            return str(thunk.value)

        with pytest.warns(RuntimeWarning, match="failed"):
            assert anyio.run(main) == "<hello>"


FULL_DISK = textwrap.dedent(
    """
    import json, resource, signal, sys, warnings
    from spangraph import run
    from spangraph.cache import SQLiteStore
    from spangraph.engines import ScriptedEngine
    from tests.cache.memo_helpers import answer, expected, fan

    path, limit = sys.argv[1], int(sys.argv[2])
    if limit:  # a file-size limit: writes past it fail as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    store = SQLiteStore(path)
    thunks = fan(400, leaf="x" * 100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(*thunks, engine=ScriptedEngine(answer), cache=store, progress=False)
    kept = sum(t.value == expected(f"g{i}", "x" * 100) for i, t in enumerate(thunks))
    print(json.dumps({"kept": kept, "status": result.status, "written": store.stats.writes,
                      "errors": result.cache_write_errors, "warnings": len(caught),
                      "warning": str(caught[0].message) if caught else ""}))
    """
)


def check_full_disk(out: Any) -> None:
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["status"] == "done" and report["kept"] == 400
    assert report["errors"] > 0 and report["written"] + report["errors"] == 400
    assert report["warnings"] == 1 and "put failed" in report["warning"]


def test_a_full_disk_keeps_every_output(tmp_path: pathlib.Path) -> None:
    check_full_disk(run_python(FULL_DISK, str(tmp_path / "memo.db"), str(96 * 1024)))


@pytest.mark.skipif(not can_unshare_mounts(), reason="needs root and mount namespaces")
def test_a_full_tmpfs_keeps_every_output(tmp_path: pathlib.Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    out = run_python(
        FULL_DISK, str(disk / "memo.db"), "0", mounts=f"mount -t tmpfs -o size=96k tmpfs {disk}"
    )
    check_full_disk(out)


@pytest.mark.parametrize("how", ["read_only=True", "file", "folder"])
def test_a_read_only_memo_serves_hits(tmp_path: pathlib.Path, how: str) -> None:
    folder = tmp_path / "memo"
    folder.mkdir()
    path = folder / "memo.db"
    filled_memo(path, 5)
    before = digest(path)
    target = {"file": path, "folder": folder}.get(how)
    with read_only(target) if target is not None else contextlib.nullcontext():
        store = SQLiteStore(path, read_only=how == "read_only=True")
        assert store.read_only and store.read_only_reason
        engine = ScriptedEngine(answer)
        thunks = fan(7)  # five in the memo, two new
        with pytest.warns(RuntimeWarning, match="read-only"):
            result = run(*thunks, engine=engine, cache=store, progress=False)
        assert result.status == "done" and values(thunks) == [expected(f"g{i}") for i in range(7)]
        assert result.cache_hits == 5 and engine.calls == 2
        assert result.cache_write_errors == 2 and result.cache_read_errors == 0
        assert store.stats.hits == 5
        with pytest.raises(MemoStoreError, match="read-only"):
            store.put("k", {"v": 1})
        store.close()
        if how == "folder":  # no -shm could be made: read as immutable, nothing new beside it
            assert sorted(p.name for p in folder.iterdir()) == ["memo.db"]
    assert digest(path) == before


READ_ONLY_MEDIUM = textwrap.dedent(
    """
    import json, sys, warnings
    from spangraph import run
    from spangraph.cache import SQLiteStore
    from spangraph.engines import ScriptedEngine
    from tests.cache.memo_helpers import answer, expected, fan

    store = SQLiteStore(sys.argv[1])
    thunks = fan(7)
    engine = ScriptedEngine(answer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(*thunks, engine=engine, cache=store, progress=False)
    print(json.dumps({"reason": store.read_only_reason, "calls": engine.calls,
                      "hits": result.cache_hits, "errors": result.cache_write_errors,
                      "kept": [t.value == expected(f"g{i}") for i, t in enumerate(thunks)]}))
    """
)


@pytest.mark.skipif(not can_unshare_mounts(), reason="needs root and mount namespaces")
def test_a_memo_on_a_read_only_medium_serves_hits(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "medium"
    folder.mkdir()
    path = folder / "memo.db"
    filled_memo(path, 5)
    before = digest(path)
    out = run_python(
        READ_ONLY_MEDIUM,
        str(path),
        mounts=f"mount --bind {folder} {folder}\nmount -o remount,ro,bind {folder}",
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["reason"] == "the file is not writable"
    assert report["hits"] == 5 and report["calls"] == 2 and report["errors"] == 2
    assert all(report["kept"])
    assert digest(path) == before and sorted(os.listdir(folder)) == ["memo.db"]


@pytest.mark.real
def test_the_real_engine_keeps_its_output_when_the_memo_cannot_be_written(
    llama: Any, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "memo.db"
    SQLiteStore(path).close()
    store = SQLiteStore(path, read_only=True)
    thunk = generate(
        CBlock("The capital of France is"), options={"temperature": 0, "max_tokens": 4}
    )
    with pytest.warns(RuntimeWarning, match="put failed"):
        result = run(thunk, engine=llama, cache=store, progress=False)
    assert result.status == "done" and thunk.value.strip() and not thunk.cache_hit
    assert thunk.usage.output_tokens > 0
    assert result.cache_write_errors == 1 and result.cache_misses == 1


def test_a_memo_that_turns_read_only_while_open_still_serves_hits(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memo.db"
    filled_memo(path, 5)
    store = SQLiteStore(path)
    store._conn.execute("PRAGMA query_only=ON")  # SQLite now refuses every write
    engine = ScriptedEngine(answer)
    thunks = fan(7)
    with pytest.warns(RuntimeWarning, match="put failed"):
        result = run(*thunks, engine=engine, cache=store, progress=False)
    assert values(thunks) == [expected(f"g{i}") for i in range(7)]
    assert result.cache_hits == 5 and engine.calls == 2 and result.cache_write_errors == 2


def test_a_failing_layer_does_not_stop_the_others() -> None:
    front, back = MemoryStore(), FailingStore("get", "put", "evict")
    layered = LayeredStore(front, back)
    engine = ScriptedEngine(answer)
    with pytest.warns(RuntimeWarning, match="FailingStore|LayeredStore"):
        first = run(*fan(3), engine=engine, cache=layered, progress=False)
    assert len(front) == 3 and first.cache_write_errors == 6 and first.cache_read_errors == 3
    again = run(*fan(3), engine=engine, cache=layered, progress=False)  # the front serves them
    assert again.cache_hits == 3 and again.cache_read_errors == 0 and engine.calls == 3
