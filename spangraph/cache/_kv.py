"""The KV-prefix store: saved llama.cpp slot states, keyed by prefix digest.

Files live in one folder (the engine's ``slot_save_path``), beside a small
SQLite index (``index.db``), so another process finds and reuses them. A row
per file says what a restore must be able to trust:

- ``size`` and ``checksum`` (sha256 of the file). llama.cpp trusts a slot
  file: a truncated one makes it abort the whole process
  (``GGML_ASSERT(nread <= state_size)``), and again on every run until the
  file is gone. So a file is restored only after ``verified()`` has found
  its size and checksum equal to its row's.
- ``model``: the sha256 of the GGUF that wrote it. A slot file does not say
  which model made it, and another model's state is not this one's.
- ``tokens`` and ``accessed``: what the file holds and when it was last
  used; a byte budget is kept by deleting the least recently used files
  (file and row together).

A file that fails ``verified()`` (missing, unreadable, another size or
checksum, a row of another model) is dropped with its row, with a
``RuntimeWarning`` that names the file (never its contents); the caller
prefills the prefix again and saves it anew.

Writing never leaves a half file under a real name: llama.cpp saves under
a temporary name (``temp_name()``, ``<digest>.<pid>-<random>.tmp``), then
``commit()`` makes it 0600, takes its checksum, renames it into place
(``os.replace``, atomic) and writes its row, the rename and the row in one
SQLite write transaction, so that no other store sees one without the
other. A temporary file is never restored (only indexed names are), and
those of writers that died are deleted when a store opens, with real-named
files that have no row (a writer killed between the rename and the row).

Verifying reads the whole file (its cost against a restore and a prefill
is in ``docs/design/engine-edges.md``); a file this store has verified is
not read again while its inode, size, mtime and ctime are unchanged (any
write changes the ctime).

The folder (when the store makes it), the index and the files are the
user's alone (0700/0600), whatever the umask: a slot file decodes back to
the document it caches.

Stores in any number of processes, and several in one process, may share an
index. A store used in a forked child opens the index again there (``_conn``).
A process that has the index open must not read its files itself (closing a
descriptor drops SQLite's locks: ``docs/design/guarantees.md``).

The index's schema is ``SCHEMA``; an index that lacks any of its columns (an
older spangraph's, without checksums) or that is not a database is dropped
with its files and started empty: files that cannot be verified are not
restored.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import re
import secrets
import sqlite3
import stat
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

#: The columns a row must have (the index is dropped and started again without them).
SCHEMA = ("digest", "size", "tokens", "accessed", "checksum", "model")
#: Seconds after which a temporary file is deleted even if its writer's pid is alive.
STALE_TEMP_SECONDS = 3600.0
_TEMP_NAME = re.compile(r"[0-9A-Za-z_-]+\.(\d+)-[0-9a-f]+\.tmp")
_SLOT_NAME = re.compile(r"[0-9a-f]{40}\.kv")


def private_dir(path: pathlib.Path) -> pathlib.Path:
    """Make ``path`` and its missing parents as folders only the user can open
    (0700, whatever the umask). Folders that exist are left as they are."""
    missing: list[pathlib.Path] = []
    folder = path
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made meanwhile by another process: not ours to change
        os.chmod(folder, 0o700)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a folder")
    return path


def _private_file(path: pathlib.Path) -> None:
    """Create ``path`` empty and 0600 if it is missing; make it 0600 if it is ours."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    with contextlib.suppress(OSError):
        if stat.S_IMODE(path.stat().st_mode) != 0o600:
            os.chmod(path, 0o600)


