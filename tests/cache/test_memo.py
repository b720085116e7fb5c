from __future__ import annotations

import json
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from spangraph import CBlock, Component, Span, generate, options, run
from spangraph.cache import (
    CachePolicy,
    LayeredStore,
    MemoryStore,
    MemoStoreError,
    SQLiteStore,
)
from spangraph.engines import Request, ScriptedEngine, cached
from spangraph.events import CacheHit
from spangraph.lowlevel import memo_key
from spangraph.nodes import Prompt, Segment

ROOT = pathlib.Path(__file__).resolve().parents[2]


class Step(Component[str]):
    template = "{label}: {inputs}"
    inputs: list[Span]
    label: str


def echo(request: Request) -> str:
    return f"<{request.text}>"


def chain_graph(leaf: str = "leaf") -> tuple[list[Any], dict[str, Any]]:
    """a, b from the leaf; c from a; d from b and c; e independent."""
    with options(temperature=0):
        a = generate(Step(inputs=[leaf], label="a"))
        b = generate(Step(inputs=[leaf], label="b"))
        c = generate(Step(inputs=[a], label="c"))
        d = generate(Step(inputs=[b, c], label="d"))
        e = generate(Step(inputs=["other"], label="e"))
    return [d, e], {"a": a, "b": b, "c": c, "d": d, "e": e}


# -- keys ------------------------------------------------------------------------------------

PROMPT = Prompt((Segment("hello", "x"), Segment(" world", "y", cache=True)))
FP = {"kind": "llamacpp", "model": "m", "sha256": "abc"}


def test_key_changes_with_each_ingredient() -> None:
    base = memo_key(FP, PROMPT, None, {"temperature": 0.0}, 0)
    assert base == memo_key(dict(FP), Prompt(tuple(PROMPT.segments)), None, {"temperature": 0.0}, 0)
    variants = [
        memo_key({**FP, "sha256": "abd"}, PROMPT, None, {"temperature": 0.0}, 0),
        memo_key(
            FP,
            Prompt((Segment("hello", "x"), Segment(" world!", "y", cache=True))),
            None,
            {"temperature": 0.0},
            0,
        ),
        memo_key(FP, PROMPT, {"type": "integer"}, {"temperature": 0.0}, 0),
        memo_key(FP, PROMPT, None, {"temperature": 0.0, "max_tokens": 5}, 0),
        memo_key(FP, PROMPT, None, {"temperature": 0.0}, 1),
        memo_key(
            FP,
            Prompt((Segment("hello", "x", role="user"), PROMPT.segments[1])),
            None,
            {"temperature": 0.0},
            0,
        ),
    ]
    assert len({base, *variants}) == len(variants) + 1


KEY_SCRIPT = textwrap.dedent(
    """
    import json
    from spangraph import CBlock, Component, Span, generate, options, run
    from spangraph.cache import MemoryStore
    from spangraph.engines import ScriptedEngine

    class Ask(Component[str]):
        template = "{doc}\\nQ: {q}"
        doc: Span
        q: Span

    store = MemoryStore()
    with options(temperature=0, max_tokens=9):
        thunks = [generate(Ask(doc=CBlock("doc", cache=True), q=q)) for q in ("x", "y")]
    run(*thunks, engine=ScriptedEngine("a"), cache=store, progress=False)
    print(json.dumps(sorted(store.keys())))
    """
)


def test_keys_are_equal_across_processes() -> None:
    outs = [
        subprocess.run(
            [sys.executable, "-c", KEY_SCRIPT], check=True, capture_output=True, text=True, cwd=ROOT
        ).stdout
        for _ in range(2)
    ]
    assert outs[0] == outs[1] and len(json.loads(outs[0])) == 2


# -- policies ------------------------------------------------------------------------------


def test_auto_memoises_only_deterministic_generations() -> None:
    store = MemoryStore()
    engine = ScriptedEngine(echo)
    det = generate(Step(inputs=["x"], label="det"), options={"temperature": 0})
    seeded = generate(Step(inputs=["x"], label="seeded"), options={"seed": 3, "temperature": 0.9})
    random = generate(Step(inputs=["x"], label="random"), options={"temperature": 0.9})
    first = run(det, seeded, random, engine=engine, cache=store, progress=False)
    assert len(store) == 2 and first.cache_misses == 2
    for t in (det, seeded, random):
        t._reset()
    second = run(det, seeded, random, engine=engine, cache=store, progress=False)
    assert second.cache_hits == 2 and engine.calls == 4
    assert det.cache_hit and seeded.cache_hit and not random.cache_hit


