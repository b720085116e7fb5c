"""What ``SQLiteStore`` does with the file it is given, before it writes anything.

The rules: a database that is not a spangraph memo is refused with a
``MemoStoreError`` naming it, and left byte for byte as it was, with no
``-wal``/``-shm`` left beside it; a newer spangraph's memo is refused and
never moved; a new path or an empty file becomes a memo; a file that is not
a database is set aside with a warning, or refused clearly when it cannot
be; what the store creates is ``0600`` (files) and ``0700`` (folders)
whatever the umask.
"""

from __future__ import annotations

import os
import pathlib
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

import pytest

from spangraph import run
from spangraph.cache import MemoStoreError, SQLiteStore
from spangraph.cache._stores import APPLICATION_ID, SCHEMA_VERSION
from spangraph.engines import ScriptedEngine
from tests.cache.memo_helpers import (
    ROOT,
    answer,
    digest,
    fan,
    filled_memo,
    modes,
    read_only,
    run_python,
)


def _rollback_table(path: pathlib.Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE other (x)")
    conn.execute("INSERT INTO other VALUES ('theirs')")
    conn.commit()
    conn.close()


def _wal_table(path: pathlib.Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE other (x)")
    conn.execute("INSERT INTO other VALUES ('theirs')")
    conn.commit()
    conn.close()  # checkpointed: no -wal, no -shm


def _marked(path: pathlib.Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id=1234")
    conn.commit()
    conn.close()


def _versioned(path: pathlib.Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=7")
    conn.commit()
    conn.close()


def _memo_named_table(path: pathlib.Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE memo (key TEXT PRIMARY KEY, value TEXT)")
    conn.commit()
    conn.close()


def _other_program_marked_with_tables(path: pathlib.Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA application_id=99")
    conn.execute("CREATE TABLE a (x)")
    conn.commit()
    conn.close()


FOREIGN: dict[str, Callable[[pathlib.Path], None]] = {
    "rollback journal, a table": _rollback_table,
    "WAL, a table": _wal_table,
    "another application_id": _marked,
    "a user_version, no tables": _versioned,
    "a table named memo, no marks": _memo_named_table,
    "WAL, another application_id, tables": _other_program_marked_with_tables,
}


@pytest.mark.parametrize("make", FOREIGN.values(), ids=FOREIGN.keys())
def test_a_foreign_database_is_refused_untouched(
    tmp_path: pathlib.Path, make: Callable[[pathlib.Path], None]
) -> None:
    path = tmp_path / "theirs.db"
    make(path)
    before, listing = digest(path), sorted(os.listdir(tmp_path))
    for _ in range(2):  # and again: nothing was left that changes the second look
        with pytest.raises(MemoStoreError, match="not a spangraph memo") as caught:
            SQLiteStore(path)
        assert caught.value.path == str(path) and str(path) in str(caught.value)
        assert digest(path) == before and sorted(os.listdir(tmp_path)) == listing


def test_a_foreign_database_in_use_is_refused_untouched(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "theirs.db"
    owner = sqlite3.connect(path, isolation_level=None)
    owner.execute("PRAGMA journal_mode=WAL")
    owner.execute("CREATE TABLE other (x)")
    owner.execute("INSERT INTO other VALUES ('theirs')")  # in the -wal, not yet in the file
    files = {name: digest(tmp_path / name) for name in os.listdir(tmp_path) if "shm" not in name}
    with pytest.raises(MemoStoreError, match="not a spangraph memo"):
        SQLiteStore(path)
    assert {name: digest(tmp_path / name) for name in files} == files
    assert owner.execute("SELECT x FROM other").fetchall() == [("theirs",)]
    owner.close()


def test_a_newer_memo_is_refused_and_never_moved(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memo.db"
    filled_memo(path, 3)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(MemoStoreError, match="newer") as caught:
        SQLiteStore(path)
    assert str(path) in str(caught.value)
    assert digest(path) == before and sorted(os.listdir(tmp_path)) == ["memo.db"]


def _empty_sqlite(path: pathlib.Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("DROP TABLE t")
    conn.commit()
    conn.close()
    assert path.stat().st_size > 0


EMPTY: dict[str, Callable[[pathlib.Path], None]] = {
    "a new path": lambda path: None,
    "a zero-byte file": lambda path: path.touch(),
    "an SQLite database without tables": _empty_sqlite,
}


@pytest.mark.parametrize("make", EMPTY.values(), ids=EMPTY.keys())
def test_a_new_path_or_an_empty_file_becomes_a_memo(
    tmp_path: pathlib.Path, make: Callable[[pathlib.Path], None]
) -> None:
    path = tmp_path / "memo.db"
    make(path)
    store = SQLiteStore(path)
    run(*fan(3), engine=ScriptedEngine(answer), cache=store, progress=False)
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert len(SQLiteStore(path)) == 3


NOT_A_DATABASE: dict[str, bytes] = {
    "text": b"this is not a database" * 100,
    "a truncated header": b"SQLite format 3\x00" + b"\x10\x00" * 10,
    "a header and garbage": b"SQLite format 3\x00" + bytes(range(256)) * 40,
    "one byte": b"\x00",
}


@pytest.mark.parametrize("content", NOT_A_DATABASE.values(), ids=NOT_A_DATABASE.keys())
def test_a_file_that_is_not_a_database_is_set_aside(tmp_path: pathlib.Path, content: bytes) -> None:
    path = tmp_path / "memo.db"
    path.write_bytes(content)
    with pytest.warns(RuntimeWarning, match="not an SQLite database") as caught:
        store = SQLiteStore(path)
    assert store.moved_aside is not None and store.moved_aside.read_bytes() == content
    assert str(store.moved_aside) in str(caught[0].message)
    run(*fan(2), engine=ScriptedEngine(answer), cache=store, progress=False)
    assert len(store) == 2


def test_a_file_that_cannot_be_set_aside_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    path = folder / "memo.db"
    path.write_bytes(b"this is not a database" * 100)
    with read_only(folder):
        with pytest.raises(MemoStoreError, match="cannot be set aside") as caught:
            SQLiteStore(path)
        assert str(path) in str(caught.value)
        assert not isinstance(caught.value, PermissionError)
    assert path.read_bytes() == b"this is not a database" * 100


def test_paths_that_cannot_be_a_memo_are_clear_errors(tmp_path: pathlib.Path) -> None:
    with pytest.raises(MemoStoreError, match="is a folder"):
        SQLiteStore(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked):
        with pytest.raises(MemoStoreError, match="cannot be created") as caught:
            SQLiteStore(locked / "memo.db")
        assert str(locked / "memo.db") in str(caught.value)
        with pytest.raises(MemoStoreError, match=r"folder .* cannot be created"):
            SQLiteStore(locked / "deeper" / "memo.db")


@pytest.fixture(params=[0o022, 0o000], ids=["umask 022", "umask 000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_what_the_store_creates_is_private_whatever_the_umask(
    tmp_path: pathlib.Path, umask: int
) -> None:
    tmp_path.chmod(0o755)
    path = tmp_path / "home" / "spangraph" / "memo.db"
    store = SQLiteStore(path)
    run(*fan(3), engine=ScriptedEngine(answer), cache=store, progress=False)
    seen = modes(tmp_path)  # while it is open: its -wal and -shm are there
    store.close()
    assert seen == {
        "home": 0o700,
        "home/spangraph": 0o700,
        "home/spangraph/memo.db": 0o600,
        "home/spangraph/memo.db-shm": 0o600,
        "home/spangraph/memo.db-wal": 0o600,
    }
    assert tmp_path.stat().st_mode & 0o777 == 0o755  # a folder it did not make is left alone


def test_a_garbage_memo_set_aside_is_replaced_privately(tmp_path: pathlib.Path, umask: int) -> None:
    path = tmp_path / "memo.db"
    path.write_bytes(b"garbage" * 10)
    path.chmod(0o644)
    with pytest.warns(RuntimeWarning, match="moved it"):
        store = SQLiteStore(path)
    store.close()
    assert path.stat().st_mode & 0o777 == 0o600


OPENER = textwrap.dedent(
    """
    import sys
    from spangraph.cache import SQLiteStore
    store = SQLiteStore(sys.argv[1])
    store.put(sys.argv[2], {"who": sys.argv[2]})
    store.close()
    """
)


@pytest.mark.parametrize("start", ["a new path", "garbage"])
def test_processes_opening_one_path_at_once_share_one_memo(
    tmp_path: pathlib.Path, start: str
) -> None:
    path = tmp_path / "memo.db"
    if start == "garbage":
        path.write_bytes(b"garbage" * 1000)
    procs = [
        subprocess.Popen(
            [sys.executable, "-W", "ignore", "-c", OPENER, str(path), f"p{i}"],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert sorted(SQLiteStore(path).keys()) == [f"p{i}" for i in range(6)]


def test_a_second_store_on_one_memo_keeps_the_first_ones_locks(tmp_path: pathlib.Path) -> None:
    """Closing any descriptor of a file drops every POSIX lock the process holds on it,
    SQLite's included. If opening a second store read the memo's header with a descriptor
    of its own, the first store would be left without its locks: another process that
    closed the memo then took itself for the last user, checkpointed and deleted the
    ``-wal`` and ``-shm`` of the live memo, and the next store of this process met
    'disk I/O error' and set the memo aside, entries and all."""
    path = tmp_path / "memo.db"
    first = SQLiteStore(path)
    first.put("before", {"v": 1})
    SQLiteStore(path).close()  # a second store of this process, on the same memo
    other = run_python(OPENER, str(path), "other")  # another process opens and closes it
    assert other.returncode == 0, other.stderr
    first.put("after", {"v": 2})
    third = SQLiteStore(path)
    assert third.moved_aside is None
    assert sorted(third.keys()) == ["after", "before", "other"]
    first.close()
    third.close()


def test_an_io_error_on_opening_leaves_the_memo_where_it_is(tmp_path: pathlib.Path) -> None:
    """An I/O error is not known damage: the memo is refused with ``MemoStoreError`` and
    left in place, entries and all (it is not set aside). The error is made as users
    made it: this process reads the live memo's files with descriptors of its own
    (dropping SQLite's locks), another process then closes the memo as its last user."""
    path = tmp_path / "memo.db"
    first = SQLiteStore(path)
    first.put("before", {"v": 1})
    for name in ("memo.db", "memo.db-wal", "memo.db-shm"):
        (tmp_path / name).read_bytes()  # what a user must not do (docs/design/guarantees.md)
    other = run_python(OPENER, str(path), "other")
    assert other.returncode == 0, other.stderr
    first.put("after", {"v": 2})  # into a -wal that the other process deleted
    with pytest.raises(MemoStoreError, match=r"could not be read .*left as it is"):
        SQLiteStore(path)
    first.close()
    assert not list(tmp_path.glob("*.bad-*"))
    again = SQLiteStore(path)
    assert {"before", "other"} <= set(again.keys())
    again.close()


FORKED = textwrap.dedent(
    """
    import os, subprocess, sys
    from spangraph.cache import SQLiteStore

    path, opener = sys.argv[1], sys.argv[2]
    store = SQLiteStore(path)
    store.put("parent", {"v": 1})
    ready, go = os.pipe()
    child = os.fork()
    if child == 0:
        os.read(ready, 1)  # the parent has closed its store
        store.get("parent")
        subprocess.run([sys.executable, "-c", opener, path, "other"], check=True)
        store.put("child", {"v": 2})
        again = SQLiteStore(path)
        print(again.moved_aside, sorted(again.keys()))
        sys.stdout.flush()
        os._exit(0)
    store.close()
    os.write(go, b"x")
    os.waitpid(child, 0)
    """
)


def test_a_store_used_across_a_fork_opens_the_memo_again_in_the_child(
    tmp_path: pathlib.Path,
) -> None:
    """A forked child holds none of its parent's SQLite locks while SQLite believes it
    does: once the parent closed the memo, another process closing it deleted the
    ``-wal`` and ``-shm`` the child used, and the child's next store met 'disk I/O
    error' and set the memo aside. (Forked in a fresh interpreter: this one may run
    threads.)"""
    path = tmp_path / "memo.db"
    done = run_python(FORKED, str(path), OPENER)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None ['child', 'other', 'parent']", done.stdout + done.stderr


def test_budgets_are_kept_from_indexes_not_by_reading_every_row(tmp_path: pathlib.Path) -> None:
    """A budgeted store makes an eviction pass on every put: each of its queries goes
    through an index (at 50k entries of 1.5 KB a table scan took about 45 ms, three
    per pass). A memo made before the indexes gets them when opened writable."""
    from spangraph.cache._stores import _DELETE_EXPIRED, _LEAST_RECENT, _TOTALS

    path = tmp_path / "memo.db"
    store = SQLiteStore(path, max_entries=5)
    for i in range(12):
        store.put(f"k{i}", {"text": f"v{i}"}, ttl=3600 if i % 2 else None)
    assert store.keys() == [f"k{i}" for i in range(7, 12)]  # the five most recent
    store.close()

    def plans() -> dict[str, list[str]]:
        with sqlite3.connect(path) as conn:
            return {
                query: [
                    row[-1]
                    for row in conn.execute(
                        f"EXPLAIN QUERY PLAN {query}", (1.0,) * query.count("?")
                    )
                ]
                for query in (_DELETE_EXPIRED, _TOTALS, _LEAST_RECENT)
            }

    for query, steps in plans().items():
        assert steps and all("INDEX" in step for step in steps), (query, steps)

    with sqlite3.connect(path) as conn:  # as a memo written before the indexes
        conn.execute("DROP INDEX memo_lru")
        conn.execute("DROP INDEX memo_expires")
    assert any("INDEX" not in step for steps in plans().values() for step in steps)
    SQLiteStore(path, read_only=True).close()  # a reader changes nothing
    assert any("INDEX" not in step for steps in plans().values() for step in steps)
    SQLiteStore(path).close()
    assert all("INDEX" in step for steps in plans().values() for step in steps)


def test_a_budgeted_write_checks_the_budgets_once(tmp_path: pathlib.Path) -> None:
    """``put`` keeps the budgets, and the protocol's step 7 (``evict``) follows at
    once: the second check found nothing to do and counted the memo again. Checked
    now once per write; a change of the budgets, or an expired row, is still acted on
    without one."""
    from spangraph.cache._stores import _TOTALS

    store = SQLiteStore(tmp_path / "memo.db", max_entries=3)
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    result = run(*fan(6), engine=ScriptedEngine(answer), cache=store, progress=False)
    assert result.engine_calls == 6
    assert statements.count(_TOTALS) == 6  # one per write (it was 12)
    assert len(store) == 3

    store.evict()
    assert statements.count(_TOTALS) == 6  # nothing written since: nothing to check
    store.max_entries = 1
    store.evict()
    assert statements.count(_TOTALS) == 7 and len(store) == 1
    store.put("short", {"v": 1}, ttl=0.01)
    assert len(store) == 1 and store.keys() == ["short"]
    time.sleep(0.02)
    store.evict()  # no write since the last check: expired rows still go
    assert len(store) == 0 and statements.count(_TOTALS) == 8
    store.close()
