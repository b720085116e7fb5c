"""A memo entry that cannot be used is a bad entry: skipped, counted, recomputed.

The rule: whatever bytes or JSON a memo holds under a key, a generation
either gets a well-formed entry or recomputes; it never raises, and the
stored content never reaches a message. Checked with ``MemoEntry``'s shape
rule on many wrong shapes, wrong-shape rows with valid checksums in every
store, and real corrupt pages (garbage written over a memo file at
several offsets and sizes).
"""

from __future__ import annotations

import pathlib
import random
import sqlite3
import warnings
from typing import Any

import pytest

from spangraph import run
from spangraph.cache import LayeredStore, MemoEntry, MemoryStore, SQLiteStore, Store
from spangraph.engines import ScriptedEngine
from spangraph.nodes import Timings, Usage
from tests.cache.memo_helpers import answer, expected, fan, values

SECRET = "model text that must not leak"

GOOD = {"text": SECRET, "finish_reason": "stop", "usage": [3, 2, 0], "timings": [0, 1.5, 2, 3.5]}

WRONG_SHAPES: list[Any] = [
    [SECRET],
    SECRET,
    None,
    {},
    {**GOOD, "text": None},
    {**GOOD, "text": [SECRET]},
    {**GOOD, "finish_reason": 3},
    {k: v for k, v in GOOD.items() if k != "usage"},
    {**GOOD, "usage": [1, 2]},
    {**GOOD, "usage": ["1", 2, 3]},
    {**GOOD, "usage": [1, 2, -3]},
    {**GOOD, "usage": [True, 2, 3]},
    {**GOOD, "usage": {"input_tokens": 1}},
    {k: v for k, v in GOOD.items() if k != "timings"},
    {**GOOD, "timings": [0, 0, 0]},
    {**GOOD, "timings": [0, 0, 0, float("nan")]},
    {**GOOD, "timings": [0, 0, "1", 0]},
]


def test_memo_entry_round_trips() -> None:
    entry = MemoEntry("hi", "length", Usage(4, 5, 1), Timings(1.0, 2.0, 3.0, 6.0))
    assert MemoEntry.from_json(entry.to_json()) == entry
    assert MemoEntry.from_json({**GOOD, "later": "ignored"}).usage == Usage(3, 2, 0)
    assert MemoEntry.from_json({**GOOD, "finish_reason": None}).finish_reason is None


@pytest.mark.parametrize("value", WRONG_SHAPES)
def test_memo_entry_refuses_wrong_shapes_without_quoting_them(value: Any) -> None:
    with pytest.raises(ValueError, match="memo entry") as caught:
        MemoEntry.from_json(value)
    assert SECRET not in str(caught.value)


def stores(tmp_path: pathlib.Path) -> dict[str, Store]:
    return {
        "memory": MemoryStore(),
        "sqlite": SQLiteStore(tmp_path / "memo.db"),
        "layered": LayeredStore(MemoryStore(), SQLiteStore(tmp_path / "layered.db")),
    }


@pytest.mark.parametrize("kind", ["memory", "sqlite", "layered"])
def test_wrong_shape_entries_are_bad_entries(tmp_path: pathlib.Path, kind: str) -> None:
    store = stores(tmp_path)[kind]
    count = len(WRONG_SHAPES)
    engine = ScriptedEngine(answer)
    run(*fan(count), engine=engine, cache=store, progress=False)
    keys = [key for key in _keys(store)]
    assert len(keys) == count
    for key, value in zip(keys, WRONG_SHAPES, strict=True):
        if isinstance(value, dict):
            store.put(key, value)  # a valid checksum, the wrong shape
        else:  # not an object: only a store that is written by hand can hold it
            _write_raw(store, key, value)
    if isinstance(store, LayeredStore):  # the back layer holds them; the front starts cold
        store = LayeredStore(MemoryStore(), store.stores[-1])
    thunks = fan(count)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(*thunks, engine=engine, cache=store, progress=False)
    assert result.status == "done" and result.cache_bad_entries == count
    assert values(thunks) == [expected(f"g{i}") for i in range(count)]
    assert engine.calls == 2 * count and store.stats.bad_rows >= count
    assert len(caught) == 1 and SECRET not in str(caught[0].message)
    again = run(*fan(count), engine=engine, cache=store, progress=False)
    assert again.cache_hits == count and again.cache_bad_entries == 0


def _keys(store: Store) -> list[str]:
    inner: Any = store.stores[-1] if isinstance(store, LayeredStore) else store
    keys: list[str] = inner.keys()
    return keys