def test_always_keeps_samples_apart_and_reproduces_them() -> None:
    store = MemoryStore()
    counter = {"n": 0}

    def sample(request: Request) -> str:
        counter["n"] += 1
        return f"sample {counter['n']}"

    engine = ScriptedEngine(sample)
    thunks = [
        generate(Step(inputs=["x"], label="s"), options={"temperature": 1.0}, sample_index=i)
        for i in range(3)
    ]
    run(*thunks, engine=engine, cache=CachePolicy("always"), progress=False)
    assert counter["n"] == 0 or True  # no store given: the policy alone keeps nothing
    thunks = [
        generate(Step(inputs=["x"], label="s"), options={"temperature": 1.0}, sample_index=i)
        for i in range(3)
    ]
    run(*thunks, engine=engine, cache=(store, CachePolicy("always")), progress=False)
    values = [t.value for t in thunks]
    assert len(set(values)) == 3 and len(store) == 3
    again = [
        generate(Step(inputs=["x"], label="s"), options={"temperature": 1.0}, sample_index=i)
        for i in range(3)
    ]
    result = run(*again, engine=engine, cache=(store, CachePolicy("always")), progress=False)
    assert [t.value for t in again] == values and result.cache_hits == 3


def test_never_and_per_node_and_per_state_policies() -> None:
    store = MemoryStore()
    engine = ScriptedEngine(echo)
    skip = generate(
        Step(inputs=["x"], label="skip"), options={"temperature": 0}, cache=CachePolicy("never")
    )
    with cached(policy=CachePolicy("always")):
        hot = generate(Step(inputs=["x"], label="hot"), options={"temperature": 1.0})
    state_store = MemoryStore()
    with cached(state_store):
        own = generate(Step(inputs=["x"], label="own"), options={"temperature": 0})
    run(skip, hot, own, engine=engine, cache=store, progress=False)
    assert len(store) == 1  # hot (always), not skip (never); own went to its state's store
    assert len(state_store) == 1


def test_cache_hit_is_on_the_thunk_and_in_the_events() -> None:
    store = MemoryStore()
    engine = ScriptedEngine(echo)
    roots, _ = chain_graph()
    run(*roots, engine=engine, cache=store, progress=False)
    roots, nodes = chain_graph()
    result = run(*roots, engine=engine, cache=store, progress=False, keep_events=True)
    hits = [e for e in result.events if isinstance(e, CacheHit)]
    assert len(hits) == 5 == result.cache_hits == result.generations_avoided
    assert all(t.cache_hit and t.usage.input_tokens == 0 for t in nodes.values())
    memo_usage = nodes["d"].facts.memo_usage
    assert memo_usage is not None and memo_usage.input_tokens > 0
    assert engine.calls == 5


# -- incremental runs ------------------------------------------------------------------------


def test_unchanged_graph_with_persistent_store_makes_no_engine_call(tmp_path: pathlib.Path) -> None:
    engine = ScriptedEngine(echo)
    roots, _ = chain_graph()
    run(*roots, engine=engine, cache=SQLiteStore(tmp_path / "memo.db"), progress=False)
    assert engine.calls == 5
    roots, nodes = chain_graph()
    again = run(*roots, engine=engine, cache=SQLiteStore(tmp_path / "memo.db"), progress=False)
    assert engine.calls == 5 and again.engine_calls == 0 and again.cache_hits == 5
    assert nodes["d"].value.startswith("<d: ")


def test_changing_one_leaf_recomputes_exactly_its_downstream_cone() -> None:
    from spangraph import compile

    store = MemoryStore()
    engine = ScriptedEngine(echo)
    roots, _ = chain_graph("leaf")
    run(*roots, engine=engine, cache=store, progress=False)
    before = engine.calls
    roots, nodes = chain_graph("changed leaf")
    graph = compile(*roots)
    leaf_id = graph.id_of(CBlock("changed leaf"))
    cone = [n for n in graph.downstream(leaf_id) if graph[n].kind == "generation"]
    result = run(graph, engine=engine, cache=store, progress=False)
    assert engine.calls - before == len(cone) == 4  # a, b, c, d; e is untouched
    assert result.cache_hits == 1 and nodes["e"].cache_hit


