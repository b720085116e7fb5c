"""Output-memo stores: in-memory LRU, SQLite (persistent, multi-process), layered.

Values are JSON objects (never pickle). Every store keeps ``CacheStats``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import sqlite3
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any, Protocol, runtime_checkable

SCHEMA_VERSION = 1
APPLICATION_ID = 0x53504752  # "SPGR": marks a database as a spangraph memo


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    writes: int = 0
    evictions: int = 0
    expired: int = 0
    bad_rows: int = 0
    entries: int = 0
    bytes: int = 0


@runtime_checkable
class Store(Protocol):
    """What the generate protocol needs from a memo store."""

    name: str
    stats: CacheStats

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: Mapping[str, Any], ttl: float | None = None) -> None: ...

    def evict(self) -> None: ...


class MemoryStore:
    """An in-process LRU with an entry budget and a byte budget (JSON text size)."""

    name = "memory"

    def __init__(self, max_entries: int = 10_000, max_bytes: int = 256 * 2**20) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("MemoryStore budgets must be >= 1")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._data: OrderedDict[str, tuple[str, float | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._with_ttl = 0

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                self.stats.misses += 1
                return None
            text, expires = item
            if expires is not None and expires <= time.time():
                self._drop(key)
                self.stats.expired += 1
                self.stats.misses += 1
                return None
            self._data.move_to_end(key)
            self.stats.hits += 1
        value: dict[str, Any] = json.loads(text)
        return value

    def put(self, key: str, value: Mapping[str, Any], ttl: float | None = None) -> None:
        text = json.dumps(value, separators=(",", ":"))
        expires = time.time() + ttl if ttl is not None else None
        with self._lock:
            self._with_ttl += expires is not None
            if key in self._data:
                self._drop(key)
            self._data[key] = (text, expires)
            self.stats.entries += 1
            self.stats.bytes += len(text)
            self.stats.writes += 1
            self._enforce()

    def evict(self) -> None:
        """Drop expired entries and keep within budgets."""
        if not self._with_ttl:
            return  # budgets are kept on every put; only expiry needs a scan
        now = time.time()
        with self._lock:
            for key in [k for k, (_, exp) in self._data.items() if exp is not None and exp <= now]:
                self._drop(key)
                self.stats.expired += 1
            self._enforce()

    def _enforce(self) -> None:
        while self._data and (
            len(self._data) > self.max_entries or self.stats.bytes > self.max_bytes
        ):
            oldest = next(iter(self._data))
            self._drop(oldest)
            self.stats.evictions += 1

    def _drop(self, key: str) -> None:
        text, _ = self._data.pop(key)
        self.stats.entries -= 1
        self.stats.bytes -= len(text)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def keys(self) -> list[str]:
        """Keys from least to most recently used."""
        return list(self._data)

    def __len__(self) -> int:
        return len(self._data)


class SQLiteStore:
    """A persistent memo in one SQLite table, safe for several processes at once.

    WAL journal, a busy timeout and one short transaction per operation; JSON
    values with a blake2b checksum per row; the schema version in
    ``PRAGMA user_version`` and a spangraph marker in ``application_id``. A
    corrupt or foreign file is moved aside (with a warning) and replaced by
    an empty store; a row whose checksum does not match is skipped, deleted
    and counted in ``stats.bad_rows``.
    """

    name = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_entries: int | None = None,
        max_bytes: int | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.path = pathlib.Path(path)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.stats = CacheStats()
        self._with_ttl = False
        self.moved_aside: pathlib.Path | None = None
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = self._open()

    # -- opening -----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        return conn

    def _open(self) -> sqlite3.Connection:
        try:
            conn = self._connect()
            self._check_or_init(conn)
            return conn
        except (sqlite3.DatabaseError, _ForeignDatabase) as exc:
            with contextlib.suppress(Exception):
                conn.close()
            self._move_aside(exc)
            conn = self._connect()
            self._check_or_init(conn)
            return conn

    def _check_or_init(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id == 0 and not tables:
            conn.execute("BEGIN IMMEDIATE")
            try:
                tables = {
                    r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                }
                if not tables:
                    conn.execute(
                        "CREATE TABLE memo (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                        "checksum TEXT NOT NULL, size INTEGER NOT NULL, created REAL NOT NULL, "
                        "accessed REAL NOT NULL, expires REAL)"
                    )
                    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return
        if app_id != APPLICATION_ID or "memo" not in tables:
            raise _ForeignDatabase(f"not a spangraph memo (application_id={app_id:#x})")
        if version != SCHEMA_VERSION:
            raise _ForeignDatabase(
                f"memo schema version {version}, this spangraph uses {SCHEMA_VERSION}"
            )
        if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError("quick_check failed")

    def _move_aside(self, reason: BaseException) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.bad-{stamp}-{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, target)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self.path}{suffix}", f"{target}{suffix}")
        self.moved_aside = target
        warnings.warn(
            f"span cache {self.path} is unreadable ({reason}); moved it to {target} and "
            "started an empty one",
            RuntimeWarning,
            stacklevel=4,
        )

    # -- the store -----------------------------------------------------------------------

    def get(self, key: str) -> dict[str, Any] | None:
        now = time.time()
        with self._lock:
            row = self._conn.execute(
                "SELECT value, checksum, expires FROM memo WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                self.stats.misses += 1
                return None
            text, checksum, expires = row
            if checksum != _checksum(text):
                self.stats.bad_rows += 1
                self.stats.misses += 1
                self._conn.execute("DELETE FROM memo WHERE key = ?", (key,))
                return None
            if expires is not None and expires <= now:
                self.stats.expired += 1
                self.stats.misses += 1
                self._conn.execute("DELETE FROM memo WHERE key = ?", (key,))
                return None
            self._conn.execute("UPDATE memo SET accessed = ? WHERE key = ?", (now, key))
            self.stats.hits += 1
        try:
            value: dict[str, Any] = json.loads(text)
        except ValueError:
            self.stats.bad_rows += 1
            return None
        return value

    def put(self, key: str, value: Mapping[str, Any], ttl: float | None = None) -> None:
        text = json.dumps(value, separators=(",", ":"))
        now = time.time()
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO memo (key, value, checksum, size, created, accessed, "
                "expires) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, text, _checksum(text), len(text), now, now, now + ttl if ttl else None),
            )
            self.stats.writes += 1
            self._with_ttl = self._with_ttl or ttl is not None
        if self.max_entries is not None or self.max_bytes is not None:
            self.evict()

    def evict(self) -> None:
        """Delete expired rows, then the least recently used beyond the budgets."""
        if not self._with_ttl and self.max_entries is None and self.max_bytes is None:
            return
        now = time.time()
        with self._lock:
            gone = self._conn.execute(
                "DELETE FROM memo WHERE expires IS NOT NULL AND expires <= ?", (now,)
            ).rowcount
            self.stats.expired += max(gone, 0)
            count, size = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM memo"
            ).fetchone()
            while (self.max_entries is not None and count > self.max_entries) or (
                self.max_bytes is not None and size > self.max_bytes
            ):
                row = self._conn.execute(
                    "SELECT key, size FROM memo ORDER BY accessed ASC LIMIT 1"
                ).fetchone()
                if row is None:
                    break
                self._conn.execute("DELETE FROM memo WHERE key = ?", (row[0],))
                count, size = count - 1, size - row[1]
                self.stats.evictions += 1
            self.stats.entries, self.stats.bytes = count, size

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM memo").fetchone()[0])

    def keys(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT key FROM memo ORDER BY accessed")]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"


class LayeredStore:
    """Stores in front of each other (memory before SQLite): reads try each in
    order and copy a hit into the ones before it; writes go to all."""

    name = "layered"

    def __init__(self, *stores: Store) -> None:
        if not stores:
            raise ValueError("LayeredStore needs at least one store")
        self.stores = stores
        self.stats = CacheStats()

    def get(self, key: str) -> dict[str, Any] | None:
        for index, store in enumerate(self.stores):
            value = store.get(key)
            if value is not None:
                for front in self.stores[:index]:
                    front.put(key, value)
                self.stats.hits += 1
                return value
        self.stats.misses += 1
        return None

    def put(self, key: str, value: Mapping[str, Any], ttl: float | None = None) -> None:
        for store in self.stores:
            store.put(key, value, ttl)
        self.stats.writes += 1

    def evict(self) -> None:
        for store in self.stores:
            store.evict()


class _ForeignDatabase(Exception):
    pass


def _checksum(text: str) -> str:
    return blake2b(text.encode(), digest_size=16).hexdigest()
