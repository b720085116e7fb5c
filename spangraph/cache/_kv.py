"""The KV-prefix store: saved llama.cpp slot states, keyed by prefix digest.

Files live in one directory (the engine's ``slot_save_path``), beside a small
SQLite index of their sizes and last use, so another process finds and
reuses them. A byte budget is kept by deleting the least recently used
files (the file and its index row together).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sqlite3
import threading
import time


class KVPrefixStore:
    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = 2 * 2**30) -> None:
        if max_bytes < 1:
            raise ValueError(f"KVPrefixStore max_bytes must be >= 1, got {max_bytes}")
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.evictions = 0
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            self.directory / "index.db", timeout=30, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA busy_timeout=30000")
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS prefixes (digest TEXT PRIMARY KEY, size INTEGER NOT NULL, "
            "tokens INTEGER NOT NULL, accessed REAL NOT NULL)"
        )

    @staticmethod
    def filename(digest: str) -> str:
        """The file name llama.cpp saves under (relative to the directory)."""
        return f"{digest}.kv"

    def path(self, digest: str) -> pathlib.Path:
        return self.directory / self.filename(digest)

    def has(self, digest: str) -> bool:
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM prefixes WHERE digest = ?", (digest,)
            ).fetchone()
        return row is not None and self.path(digest).is_file()

    def tokens(self, digest: str) -> int:
        with self._lock:
            row = self._conn.execute(
                "SELECT tokens FROM prefixes WHERE digest = ?", (digest,)
            ).fetchone()
        return int(row[0]) if row else 0

    def record(self, digest: str, tokens: int) -> None:
        """Index a file llama.cpp has just saved, then keep the byte budget."""
        size = self.path(digest).stat().st_size
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO prefixes (digest, size, tokens, accessed) "
                "VALUES (?, ?, ?, ?)",
                (digest, size, tokens, time.time()),
            )
        self.evict()

    def touch(self, digest: str) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE prefixes SET accessed = ? WHERE digest = ?", (time.time(), digest)
            )

    def evict(self) -> None:
        """Delete least recently used files until the total fits the budget."""
        with self._lock:
            total = self._conn.execute("SELECT COALESCE(SUM(size), 0) FROM prefixes").fetchone()[0]
            while total > self.max_bytes:
                row = self._conn.execute(
                    "SELECT digest, size FROM prefixes ORDER BY accessed ASC LIMIT 1"
                ).fetchone()
                if row is None:
                    break
                digest, size = row
                with contextlib.suppress(FileNotFoundError):
                    self.path(digest).unlink()
                self._conn.execute("DELETE FROM prefixes WHERE digest = ?", (digest,))
                total -= size
                self.evictions += 1

    def total_bytes(self) -> int:
        with self._lock:
            return int(
                self._conn.execute("SELECT COALESCE(SUM(size), 0) FROM prefixes").fetchone()[0]
            )

    def digests(self) -> list[str]:
        """Indexed prefixes, least recently used first."""
        with self._lock:
            return [
                r[0] for r in self._conn.execute("SELECT digest FROM prefixes ORDER BY accessed")
            ]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