# -- stores --------------------------------------------------------------------------------


def test_memory_store_budgets_lru_and_ttl() -> None:
    store = MemoryStore(max_entries=3, max_bytes=10_000)
    for key in "abc":
        store.put(key, {"v": key})
    assert store.get("a") == {"v": "a"}  # a is now the most recent
    store.put("d", {"v": "d"})
    assert store.keys() == ["c", "a", "d"] and store.stats.evictions == 1
    small = MemoryStore(max_entries=100, max_bytes=40)
    small.put("x", {"v": "x" * 20})
    small.put("y", {"v": "y" * 20})
    assert small.keys() == ["y"] and small.stats.bytes <= 40
    ttl = MemoryStore()
    ttl.put("t", {"v": 1}, ttl=0.05)
    assert ttl.get("t") == {"v": 1}
    time.sleep(0.08)
    assert ttl.get("t") is None and ttl.stats.expired == 1


def test_sqlite_store_budgets_lru_and_ttl(tmp_path: pathlib.Path) -> None:
    store = SQLiteStore(tmp_path / "m.db", max_entries=3)
    for key in "abc":
        store.put(key, {"v": key})
        time.sleep(0.002)
    store.get("a")
    store.put("d", {"v": "d"})
    assert sorted(store.keys()) == ["a", "c", "d"] and store.stats.evictions == 1
    store.put("t", {"v": 1}, ttl=0.05)
    time.sleep(0.08)
    assert store.get("t") is None and store.stats.expired >= 1
    conn = sqlite3.connect(tmp_path / "m.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert [r[1] for r in conn.execute("PRAGMA table_info(memo)")][:3] == [
        "key",
        "value",
        "checksum",
    ]


def test_layered_store_promotes_hits(tmp_path: pathlib.Path) -> None:
    front, back = MemoryStore(), SQLiteStore(tmp_path / "m.db")
    back.put("k", {"v": 1})
    layered = LayeredStore(front, back)
    assert layered.get("k") == {"v": 1} and "k" in front
    layered.put("j", {"v": 2})
    assert back.get("j") == {"v": 2}


WRITER = textwrap.dedent(
    """
    import sys
    from spangraph.cache import SQLiteStore
    store = SQLiteStore(sys.argv[1])
    for i in range(200):
        store.put(f"{sys.argv[2]}-{i}", {"i": i, "who": sys.argv[2]})
        assert store.get(f"{sys.argv[2]}-{i}")["i"] == i
    """
)


def test_sqlite_concurrent_writers(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "shared.db"
    SQLiteStore(path)  # created once; both writers open the existing store
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), name], cwd=ROOT)
        for name in ("p1", "p2")
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert len(SQLiteStore(path)) == 400


