"""Output-memo stores: in-memory LRU, SQLite (persistent, multi-process), layered.

Values are JSON objects (never pickle); what an entry holds is
``MemoEntry``'s business, not the stores'. Every store keeps ``CacheStats``.

A store is an accelerator, never a source of failure for the work around
it: the generate protocol catches whatever a store raises, keeps the
generation's output and reports the failure to the run (see
``spangraph.engines._memo``). The stores themselves keep their own damage
local: a row that cannot be read is a bad row (skipped, counted, deleted
when the store can write), never an exception.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import sqlite3
import threading
import time
import uuid
import warnings
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any, Protocol, runtime_checkable

from ._errors import MemoStoreError
from ._lease import Claim, Owner, owner_alive, this_process

SCHEMA_VERSION = 1
APPLICATION_ID = 0x53504752  # "SPGR": marks a database as a spangraph memo


@dataclass
class CacheStats:
    """What a store did. ``bad_rows``: entries that could not be read (corrupt,
    or refused by the protocol as not a memo entry), skipped and dropped.
    ``leases``: in-flight leases taken (``SQLiteStore``), of which
    ``lease_takeovers`` from an owner that was gone or whose lease had
    expired; ``lease_errors``: leases that could not be taken (the key was
    then computed without one)."""

    hits: int = 0
    misses: int = 0
    writes: int = 0
    evictions: int = 0
    expired: int = 0
    bad_rows: int = 0
    entries: int = 0
    bytes: int = 0
    leases: int = 0
    lease_takeovers: int = 0
    lease_errors: int = 0


@dataclass(frozen=True)
class MemoInfo:
    """What a ``SQLiteStore`` holds (``SQLiteStore.info()``). ``bytes``: the entries'
    JSON text; ``file_bytes``: the file and its ``-wal`` on disk. ``hits``: times
    entries now held were served (counted since the memo had its ``hits`` column).
    Times are seconds since the epoch (``None`` when there are no entries)."""

    path: pathlib.Path
    rows: int
    bytes: int
    file_bytes: int
    hits: int
    expired: int
    oldest: float | None
    newest: float | None
    last_used: float | None


@runtime_checkable
class Store(Protocol):
    """What the generate protocol needs from a memo store.

    ``get`` returns the JSON object stored under a key, or ``None``; ``put``
    stores one (``ttl``: seconds it stays valid); ``evict`` drops expired
    entries and keeps budgets. Any of them may raise: the protocol keeps the
    generation's output, and the run warns once and counts the failure.

    A store may also offer (the protocol uses them when present):

    - ``reject(key)``: the value under ``key`` is not a memo entry; drop it
      and count a bad row;
    - ``claim(key) -> Claim`` and ``release(key)``: in-flight leases, so that
      processes sharing the store do not compute one key twice (see
      ``SQLiteStore``); ``put(key, ...)`` releases the key's lease too.
    """

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
        #: When the soonest entry with a TTL expires (or an earlier time: an entry
        #: dropped since); until then ``evict`` has nothing to scan for.
        self._next_expiry = math.inf

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
            value = json.loads(text)
            if not isinstance(value, dict):  # only put() writes here, but get's promise holds
                self._drop(key)
                self.stats.bad_rows += 1
                self.stats.misses += 1
                return None
            self._data.move_to_end(key)
            self.stats.hits += 1
        return value

    def put(self, key: str, value: Mapping[str, Any], ttl: float | None = None) -> None:
        text = json.dumps(value, separators=(",", ":"))
        expires = time.time() + ttl if ttl is not None else None
        with self._lock:
            if expires is not None:
                self._next_expiry = min(self._next_expiry, expires)
            if key in self._data:
                self._drop(key)
            self._data[key] = (text, expires)
            self.stats.entries += 1
            self.stats.bytes += len(text)
            self.stats.writes += 1
            self._enforce()

    def reject(self, key: str) -> None:
        """The value under ``key`` is not a memo entry: drop it, count a bad row."""
        with self._lock:
            if key in self._data:
                self._drop(key)
                self.stats.bad_rows += 1

    def evict(self) -> None:
        """Drop expired entries and keep within budgets."""
        now = time.time()
        if now < self._next_expiry:
            return  # budgets are kept on every put; only expiry needs a scan
        with self._lock:
            for key in [k for k, (_, exp) in self._data.items() if exp is not None and exp <= now]:
                self._drop(key)
                self.stats.expired += 1
            left = (exp for _, exp in self._data.values() if exp is not None)
            self._next_expiry = min(left, default=math.inf)
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

    def __repr__(self) -> str:
        return f"MemoryStore(max_entries={self.max_entries}, max_bytes={self.max_bytes})"


#: The memo's tables. ``lease`` (in-flight leases) and the ``hits`` column (times
#: an entry was served) came after schema 1's first release; both are additive
#: (schema 1 readers ignore them), so a writable store adds them to a memo that
#: lacks them and the schema version stays 1.
_MEMO_TABLE = (
    "CREATE TABLE memo (key TEXT PRIMARY KEY, value TEXT NOT NULL, checksum TEXT NOT NULL, "
    "size INTEGER NOT NULL, created REAL NOT NULL, accessed REAL NOT NULL, expires REAL, "
    "hits INTEGER NOT NULL DEFAULT 0)"
)
_HITS_COLUMN = "ALTER TABLE memo ADD COLUMN hits INTEGER NOT NULL DEFAULT 0"
_LEASE_TABLE = (
    "CREATE TABLE IF NOT EXISTS lease (key TEXT PRIMARY KEY, token TEXT NOT NULL, "
    "host TEXT NOT NULL, pid INTEGER NOT NULL, started INTEGER NOT NULL, expires REAL NOT NULL)"
)
#: Indexes for keeping the budgets (also additive; made where the memo is writable):
#: without them every eviction pass scanned the whole table three times (the expired
#: rows, the totals, the least recently used row), about 45 ms each at 50k entries
#: of 1.5 KB, and a budgeted store makes a pass on every put. ``memo_lru`` also
#: covers the totals (``size``), so they are read from the index, not the rows.
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS memo_lru ON memo (accessed, size)",
    "CREATE INDEX IF NOT EXISTS memo_expires ON memo (expires) WHERE expires IS NOT NULL",
)
#: An eviction pass's queries (``_evict``), in its order.
_DELETE_EXPIRED = "DELETE FROM memo WHERE expires IS NOT NULL AND expires <= ?"
_TOTALS = "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM memo"
_LEAST_RECENT = "SELECT key, size FROM memo ORDER BY accessed ASC LIMIT 1"
#: Rows are read as bytes, so that SQLite never decodes (and never quotes in an
#: error) a value that is not UTF-8: such a row is a bad row like any other. The
#: row's own key is read from the table by rowid (a plain ``key`` would be read
#: from the index the lookup went through): a damaged index that points at
#: another key's row then gives a bad row, never another prompt's entry.
_SELECT_ROW = (
    "SELECT CAST(m.value AS BLOB), CAST(m.checksum AS BLOB), m.expires, "
    "(SELECT CAST(t.key AS BLOB) FROM memo AS t WHERE t.rowid = m.rowid) "
    "FROM memo AS m WHERE m.key = ?"
)
_SQLITE_MAGIC = b"SQLite format 3\x00"

#: The memo files (device, inode) that stores of this process have open. Their header
#: is not read with a file descriptor of ours: closing any descriptor of a file drops
#: every POSIX lock the process holds on it, SQLite's included, and another process
#: closing the memo would then take itself for its last user and delete the live
#: memo's ``-wal`` and ``-shm`` (https://sqlite.org/howtocorrupt.html, section 2.2).
_OPEN_HERE: Counter[tuple[int, int]] = Counter()
_OPEN_HERE_LOCK = threading.Lock()
#: What a file at the store's path turned out to be.
_EMPTY, _MEMO, _FOREIGN, _NOT_A_DATABASE = "empty", "memo", "foreign", "not a database"


class SQLiteStore:
    """A persistent memo in one SQLite file, safe for several processes at once.

    WAL journal (``synchronous=NORMAL``: a power cut may lose the last
    entries, never the memo), a busy timeout and one short transaction per
    operation; JSON values with a blake2b checksum per row; the schema
    version in ``PRAGMA user_version`` and a spangraph marker in
    ``application_id``.

    **Opening.** The file is looked at before anything is written to it:

    - a new path, or an empty file (zero bytes, or an SQLite database with
      no tables and no marks), becomes a memo. Folders the store creates
      are made ``0700`` and the file ``0600`` whatever the umask (SQLite
      gives its ``-wal``/``-shm``/``-journal`` files the file's mode);
      folders that already exist and an existing memo keep their modes;
    - a spangraph memo is used as it is. One written by a newer spangraph
      (a newer schema) raises ``MemoStoreError`` and is left untouched;
      one damaged beyond use (its table gone, SQLite's ``quick_check``
      failing) is set aside as below (read as it is, with a warning, when
      it is read-only);
    - an SQLite database of another program raises ``MemoStoreError`` and
      is left byte for byte as it was: it is read without a write (a WAL
      database without its ``-wal`` as immutable, so that no ``-wal`` or
      ``-shm`` appears beside it);
    - a file that is not an SQLite database at all (garbage, a truncated
      header) is renamed ``<name>.bad-<time>-<pid>`` with a
      ``RuntimeWarning`` (``moved_aside`` says where), and an empty memo
      takes its place. If it cannot be renamed (a read-only folder), that
      is a ``MemoStoreError``.

    **Read-only memos.** When the file or its folder cannot be written (a
    read-only file, folder or medium), or with ``read_only=True``, the memo
    is opened read-only (as immutable when its folder cannot hold a
    ``-shm``: entries that other processes write meanwhile are then not
    seen). It serves hits; ``put`` raises ``MemoStoreError`` (a run keeps
    the output, warns once and counts it). A hit's access time is updated
    only when the store can write.

    **Bad rows.** A row whose bytes are not its checksum's, are not a JSON
    object, belong to another key (a damaged index) or cannot be read at
    all (SQLite reports the page corrupt) is a bad row: ``get`` skips it
    (a miss, so the generation recomputes it), counts it in
    ``stats.bad_rows`` and deletes it when it can. Its bytes never appear in
    a message.

    **In-flight leases.** With ``lease_timeout`` (seconds, default 300), a
    generation that misses takes a lease on its key before calling the
    engine (``claim``); another process (or another generation of this
    one) that misses the same key meanwhile waits for the entry and serves
    it as a hit. The lease is given back by ``put`` (in the same
    transaction as the entry) or by ``release`` (the generation failed or
    was cancelled), and by ``close``. A lease whose owner process is gone
    (on this host) is taken over at once; any other lease is trusted until
    it expires, so a generation that runs longer than ``lease_timeout`` may
    be computed twice, never lost, and a waiter never waits longer than
    ``lease_timeout``. ``lease_timeout=None`` takes no leases.

    Arguments: ``max_entries`` / ``max_bytes`` (budgets, least recently
    used out first; ``None``: none), ``timeout`` (seconds an operation waits
    for another process's lock), ``lease_timeout`` (above), ``read_only``
    (never write: a missing file is then a ``MemoStoreError``, not a new memo).
    """

    name = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_entries: int | None = None,
        max_bytes: int | None = None,
        timeout: float = 30.0,
        lease_timeout: float | None = 300.0,
        read_only: bool = False,
    ) -> None:
        if lease_timeout is not None and lease_timeout <= 0:
            raise ValueError(f"lease_timeout must be > 0 seconds or None, got {lease_timeout}")
        self.path = pathlib.Path(path)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.lease_timeout = lease_timeout
        self.stats = CacheStats()
        #: Whether the memo was opened read-only, and why (``None``: writable).
        self.read_only = read_only
        self.read_only_reason: str | None = "opened with read_only=True" if read_only else None
        self.moved_aside: pathlib.Path | None = None
        self._with_ttl = False
        #: The budgets kept since this store's last write (``None``: not kept since).
        #: Only a write takes a store over its budgets, and the protocol asks for an
        #: eviction (step 7) right after the write whose ``put`` kept them.
        self._kept: tuple[int | None, int | None] | None = None
        self._lock = threading.Lock()
        #: Keys this store holds a lease on, and the lease's token.
        self._leases: dict[str, str] = {}
        self._lease_table = False
        self._hits_column = False
        self._inspected: tuple[int, int] | None = None
        self._pid = os.getpid()
        with self._opening():
            self._connection = self._open()
            here = os.stat(self.path)  # the file just opened: no other opener swaps it now
        self._open_here = _hold((here.st_dev, here.st_ino))
        self._unhold = weakref.finalize(self, _unhold, self._open_here)

    @property
    def _conn(self) -> sqlite3.Connection:
        """The memo's connection, opened again in a child process: an SQLite connection
        must not be used across a ``fork()``. The child holds none of the parent's locks,
        though SQLite in the child believes it does, so once the parent closed the memo,
        another process closing it took itself for its last user and deleted the
        ``-wal`` and ``-shm`` the child was using. Closing the inherited connection
        first clears that belief; the parent's leases are the parent's to give back."""
        if self._pid != os.getpid():
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._leases.clear()
            with self._opening():
                self._connection = self._open()
            self._pid = os.getpid()
        return self._connection

    # -- opening -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _opening(self) -> Iterator[None]:
        """Hold an advisory lock on the memo's folder while the memo is looked at, set
        aside or initialised: processes that open one path at once take turns, so none
        sets aside the fresh memo another has just made, nor reads one half made. The
        folder is locked, not a file beside the memo: nothing is created (a foreign
        database is left alone, with nothing beside it)."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory locks (the retries of _open remain)
            yield
            return
        try:
            fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:  # no folder yet, or not ours to open: _open says what is wrong
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # (closing releases the lock)

    def _open(self) -> sqlite3.Connection:
        for _ in range(3):  # a file replaced while we looked at it is looked at again
            self._create_if_missing()
            kind, detail = self._inspect()
            if kind == _NOT_A_DATABASE:
                if not self._set_aside(detail):
                    continue
                self._create_if_missing()
                kind = _EMPTY
            if kind == _FOREIGN:
                raise MemoStoreError(self.path, detail)
            writable = self._writable()
            if kind == _EMPTY and not writable:
                raise MemoStoreError(
                    self.path,
                    f"is empty and read-only ({self.read_only_reason}): there is nothing to "
                    "serve and nowhere to write; give the store a writable path",
                )
            conn = self._connect(writable)
            try:
                if kind == _EMPTY:
                    self._initialise(conn)
                problem = self._check_memo(conn)
            except BaseException:
                conn.close()
                raise
            if problem is None:
                if writable:
                    self._prepare(conn)
                return conn
            if not writable:  # a damaged memo that cannot be replaced: read what can be read
                warnings.warn(
                    f"span cache {self.path} {problem}; it is read-only, so it is read as it "
                    "is (rows that cannot be read are skipped)",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return conn
            conn.close()
            self._set_aside(problem)
        raise MemoStoreError(self.path, "kept changing while it was opened; try again")

    def _create_if_missing(self) -> None:
        """Create the file (``0600``) and the folders it needs (``0700``)."""
        if os.path.lexists(self.path):
            return
        if self.read_only:
            raise MemoStoreError(self.path, "does not exist, and the store was asked to only read")
        self._make_folders(self.path.parent)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return  # another process made it meanwhile
        except OSError as exc:
            raise MemoStoreError(
                self.path, f"cannot be created ({exc.strerror}); give the store a writable path"
            ) from None
        try:
            os.fchmod(fd, 0o600)  # the umask may have taken bits away, never added: be exact
        finally:
            os.close(fd)

    def _make_folders(self, folder: pathlib.Path) -> None:
        missing = []
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        for made in reversed(missing):
            try:
                os.mkdir(made, 0o700)
            except FileExistsError:
                continue  # another process made it: not ours to change
            except OSError as exc:
                raise MemoStoreError(
                    self.path, f"its folder {made} cannot be created ({exc.strerror})"
                ) from None
            os.chmod(made, 0o700)

    def _inspect(self) -> tuple[str, str]:
        """What the file is, found without writing anything (see the class docstring).
        A memo that a store of this process has open is not read here (see
        ``_OPEN_HERE``): SQLite's own checks of it follow."""
        try:
            stat = os.stat(self.path)
        except OSError:
            pass  # _read_header says what is wrong
        else:
            with _OPEN_HERE_LOCK:
                if _OPEN_HERE[stat.st_dev, stat.st_ino]:
                    self._inspected = (stat.st_dev, stat.st_ino)
                    return _MEMO, ""
        header = self._read_header()
        if header and not header.startswith(_SQLITE_MAGIC):
            # Ask SQLite first: it waits for a writer's lock, so a memo whose first page
            # another process is writing right now is not taken for garbage.
            if not self._sqlite_says_not_a_database():
                header = self._read_header()
            if header and not header.startswith(_SQLITE_MAGIC):
                return _NOT_A_DATABASE, "is not an SQLite database"
        if not header:
            return _EMPTY, ""
        if not _valid_header(header):  # a first page is written whole: this is no database
            return _NOT_A_DATABASE, "is not an SQLite database (its header is damaged)"
        app_id = int.from_bytes(header[68:72], "big")
        if app_id == APPLICATION_ID:
            return _MEMO, ""
        if app_id != 0:
            return _FOREIGN, _foreign(app_id, None)
        return self._inspect_unmarked(wal_mode=header[18] == 2)

    def _read_header(self) -> bytes:
        """The file's first 100 bytes (SQLite's header); notes which file it was."""
        try:
            with open(self.path, "rb") as f:
                stat = os.fstat(f.fileno())
                header = f.read(100)
        except IsADirectoryError:
            raise MemoStoreError(self.path, "is a folder, not a memo file") from None
        except OSError as exc:
            raise MemoStoreError(self.path, f"cannot be read ({exc.strerror})") from None
        self._inspected = (stat.st_dev, stat.st_ino)
        return header

    def _sqlite_says_not_a_database(self) -> bool:
        try:
            conn = sqlite3.connect(
                f"{self._uri()}?mode=ro", uri=True, timeout=self.timeout, isolation_level=None
            )
        except sqlite3.Error:
            return False
        try:
            conn.execute("PRAGMA user_version").fetchone()
        except sqlite3.DatabaseError as exc:
            return _error_name(exc) == "SQLITE_NOTADB"
        finally:
            conn.close()
        return False

    def _inspect_unmarked(self, *, wal_mode: bool) -> tuple[str, str]:
        """An SQLite database without the memo's mark: empty, another program's,
        or a memo of an older spangraph whose marks are still in its ``-wal``."""
        wal = pathlib.Path(f"{self.path}-wal")
        if wal_mode and (not wal.exists() or wal.stat().st_size == 0):
            query = "mode=ro&immutable=1"  # the file is all there is: read it, make no -shm
        elif wal_mode and not pathlib.Path(f"{self.path}-shm").exists():
            return _FOREIGN, (
                "is an SQLite database in WAL mode without its -shm file, which SQLite would "
                "create to read it: spangraph leaves it untouched; give the store a path of "
                "its own"
            )
        else:
            query = "mode=ro"
        try:
            conn = sqlite3.connect(
                f"{self._uri()}?{query}", uri=True, timeout=self.timeout, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise MemoStoreError(self.path, f"cannot be opened ({exc})") from None
        try:
            app_id, version, names = _describe(conn)
        except sqlite3.DatabaseError as exc:
            if _error_name(exc) == "SQLITE_NOTADB":
                return _NOT_A_DATABASE, "is not an SQLite database"
            if _busy(exc):
                raise MemoStoreError(self.path, f"is locked by another process ({exc})") from None
            return _FOREIGN, (
                f"is an SQLite database that cannot be read ({exc}) and is not marked as a "
                "spangraph memo: it is left untouched; give the store a path of its own"
            )
        finally:
            conn.close()
        if app_id == APPLICATION_ID and "memo" in names:
            return _MEMO, ""
        if app_id == 0 and version == 0 and not names:
            return _EMPTY, ""
        return _FOREIGN, _foreign(app_id, names)

    def _writable(self) -> bool:
        """Whether the memo can be written: the file, and the folder (for the
        ``-wal`` and ``-shm``) unless both exist and can be written."""
        if self.read_only:
            return False
        reason = None
        if not os.access(self.path, os.W_OK):
            reason = "the file is not writable"
        elif not os.access(self.path.parent, os.W_OK | os.X_OK) and not all(
            os.access(f"{self.path}{suffix}", os.W_OK) for suffix in ("-wal", "-shm")
        ):
            reason = "its folder is not writable"
        if reason is None:
            return True
        self.read_only, self.read_only_reason = True, reason
        return False

    def _uri(self) -> str:
        return self.path.absolute().as_uri()  # percent-encodes '?', '#' and '%'

    def _connect(self, writable: bool) -> sqlite3.Connection:
        if writable:
            return self._connect_uri("mode=rw")  # never creates: the file is there
        try:
            conn = self._connect_uri("mode=ro")
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError as exc:
            wal = pathlib.Path(f"{self.path}-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise MemoStoreError(
                    self.path,
                    f"is read-only and cannot be opened ({exc}): its -wal holds entries "
                    "that only a -shm beside it would let SQLite read",
                ) from None
            return self._connect_uri("mode=ro&immutable=1")  # no -shm can be made

    def _connect_uri(self, query: str) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                f"{self._uri()}?{query}",
                uri=True,
                timeout=self.timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.OperationalError as exc:
            raise MemoStoreError(self.path, f"cannot be opened ({exc})") from None
        conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        return conn

    def _initialise(self, conn: sqlite3.Connection) -> None:
        """Make an empty file a memo: under the write lock, and with the marks in the
        file itself (a rollback journal, not yet WAL), so that whoever looks next
        reads them in the file's header."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            app_id, version, names = _describe(conn)
            if app_id == 0 and version == 0 and not names:
                conn.execute(_MEMO_TABLE)
                conn.execute(_LEASE_TABLE)
                for index in _INDEXES:
                    conn.execute(index)
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif app_id != APPLICATION_ID:  # another program wrote it meanwhile
                raise MemoStoreError(self.path, _foreign(app_id, names))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _check_memo(self, conn: sqlite3.Connection) -> str | None:
        """``None`` for a memo this spangraph can use; else why it is damaged.
        A newer memo raises ``MemoStoreError``."""
        try:
            app_id, version, names = _describe(conn)
            if app_id != APPLICATION_ID or "memo" not in names:
                return "is a damaged spangraph memo (its table or marks are gone)"
            if version > SCHEMA_VERSION:
                raise MemoStoreError(
                    self.path,
                    f"is a spangraph memo of schema {version}, newer than this spangraph's "
                    f"({SCHEMA_VERSION}): it is left untouched; upgrade spangraph, or give "
                    "this version a path of its own",
                )
            if version < SCHEMA_VERSION:
                return f"is a spangraph memo of an older schema ({version})"
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                return "is a damaged spangraph memo (SQLite's quick_check failed)"
        except sqlite3.DatabaseError as exc:
            if _busy(exc):
                raise MemoStoreError(self.path, f"is locked by another process ({exc})") from None
            if _error_name(exc).startswith("SQLITE_IOERR"):
                # Not damage that is known: the file may be whole (a full or failing
                # disk, a lock another descriptor dropped), so nothing is set aside.
                raise MemoStoreError(
                    self.path, f"could not be read ({exc}); it is left as it is"
                ) from None
            return f"is a damaged spangraph memo ({exc})"
        return None

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """WAL, ``synchronous=NORMAL`` and the lease table, on a memo that can be
        written. Each is best effort: a full disk must not stop hits being served."""
        with contextlib.suppress(sqlite3.OperationalError):
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        with contextlib.suppress(sqlite3.OperationalError):
            conn.execute(_LEASE_TABLE)
            self._lease_table = True
        with contextlib.suppress(sqlite3.OperationalError):
            if "hits" not in _columns(conn):
                conn.execute(_HITS_COLUMN)
            self._hits_column = True
        with contextlib.suppress(sqlite3.OperationalError):
            for index in _INDEXES:  # a memo made before them: one scan, once
                conn.execute(index)

    def _set_aside(self, reason: str) -> bool:
        """Rename the file (and its ``-wal``/``-shm``) out of the way, with a warning.
        ``False`` if the file at the path is no longer the one that was inspected."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return True  # another process set it aside
        if (stat.st_dev, stat.st_ino) != self._inspected:
            return False
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.bad-{stamp}-{os.getpid()}")
        try:
            os.replace(self.path, target)
        except FileNotFoundError:
            return True
        except OSError as exc:
            raise MemoStoreError(
                self.path,
                f"{reason}, and it cannot be set aside ({exc.strerror}): move or remove it, or "
                "give the store another path",
            ) from None
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.replace(f"{self.path}{suffix}", f"{target}{suffix}")
        self.moved_aside = target
        warnings.warn(
            f"span cache {self.path} {reason}; moved it to {target} and started an empty one",
            RuntimeWarning,
            stacklevel=4,
        )
        return True

    # -- the store -----------------------------------------------------------------------

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry under ``key``, or ``None`` (absent, expired, or a bad row)."""
        now = time.time()
        with self._lock:
            try:
                row = self._conn.execute(_SELECT_ROW, (key,)).fetchone()
            except sqlite3.DatabaseError as exc:
                if _busy(exc):
                    raise  # the store is busy past its timeout: a failed read, not a bad row
                self._bad_row(key)
                return None
            if row is None:
                self.stats.misses += 1
                return None
            read = _read_row(row, key)
            if read is None:
                self._bad_row(key)
                return None
            value, expires = read
            if expires is not None and expires <= now:
                self.stats.expired += 1
                self.stats.misses += 1
                self._try(lambda: self._conn.execute("DELETE FROM memo WHERE key = ?", (key,)))
                return None
            self._try(lambda: self._conn.execute(self._touch, (now, key)))
            self.stats.hits += 1
        return value

    @property
    def _touch(self) -> str:
        if self._hits_column:
            return "UPDATE memo SET accessed = ?, hits = hits + 1 WHERE key = ?"
        return "UPDATE memo SET accessed = ? WHERE key = ?"

    def _bad_row(self, key: str) -> None:
        self.stats.bad_rows += 1
        self.stats.misses += 1
        self._try(lambda: self._conn.execute("DELETE FROM memo WHERE key = ?", (key,)))

    def reject(self, key: str) -> None:
        """The value under ``key`` is not a memo entry: count a bad row, delete it."""
        with self._lock:
            self.stats.bad_rows += 1
            self._try(lambda: self._conn.execute("DELETE FROM memo WHERE key = ?", (key,)))

    def _try(self, write: Callable[[], object]) -> None:
        """A write that is only worth doing (an access time, a bad row's deletion):
        skipped when read-only, and whatever SQLite says against it is ignored."""
        if not self.read_only:
            with contextlib.suppress(sqlite3.Error):
                write()

    def put(self, key: str, value: Mapping[str, Any], ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` (and give back this store's lease on ``key``)."""
        if self.read_only:
            raise MemoStoreError(
                self.path, f"is read-only ({self.read_only_reason}): the entry was not written"
            )
        text = json.dumps(value, separators=(",", ":"))
        now = time.time()
        with self._lock:
            token = self._leases.get(key)

            def write(conn: sqlite3.Connection) -> None:
                conn.execute(
                    "INSERT OR REPLACE INTO memo (key, value, checksum, size, created, accessed, "
                    "expires) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (key, text, _checksum(text), len(text), now, now, now + ttl if ttl else None),
                )
                if token is not None:  # the lease goes with the entry, in one transaction
                    conn.execute("DELETE FROM lease WHERE key = ? AND token = ?", (key, token))

            self._transaction(write)
            if token is not None:
                del self._leases[key]
            self.stats.writes += 1
            self._with_ttl = self._with_ttl or ttl is not None
            self._kept = None
        if self.max_entries is not None or self.max_bytes is not None:
            self.evict()

    def _transaction(self, body: Callable[[sqlite3.Connection], object]) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            body(conn)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def claim(self, key: str) -> Claim:
        """Take an in-flight lease on ``key`` unless its entry is there (then it is
        returned) or another live lease holds it (then: ``wait``). A store that is
        read-only or has no leases returns ``Claim()``: compute, unleased; so does
        one that fails to take the lease (counted in ``stats.lease_errors``)."""
        if self.read_only or self.lease_timeout is None or not self._lease_table:
            return Claim()
        try:
            return self._claim(key)
        except sqlite3.Error:
            self.stats.lease_errors += 1
            return Claim()

    def _claim(self, key: str) -> Claim:
        me = this_process()
        with self._lock:
            found, stale = self._look(key)  # without the write lock: most polls end here
            if found is not None:
                return found
            token = uuid.uuid4().hex
            taken: list[bool] = []

            def take(conn: sqlite3.Connection) -> None:
                nonlocal found, stale
                found, stale = self._look(key)
                if found is None:
                    assert self.lease_timeout is not None
                    conn.execute(
                        "INSERT OR REPLACE INTO lease (key, token, host, pid, started, expires) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (key, token, me.host, me.pid, me.started, time.time() + self.lease_timeout),
                    )
                    taken.append(True)

            self._transaction(take)
            if not taken:
                assert found is not None
                return found
            self._leases[key] = token
            self.stats.leases += 1
            self.stats.lease_takeovers += stale
            return Claim(leased=True)

    def _look(self, key: str) -> tuple[Claim | None, bool]:
        """The entry (a hit), a live lease (wait), or neither (``None``), and whether
        a lease that is no longer live is in the way."""
        row = self._conn.execute(_SELECT_ROW, (key,)).fetchone()
        if row is not None:
            read = _read_row(row, key)
            if read is not None and (read[1] is None or read[1] > time.time()):
                return Claim(read[0]), False
        lease = self._conn.execute(
            "SELECT host, pid, started, expires FROM lease WHERE key = ?", (key,)
        ).fetchone()
        if lease is None:
            return None, False
        host, pid, started, expires = lease
        try:
            live = expires > time.time() and owner_alive(Owner(host, pid, started))
        except TypeError:  # a damaged lease row holds nothing
            live = False
        return (Claim(wait=True), False) if live else (None, True)

    def release(self, key: str) -> None:
        """Give back this store's lease on ``key`` (nothing if it holds none)."""
        token = self._leases.get(key)
        if token is None:
            return
        with self._lock:
            self._conn.execute("DELETE FROM lease WHERE key = ? AND token = ?", (key, token))
            self._leases.pop(key, None)

    def evict(self) -> None:
        """Delete expired rows, then the least recently used beyond the budgets
        (nothing when read-only: the budgets are the writers' to keep). The budgets
        are checked again only after a write of this store (or a change of them):
        other writers keep them on their own writes."""
        if self.read_only or (
            not self._with_ttl and self.max_entries is None and self.max_bytes is None
        ):
            return
        budgets = (self.max_entries, self.max_bytes)
        with self._lock:
            if self._kept == budgets:
                self._drop_expired()
                return
            self._evict(*budgets)
            self._kept = budgets

    def _drop_expired(self) -> int:
        """Delete expired rows; how many. (The caller holds ``_lock``.)"""
        gone = max(self._conn.execute(_DELETE_EXPIRED, (time.time(),)).rowcount, 0)
        self.stats.expired += gone
        return gone

    def _evict(self, max_entries: int | None, max_bytes: int | None) -> int:
        """Delete expired rows, then the least recently used beyond the budgets; the
        number of rows deleted. (The caller holds ``_lock``.)"""
        gone = self._drop_expired()
        count, size = self._conn.execute(_TOTALS).fetchone()
        evicted = 0
        while (max_entries is not None and count > max_entries) or (
            max_bytes is not None and size > max_bytes
        ):
            row = self._conn.execute(_LEAST_RECENT).fetchone()
            if row is None:
                break
            self._conn.execute("DELETE FROM memo WHERE key = ?", (row[0],))
            count, size = count - 1, size - row[1]
            evicted += 1
        self.stats.evictions += evicted
        self.stats.entries, self.stats.bytes = count, size
        return gone + evicted

    # -- looking after the memo (the ``spangraph cache`` command) ------------------------

    def info(self) -> MemoInfo:
        """What the memo holds: rows, their bytes and hits, expired rows, ages."""
        with self._lock:
            hits = "COALESCE(SUM(hits), 0)" if "hits" in _columns(self._conn) else "0"
            rows, size, served, expired, oldest, newest, last_used = self._conn.execute(
                f"SELECT COUNT(*), COALESCE(SUM(size), 0), {hits}, "
                "COALESCE(SUM(expires IS NOT NULL AND expires <= ?), 0), "
                "MIN(created), MAX(created), MAX(accessed) FROM memo",
                (time.time(),),
            ).fetchone()
        on_disk = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                on_disk += os.stat(f"{self.path}{suffix}").st_size
        return MemoInfo(
            path=self.path,
            rows=int(rows),
            bytes=int(size),
            file_bytes=on_disk,
            hits=int(served),
            expired=int(expired),
            oldest=oldest,
            newest=newest,
            last_used=last_used,
        )

    def prune(self, *, unused_for: float | None = None, max_bytes: int | None = None) -> int:
        """Delete expired entries, entries not used for ``unused_for`` seconds, then the
        least recently used until the entries' bytes are at most ``max_bytes``; the
        number of entries deleted. The file is compacted when rows went."""
        self._refuse_read_only("pruned")
        with self._lock:
            gone = 0
            if unused_for is not None:
                cutoff = time.time() - unused_for
                gone = self._conn.execute("DELETE FROM memo WHERE accessed < ?", (cutoff,)).rowcount
            gone += self._evict(None, max_bytes)
            if gone:
                self._compact()
        return gone

    def clear(self) -> int:
        """Delete every entry (leases are left to their owners); the number deleted.
        The file stays (other processes may have it open), compacted."""
        self._refuse_read_only("cleared")
        with self._lock:
            gone = int(self._conn.execute("DELETE FROM memo").rowcount)
            self.stats.entries = self.stats.bytes = 0
            self._compact()
        return gone

    def _refuse_read_only(self, what: str) -> None:
        if self.read_only:
            raise MemoStoreError(
                self.path, f"is read-only ({self.read_only_reason}): it cannot be {what}"
            )

    def _compact(self) -> None:
        """Give freed pages back to the disk (best effort: another process reading
        the memo makes SQLite refuse, and the pages are reused by later writes)."""
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("VACUUM")
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM memo").fetchone()[0])

    def keys(self) -> list[str]:
        """Keys from least to most recently used (a key that is not UTF-8 is left out)."""
        with self._lock:
            rows = self._conn.execute("SELECT CAST(key AS BLOB) FROM memo ORDER BY accessed")
            out = []
            for (raw,) in rows:
                with contextlib.suppress(UnicodeDecodeError, AttributeError):
                    out.append(raw.decode())
            return out

    def close(self) -> None:
        """Give back the leases this store holds (best effort) and close the file."""
        with self._lock:
            for key, token in list(self._leases.items()):
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute(
                        "DELETE FROM lease WHERE key = ? AND token = ?", (key, token)
                    )
            self._leases.clear()
            self._conn.close()
            self._unhold()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"


class LayeredStore:
    """Stores in front of each other (memory before SQLite): reads try each in
    order and copy a hit into the ones before it; writes go to all.

    A layer that fails does not stop the others: ``get`` goes on to the next
    layer (and raises the failure only when no layer had the entry), ``put``
    and ``evict`` try every layer and then raise the first failure. Leases
    are the first leasing layer's.
    """

    name = "layered"

    def __init__(self, *stores: Store) -> None:
        if not stores:
            raise ValueError("LayeredStore needs at least one store")
        self.stores = stores
        self.stats = CacheStats()

    def get(self, key: str) -> dict[str, Any] | None:
        failure: Exception | None = None
        for index, store in enumerate(self.stores):
            bad = store.stats.bad_rows
            try:
                value = store.get(key)
            except Exception as exc:
                failure = failure or exc
                continue
            finally:
                self.stats.bad_rows += store.stats.bad_rows - bad
            if value is not None:
                self._promote(key, value, index)
                self.stats.hits += 1
                return value
        self.stats.misses += 1
        if failure is not None:
            raise failure
        return None

    def _promote(self, key: str, value: dict[str, Any], index: int) -> None:
        for front in self.stores[:index]:
            with contextlib.suppress(Exception):  # a copy only: the entry is served anyway
                front.put(key, value)

    def put(self, key: str, value: Mapping[str, Any], ttl: float | None = None) -> None:
        self._each(lambda store: store.put(key, value, ttl))
        self.stats.writes += 1

    def evict(self) -> None:
        self._each(lambda store: store.evict())

    def reject(self, key: str) -> None:
        """The value under ``key`` is not a memo entry: every layer drops it."""
        self.stats.bad_rows += 1
        self._each(lambda store: _optional(store, "reject", key))

    def claim(self, key: str) -> Claim:
        for index, store in enumerate(self.stores):
            claim = getattr(store, "claim", None)
            if claim is not None:
                found: Claim = claim(key)
                if found.value is not None:
                    self._promote(key, found.value, index)
                return found
        return Claim()

    def release(self, key: str) -> None:
        self._each(lambda store: _optional(store, "release", key))

    def _each(self, operation: Callable[[Store], object]) -> None:
        failure: Exception | None = None
        for store in self.stores:
            try:
                operation(store)
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def __repr__(self) -> str:
        return f"LayeredStore({', '.join(repr(s) for s in self.stores)})"


def _hold(file: tuple[int, int]) -> tuple[int, int]:
    with _OPEN_HERE_LOCK:
        _OPEN_HERE[file] += 1
    return file


def _unhold(file: tuple[int, int]) -> None:
    with _OPEN_HERE_LOCK:
        _OPEN_HERE[file] -= 1
        if _OPEN_HERE[file] <= 0:
            del _OPEN_HERE[file]


def _optional(store: Store, method: str, key: str) -> None:
    call = getattr(store, method, None)
    if call is not None:
        call(key)


def _columns(conn: sqlite3.Connection) -> set[str]:
    return {str(row[1]) for row in conn.execute("PRAGMA table_info(memo)")}


def _describe(conn: sqlite3.Connection) -> tuple[int, int, list[str]]:
    """``application_id``, ``user_version`` and the names in the schema."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    return int(app_id), int(version), names


def _foreign(app_id: int, names: list[str] | None) -> str:
    what = f"application_id {app_id:#010x}"
    if names:
        shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
        what += f"; it holds {shown}"
    elif names is not None:
        what += "; user_version set, no tables"
    return (
        f"is an SQLite database that is not a spangraph memo ({what}): spangraph leaves it "
        "untouched; give the store a path of its own (a new or empty file becomes a memo)"
    )


def _valid_header(header: bytes) -> bool:
    """Whether a file's first 100 bytes are an SQLite header that SQLite would open
    (the checks SQLite makes itself, before it would look for a ``-wal``)."""
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        return False
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    return (
        512 <= page_size <= 65536
        and page_size & (page_size - 1) == 0
        and header[18] in (1, 2)
        and header[19] in (1, 2)
        and header[21:24] == b"\x40\x20\x20"
    )


def _read_row(row: tuple[Any, ...], key: str) -> tuple[dict[str, Any], float | None] | None:
    """A row's JSON object and expiry, or ``None`` for a bad row."""
    raw, checksum, expires, own_key = row
    if not isinstance(raw, bytes) or not isinstance(checksum, bytes) or own_key != key.encode():
        return None
    if checksum != blake2b(raw, digest_size=16).hexdigest().encode():
        return None
    if expires is not None and type(expires) not in (int, float):
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return (value, expires) if isinstance(value, dict) else None


def _error_name(exc: sqlite3.Error) -> str:
    return str(getattr(exc, "sqlite_errorname", ""))


def _busy(exc: sqlite3.Error) -> bool:
    return _error_name(exc).startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))


def _checksum(text: str) -> str:
    return blake2b(text.encode(), digest_size=16).hexdigest()