def _identity(st: os.stat_result, checksum: str) -> tuple[int, int, int, int, str]:
    """What a verified file is remembered by: a file changed since (rewritten,
    replaced, touched) no longer matches, and is hashed again before a restore."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, checksum)


def file_checksum(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file, in hex."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass(frozen=True)
class KVInfo:
    """What a KV-prefix folder holds (``KVPrefixStore.inspect``): ``files`` and
    ``bytes`` are the slot files on disk, ``prefixes`` the indexed ones (with the
    ``tokens`` they hold and the ``models`` that wrote them), ``temporary`` files
    of saves in progress or of writers that died. Times are seconds since the epoch."""

    directory: pathlib.Path
    files: int
    bytes: int
    prefixes: int
    tokens: int
    models: int
    temporary: int
    oldest_use: float | None
    last_use: float | None


class KVPrefixStore:
    """Saved slot states in ``directory``, indexed for reuse across processes.

    ``model`` is the sha256 of the GGUF whose states this store saves and
    restores (rows of another model are never restored); ``max_bytes`` the
    budget of the files' total size.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 2 * 2**30,
        model: str = "",
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"KVPrefixStore max_bytes must be >= 1, got {max_bytes}")
        self.directory = private_dir(pathlib.Path(directory))
        self.max_bytes = max_bytes
        self.model = model
        self.evictions = 0
        self._lock = threading.Lock()
        #: digest → (inode, size, mtime, ctime, checksum) of the file as last verified.
        self._verified: dict[str, tuple[int, int, int, int, str]] = {}
        self._pid = os.getpid()
        self._connection = self._open_index()

    # -- the index --------------------------------------------------------------------

    @property
    def _conn(self) -> sqlite3.Connection:
        """The index's connection, opened again in a child process: an SQLite connection
        must not be used across a ``fork()``. The child holds none of the parent's locks,
        though SQLite in the child believes it does (for every connection it opens on the
        file), so once the parent closed the index, another process closing it took
        itself for its last user and deleted the ``-wal`` and ``-shm`` the child was
        using ('disk I/O error' next). Closing the inherited connection first clears
        that belief: the new one takes its own locks."""
        if self._pid != os.getpid():
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = self._open_index()
            self._pid = os.getpid()
        return self._connection

    def _open_index(self) -> sqlite3.Connection:
        index = self.directory / "index.db"
        try:
            return self._open(index)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                raise  # busy, locked, a full disk: not the file's fault
            warnings.warn(
                f"KV index {index} is not a usable SQLite database ({exc}); "
                "it is started again, empty",
                RuntimeWarning,
                stacklevel=3,
            )
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{index}{suffix}")
        return self._open(index)

    def _open(self, index: pathlib.Path) -> sqlite3.Connection:
        conn = self._connect(index)
        try:
            with self._writing(conn):
                self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _connect(index: pathlib.Path) -> sqlite3.Connection:
        # SQLite makes the -wal and -shm files with the database file's mode:
        # create the database 0600 first, and tighten files an older version left.
        for suffix in ("", "-wal", "-shm"):
            path = pathlib.Path(f"{index}{suffix}")
            if suffix == "" or path.exists():
                _private_file(path)
        conn = sqlite3.connect(index, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=30000")
        # Switching to WAL takes a lock that SQLite's busy timeout does not wait for:
        # two processes opening a new index at once would see "database is locked".
        deadline = time.monotonic() + 30
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return conn
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    conn.close()
                    raise
                time.sleep(0.02)

    @contextlib.contextmanager
    def _writing(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: other processes' writes wait)."""
        conn = conn if conn is not None else self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:  # an I/O error may have ended it: raise that, not this
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Create the table (dropping an index it cannot trust) and clear the folder of
        files no row names: temporary files of dead writers, unindexed slot files."""
        columns = {row[1] for row in conn.execute("PRAGMA table_info(prefixes)")}
        if columns and not set(SCHEMA) <= columns:
            for (digest,) in conn.execute("SELECT digest FROM prefixes").fetchall():
                with contextlib.suppress(OSError):
                    self.path(str(digest)).unlink()
            conn.execute("DROP TABLE prefixes")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS prefixes (digest TEXT PRIMARY KEY, size INTEGER NOT NULL, "
            "tokens INTEGER NOT NULL, accessed REAL NOT NULL, checksum TEXT NOT NULL, "
            "model TEXT NOT NULL)"
        )
        indexed = {str(r[0]) for r in conn.execute("SELECT digest FROM prefixes")}
        now = time.time()
        for entry in os.scandir(self.directory):
            name = entry.name
            with contextlib.suppress(OSError):
                temp = _TEMP_NAME.fullmatch(name)
                if temp is not None:
                    pid = int(temp.group(1))
                    old = now - entry.stat().st_mtime > STALE_TEMP_SECONDS
                    if pid != os.getpid() and (old or not _alive(pid)):
                        os.unlink(entry.path)
                elif _SLOT_NAME.fullmatch(name) and name[:-3] not in indexed:
                    os.unlink(entry.path)

    # -- names -------------------------------------------------------------------------

    @staticmethod
    def filename(digest: str) -> str:
        """The file name a prefix is kept under (relative to the directory)."""
        return f"{digest}.kv"

    def path(self, digest: str) -> pathlib.Path:
        return self.directory / self.filename(digest)

    @staticmethod
    def temp_name(digest: str) -> str:
        """A fresh temporary name to save a prefix under before ``commit()`` (a name
        llama.cpp's ``fs_validate_filename`` accepts: no separator, no ``..``)."""
        return f"{digest}.{os.getpid()}-{secrets.token_hex(6)}.tmp"

    # -- reading -----------------------------------------------------------------------

    def has(self, digest: str) -> bool:
        """True when a file of this model is indexed for ``digest`` (not yet verified)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT 1 FROM prefixes WHERE digest = ? AND model = ?", (digest, self.model)
            ).fetchone()
        return row is not None and self.path(digest).is_file()

    def tokens(self, digest: str) -> int:
        with self._lock:
            row = self._conn.execute(
                "SELECT tokens FROM prefixes WHERE digest = ?", (digest,)
            ).fetchone()
        return int(row[0]) if row else 0

    def verified(self, digest: str) -> bool:
        """True when ``digest``'s file may be restored: indexed for this model, with
        the size and checksum of its row. Otherwise the file and its row are dropped
        (with a ``RuntimeWarning`` when there was a row) and the answer is False."""
        with self._lock:
            row = self._conn.execute(
                "SELECT size, checksum, model FROM prefixes WHERE digest = ?", (digest,)
            ).fetchone()
        if row is None:
            return False
        size, checksum, model = int(row[0]), str(row[1]), str(row[2])
        path = self.path(digest)
        if model != self.model:
            return self._drop(digest, checksum, "was saved by another model")
        try:
            st = path.stat()
        except FileNotFoundError:
            return self._drop(digest, checksum, "is missing")
        except OSError as exc:
            return self._drop(digest, checksum, f"cannot be read ({exc.strerror})")
        if st.st_size != size:
            return self._drop(
                digest, checksum, f"is {st.st_size} bytes where its index row says {size}"
            )
        seen = _identity(st, checksum)
        if self._verified.get(digest) == seen:
            return True
        try:
            actual = file_checksum(path)
        except OSError as exc:
            return self._drop(digest, checksum, f"cannot be read ({exc.strerror})")
        if actual != checksum:
            return self._drop(digest, checksum, "does not match its checksum")
        self._verified[digest] = seen
        return True

    def _drop(self, digest: str, checksum: str, reason: str) -> bool:
        """Delete ``digest``'s file and row and warn, unless another writer has
        meanwhile put a new file in place (its row has another checksum). False."""
        path = self.path(digest)
        self._verified.pop(digest, None)
        with self._lock, self._writing() as conn:
            row = conn.execute(
                "SELECT checksum FROM prefixes WHERE digest = ?", (digest,)
            ).fetchone()
            if row is None or str(row[0]) != checksum:
                return False
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            conn.execute("DELETE FROM prefixes WHERE digest = ?", (digest,))
        warnings.warn(
            f"KV slot file {path} {reason}: dropped; its prefix is prefilled again",
            RuntimeWarning,
            stacklevel=3,
        )
        return False

    # -- writing -----------------------------------------------------------------------

    def commit(self, digest: str, temp_name: str, tokens: int) -> bool:
        """Put the file llama.cpp saved as ``temp_name`` in place for ``digest`` and
        index it (then keep the byte budget). False when the file is gone."""
        temp = self.directory / temp_name
        try:
            os.chmod(temp, 0o600)
            checksum = file_checksum(temp)
            size = temp.stat().st_size
        except FileNotFoundError:
            return False
        with self._lock, self._writing() as conn:
            try:
                os.replace(temp, self.path(digest))
                # Just hashed: its first restore need not hash it again.
                self._verified[digest] = _identity(self.path(digest).stat(), checksum)
            except FileNotFoundError:
                return False
            self._index(conn, digest, size=size, checksum=checksum, tokens=tokens)
        self.evict()
        return True

    def discard(self, temp_name: str) -> None:
        """Delete a temporary file that will not be committed (a failed save)."""
        with contextlib.suppress(FileNotFoundError):
            (self.directory / temp_name).unlink()

    def record(self, digest: str, tokens: int) -> None:
        """Index the file already in place for ``digest`` (then keep the byte budget)."""
        path = self.path(digest)
        os.chmod(path, 0o600)
        checksum = file_checksum(path)
        size = path.stat().st_size
        with self._lock, self._writing() as conn:
            self._index(conn, digest, size=size, checksum=checksum, tokens=tokens)
        self.evict()

    def _index(
        self, conn: sqlite3.Connection, digest: str, *, size: int, checksum: str, tokens: int
    ) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO prefixes (digest, size, tokens, accessed, checksum, model) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (digest, size, tokens, time.time(), checksum, self.model),
        )

    def touch(self, digest: str) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE prefixes SET accessed = ? WHERE digest = ?", (time.time(), digest)
            )

    def evict(self) -> None:
        """Delete least recently used files until the total fits the budget."""
        with self._lock:
            self._evict(self.max_bytes)

    def _evict(self, max_bytes: int) -> int:
        """Delete least recently used files (and rows) until their total is at most
        ``max_bytes``; the number deleted. (The caller holds ``_lock``.)"""
        total = self._conn.execute("SELECT COALESCE(SUM(size), 0) FROM prefixes").fetchone()[0]
        evicted = 0
        while total > max_bytes:
            row = self._conn.execute(
                "SELECT digest, size FROM prefixes ORDER BY accessed ASC LIMIT 1"
            ).fetchone()
            if row is None:
                break
            digest, size = row
            self._delete(self._conn, str(digest))
            total -= size
            evicted += 1
        self.evictions += evicted
        return evicted

    def _delete(self, conn: sqlite3.Connection, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()
        self._verified.pop(digest, None)
        conn.execute("DELETE FROM prefixes WHERE digest = ?", (digest,))

    # -- looking after the folder (the ``spangraph cache`` command) ----------------------

    @staticmethod
    def inspect(directory: str | os.PathLike[str]) -> KVInfo | None:
        """What ``directory`` holds, found without writing to it (no store is opened,
        nothing is tidied); ``None`` when there is no such folder."""
        folder = pathlib.Path(directory)
        if not folder.is_dir():
            return None
        files = size = temporary = 0
        for entry in os.scandir(folder):
            with contextlib.suppress(OSError):
                if _SLOT_NAME.fullmatch(entry.name):
                    files += 1
                    size += entry.stat().st_size
                elif _TEMP_NAME.fullmatch(entry.name):
                    temporary += 1
        prefixes = tokens = models = 0
        oldest = last = None
        index = folder / "index.db"
        if index.is_file():
            # Without a -wal beside it the index is whole in its file: read it as immutable,
            # or SQLite would leave an empty -wal and -shm behind (a reader cannot remove them).
            wal = os.path.exists(f"{index}-wal")
            query = "mode=ro" if wal else "immutable=1"
            conn = sqlite3.connect(f"{index.as_uri()}?{query}", uri=True, timeout=30)
            try:
                prefixes, tokens, models, oldest, last = conn.execute(
                    "SELECT COUNT(*), COALESCE(SUM(tokens), 0), COUNT(DISTINCT model), "
                    "MIN(accessed), MAX(accessed) FROM prefixes"
                ).fetchone()
            except sqlite3.DatabaseError:
                pass  # no table yet, or not an index: the store starts it again when opened
            finally:
                conn.close()
        return KVInfo(
            directory=folder,
            files=files,
            bytes=size,
            prefixes=int(prefixes),
            tokens=int(tokens),
            models=int(models),
            temporary=temporary,
            oldest_use=oldest,
            last_use=last,
        )

    def prune(self, *, unused_for: float | None = None, max_bytes: int | None = None) -> int:
        """Delete the files not used for ``unused_for`` seconds, then the least recently
        used until the files total at most ``max_bytes``; the number deleted."""
        gone = 0
        with self._lock, self._writing() as conn:
            if unused_for is not None:
                cutoff = time.time() - unused_for
                old = conn.execute("SELECT digest FROM prefixes WHERE accessed < ?", (cutoff,))
                for (digest,) in old.fetchall():
                    self._delete(conn, str(digest))
                    gone += 1
        if max_bytes is not None:
            with self._lock:
                gone += self._evict(max_bytes)
        return gone

    def clear(self) -> int:
        """Delete every saved prefix (files and rows); the number deleted."""
        with self._lock, self._writing() as conn:
            digests = [str(r[0]) for r in conn.execute("SELECT digest FROM prefixes").fetchall()]
            for digest in digests:
                self._delete(conn, digest)
        return len(digests)

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
            self._connection.close()


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, as another user
    return True