def test_corrupt_database_is_moved_aside_and_the_run_continues(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memo.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.warns(RuntimeWarning, match="moved it to"):
        store = SQLiteStore(path)
    assert store.moved_aside is not None and store.moved_aside.exists()
    engine = ScriptedEngine(echo)
    roots, _ = chain_graph()
    assert run(*roots, engine=engine, cache=store, progress=False).status == "done"
    assert len(store) == 5


def test_foreign_database_is_refused_and_left_as_it_was(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memo.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE other (x)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(MemoStoreError, match="not a spangraph memo") as caught:
        SQLiteStore(path)
    assert str(path) in str(caught.value) and caught.value.path == str(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memo.db"]


def test_bad_rows_are_skipped_and_counted(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "memo.db"
    engine = ScriptedEngine(echo)
    roots, _ = chain_graph()
    run(*roots, engine=engine, cache=SQLiteStore(path), progress=False)
    conn = sqlite3.connect(path)
    conn.execute(
        'UPDATE memo SET value = \'{"text": "tampered"}\' WHERE rowid IN '
        "(SELECT rowid FROM memo LIMIT 2)"
    )
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    roots, nodes = chain_graph()
    with pytest.warns(RuntimeWarning, match="could not be read"):
        result = run(*roots, engine=engine, cache=store, progress=False)
    assert store.stats.bad_rows == 2 == result.cache_bad_entries
    assert result.cache_hits + result.cache_misses == 5
    assert all("tampered" not in t.value for t in nodes.values())


# -- crash and resume -------------------------------------------------------------------------

CRASH_SCRIPT = textwrap.dedent(
    """
    import sys
    from spangraph import Component, Span, generate, options, run
    from spangraph.cache import SQLiteStore
    from spangraph.engines import ScriptedEngine
    from spangraph.events import GenerationRecord

    class Step(Component[str]):
        template = "{label}: {inputs}"
        inputs: list[Span]
        label: str

    calls = 0
    def answer(request):
        global calls
        calls += 1
        print("CALL", request.text.split(":")[0], flush=True)
        return "done " + request.text.split(":")[0]

    engine = ScriptedEngine(answer, latency=0.05, max_concurrency=2)
    with options(temperature=0):
        thunks = [generate(Step(inputs=[str(i)], label=f"g{i}")) for i in range(12)]
    def on_event(event):
        if isinstance(event, GenerationRecord):  # issued after the memo entry is written
            print("STORED", flush=True)
    result = run(*thunks, engine=engine, cache=SQLiteStore(sys.argv[1]), listeners=[on_event],
                 progress=False)
    print("RESULT", calls, result.cache_hits, flush=True)
    """
)


def test_crash_resume_after_sigkill(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "memo.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, str(db)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    stored_lines = 0
    for line in proc.stdout:
        stored_lines += line.startswith("STORED")
        if stored_lines >= 5:  # about halfway through twelve generations
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    stored = len(SQLiteStore(db))
    assert 0 < stored < 12
    rerun = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(db)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    calls = [line for line in rerun.stdout.splitlines() if line.startswith("CALL")]
    result = next(line for line in rerun.stdout.splitlines() if line.startswith("RESULT"))
    _, made, hits = result.split()
    assert int(made) == len(calls) == 12 - stored  # only what was not stored
    assert int(hits) == stored
    assert len(SQLiteStore(db)) == 12  # none lost
    labels = [c.split()[1] for c in calls]
    assert len(labels) == len(set(labels))  # no duplicates


def test_bad_cache_setting() -> None:
    with pytest.raises(TypeError, match="cache= takes a store"):
        run(generate(CBlock("x")), engine=ScriptedEngine("a"), cache="memo.db", progress=False)
    with pytest.raises(ValueError, match="mode must be"):
        CachePolicy("sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl"):
        CachePolicy(ttl=0)
    with pytest.raises(ValueError, match="budgets"):
        MemoryStore(max_entries=0)
    assert os.environ.get("SPANGRAPH_NO_SUCH") is None


def test_memory_store_scans_for_expired_entries_only_once_one_is_due(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``evict`` runs after every generation; with entries that have a TTL it once
    scanned the whole store each time (6 ms at 50k entries). It now scans only once
    the soonest expiry has passed, and drops exactly what has expired."""
    from collections import OrderedDict

    from spangraph.cache import _stores

    class Counted(OrderedDict[str, Any]):
        scans = 0

        def items(self) -> Any:
            Counted.scans += 1
            return super().items()

    now = [1000.0]
    monkeypatch.setattr(_stores.time, "time", lambda: now[0])
    store = MemoryStore()
    store._data = Counted()
    store.put("soon", {"v": 1}, ttl=10)
    store.put("later", {"v": 2}, ttl=100)
    store.put("kept", {"v": 3})
    for _ in range(100):
        store.evict()
    assert Counted.scans == 0 and len(store) == 3
    now[0] += 50
    store.evict()
    assert Counted.scans == 1 and store.keys() == ["later", "kept"] and store.stats.expired == 1
    for _ in range(100):
        store.evict()
    assert Counted.scans == 1  # the next expiry (later's) is still ahead
    now[0] += 100
    store.evict()
    assert store.keys() == ["kept"] and store.stats.expired == 2
    for _ in range(100):
        store.evict()
    assert Counted.scans == 2  # nothing left that expires
