"""Looking after the stores (what ``spangraph cache`` uses): the memo's hit counts,
``SQLiteStore.info/prune/clear``, ``KVPrefixStore.inspect/prune/clear``."""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
import time

import pytest

from spangraph.cache import KVPrefixStore, MemoStoreError, SQLiteStore

DAY = 86400.0


def _age(path: pathlib.Path, table: str, column: str, key: str, seconds: float) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(
            f"UPDATE {table} SET accessed = ? WHERE {column} = ?", (time.time() - seconds, key)
        )


def test_hits_are_counted_per_entry_and_kept(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memo.db"
    store = SQLiteStore(path)
    store.put("a", {"v": 1})
    store.put("b", {"v": 2})
    for _ in range(3):
        assert store.get("a") == {"v": 1}
    assert store.get("missing") is None
    store.close()
    reopened = SQLiteStore(path, read_only=True)
    info = reopened.info()
    assert (info.rows, info.hits, info.expired) == (2, 3, 0)
    assert info.bytes == len('{"v":1}') + len('{"v":2}') and info.file_bytes > 0
    assert info.oldest is not None and info.newest is not None and info.last_used is not None
    assert info.oldest <= info.newest <= info.last_used
    reopened.close()


def test_a_memo_without_the_hits_column_gets_it_when_written(tmp_path: pathlib.Path) -> None:
    """A memo of an earlier schema 1 (no ``hits``): read-only it serves and counts no hits;
    writable, the column is added and counted from then on."""
    path = tmp_path / "memo.db"
    old = SQLiteStore(path)
    old.put("a", {"v": 1})
    old.close()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("ALTER TABLE memo DROP COLUMN hits")  # as an earlier spangraph made it
    read_only = SQLiteStore(path, read_only=True)
    assert read_only.get("a") == {"v": 1} and read_only.info().hits == 0
    read_only.close()
    writable = SQLiteStore(path)
    assert writable.get("a") == {"v": 1} and writable.info().hits == 1
    writable.close()


def test_prune_by_age_then_by_size_and_clear(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memo.db"
    store = SQLiteStore(path)
    for key in "abcd":
        store.put(key, {"text": key * 100})
    store.put("expired", {"v": 0}, ttl=0.01)
    store.close()
    _age(path, "memo", "key", "a", 2 * DAY)
    _age(path, "memo", "key", "b", DAY / 2)
    store = SQLiteStore(path)
    time.sleep(0.02)
    assert store.prune(unused_for=DAY) == 2  # a (unused for 2 days) and the expired one
    assert sorted(store.keys()) == ["b", "c", "d"]
    entry = len('{"text":""}') + 100
    assert store.prune(max_bytes=2 * entry) == 1  # b: the least recently used
    assert sorted(store.keys()) == ["c", "d"] and store.info().bytes == 2 * entry
    assert store.prune(unused_for=DAY, max_bytes=10 * entry) == 0
    assert store.clear() == 2 and len(store) == 0 and store.info().rows == 0
    store.close()
    read_only = SQLiteStore(path, read_only=True)
    with pytest.raises(MemoStoreError, match="read-only"):
        read_only.prune(unused_for=1)
    with pytest.raises(MemoStoreError, match="read-only"):
        read_only.clear()
    read_only.close()


def _kv(folder: pathlib.Path) -> KVPrefixStore:
    store = KVPrefixStore(folder, model="m")
    for n, size in ((1, 1000), (2, 2000), (3, 3000)):
        digest = str(n) * 40
        store.path(digest).write_bytes(b"k" * size)
        store.record(digest, tokens=n * 10)
    return store


def test_kv_inspect_reads_without_writing(tmp_path: pathlib.Path) -> None:
    assert KVPrefixStore.inspect(tmp_path / "none") is None
    assert not (tmp_path / "none").exists()
    folder = tmp_path / "kv"
    _kv(folder).close()
    (folder / ("9" * 40 + ".kv")).write_bytes(b"unindexed")  # opening a store would delete it
    (folder / f"{'8' * 40}.{2**22 + 1}-abc.tmp").write_bytes(b"t")
    before = sorted(p.name for p in folder.iterdir())
    info = KVPrefixStore.inspect(folder)
    assert info is not None
    assert (info.files, info.prefixes, info.tokens, info.models, info.temporary) == (4, 3, 60, 1, 1)
    assert info.bytes == 6000 + len(b"unindexed")
    assert info.oldest_use is not None and info.last_use is not None
    assert sorted(p.name for p in folder.iterdir()) == before


def test_kv_prune_by_age_then_by_size_and_clear(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "kv"
    _kv(folder).close()
    _age(folder / "index.db", "prefixes", "digest", "1" * 40, 2 * DAY)
    store = KVPrefixStore(folder, model="m")
    assert store.prune(unused_for=DAY) == 1
    assert store.digests() == ["2" * 40, "3" * 40] and not store.path("1" * 40).exists()
    assert store.prune(max_bytes=3500) == 1  # the least recently used (2) goes
    assert store.digests() == ["3" * 40] and store.total_bytes() == 3000
    assert store.clear() == 1 and store.digests() == []
    assert not any(folder.glob("*.kv"))
    store.close()