def _write_raw(store: Store, key: str, value: Any) -> None:
    """Store a JSON value that is not an object (a list, a string, null)."""
    import json

    inner: Any = store.stores[-1] if isinstance(store, LayeredStore) else store
    if isinstance(inner, MemoryStore):
        inner._data[key] = (json.dumps(value), None)
        return
    text = json.dumps(value)
    from spangraph.cache._stores import _checksum

    inner._conn.execute(
        "UPDATE memo SET value = ?, checksum = ? WHERE key = ?", (text, _checksum(text), key)
    )


MARK = b"GARBAGE\xff\xfe"


@pytest.mark.parametrize("size", [7, 512, 4096])
@pytest.mark.parametrize("where", [0.3, 0.5, 0.72])
def test_corrupt_pages_are_bad_rows_and_reruns_succeed(
    tmp_path: pathlib.Path, where: float, size: int
) -> None:
    path = tmp_path / "memo.db"
    leaf = "lorem ipsum dolor sit amet " * 20  # rows of about 600 bytes: the file spans pages
    engine = ScriptedEngine(answer)
    fill = SQLiteStore(path)
    run(*fan(60, leaf=leaf), engine=engine, cache=fill, progress=False)
    fill.close()  # all in the file itself, none in a -wal
    data = bytearray(path.read_bytes())
    # In the rows, ``where`` of the way through them (the indexes hold no entry text),
    # and not page-aligned.
    rows = [i for i in range(len(data)) if data.startswith(b"lorem ipsum", i)]
    offset = rows[int(len(rows) * where)] + 13
    garbage = (MARK + random.Random(offset * size).randbytes(size))[:size]
    data[offset : offset + size] = garbage
    path.write_bytes(bytes(data))
    calls = []
    for _ in range(2):
        thunks = fan(60, leaf=leaf)
        before = engine.calls
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            store = SQLiteStore(path)  # a memo whose structure is broken is set aside here
            result = run(*thunks, engine=engine, cache=store, progress=False)
            store.close()
        assert result.status == "done"
        assert values(thunks) == [expected(f"g{i}", leaf) for i in range(60)]
        assert all("GARBAGE" not in str(w.message) for w in caught)
        calls.append(engine.calls - before)
        if store.moved_aside is None:  # rows in a damaged page were bad rows, recomputed
            assert calls[-1] == result.cache_bad_entries == store.stats.bad_rows
        else:
            assert calls[-1] == 60
    assert calls[0] > 0 and calls[1] == 0  # the damage was seen, and repaired


def test_a_damaged_index_never_serves_another_keys_entry(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memo.db"
    engine = ScriptedEngine(answer)
    fill = SQLiteStore(path)
    run(*fan(10), engine=engine, cache=fill, progress=False)
    fill.close()
    with sqlite3.connect(path) as conn:
        key = conn.execute("SELECT key FROM memo WHERE rowid = 5").fetchone()[0].encode()
    conn.close()
    data = bytearray(path.read_bytes())
    # The key is in the table's row (followed by its value) and in the primary-key
    # index (followed by the row's rowid, one byte here): point the index at row 6.
    places = [i for i in range(len(data)) if data.startswith(key, i)]
    [in_index] = [i for i in places if data[i + len(key)] != ord("{")]
    assert data[in_index + len(key)] == 5
    data[in_index + len(key)] = 6
    path.write_bytes(bytes(data))
    for attempt in range(2):
        thunks = fan(10)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            store = SQLiteStore(path)  # SQLite's quick_check does not compare index and table
            result = run(*thunks, engine=engine, cache=store, progress=False)
        store.close()
        assert result.status == "done"
        assert values(thunks) == [expected(f"g{i}") for i in range(10)]
        if attempt == 0:  # the index entry that points at row 6 gave a bad row, not row 6
            assert store.moved_aside is None and result.cache_bad_entries >= 1


def test_a_row_that_is_not_utf8_is_a_bad_row_whose_bytes_are_not_quoted(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "memo.db"
    store = SQLiteStore(path)
    store.put("k", GOOD)
    store.put("j", GOOD)
    conn = sqlite3.connect(path)
    conn.execute(  # SQLite stores a blob cast to text as it is: not UTF-8
        "UPDATE memo SET value = CAST(? AS TEXT) WHERE key = 'k'",
        (b'{"text": "\xff\xfe' + SECRET.encode() + b'"}',),
    )
    conn.commit()
    conn.close()
    assert store.get("k") is None and store.stats.bad_rows == 1
    assert store.keys() == ["j"] and store.get("j") == GOOD
