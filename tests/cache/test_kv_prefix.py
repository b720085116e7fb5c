"""KV-prefix reuse for cache=True spans: the store, prefix-aware scheduling, the real engine."""

from __future__ import annotations

import os
import pathlib
import re
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from typing import Any

import anyio
import pytest

from spangraph import CBlock, Component, Span, generate, options, run
from spangraph.cache import KVPrefixStore
from spangraph.cache import _kv as kv_module
from spangraph.engines import Capabilities, LlamaCppEngine, Request, ScriptedEngine
from tests.conftest import DOCUMENT
from tests.scan import files_containing

ROOT = pathlib.Path(__file__).resolve().parents[2]
QUESTIONS = [
    "Who is a Licensor?",
    "What is a Derivative Work?",
    "What is a Contribution?",
    "What does Object form mean?",
]


class Ask(Component[str]):
    template = "{document}\n\nQuestion: {question}\nAnswer:"
    document: Span
    question: Span


def test_kv_store_keeps_its_byte_budget_by_deleting_lru_files(tmp_path: pathlib.Path) -> None:
    store = KVPrefixStore(tmp_path, max_bytes=2500)
    for digest in ("a", "b", "c"):
        store.path(digest).write_bytes(b"x" * 1000)
        store.record(digest, tokens=10)
        anyio.run(anyio.sleep, 0.002)
    assert store.digests() == ["b", "c"] and not store.path("a").exists()
    store.touch("b")
    store.path("d").write_bytes(b"x" * 1000)
    store.record("d", tokens=10)
    assert store.digests() == ["b", "d"] and not store.path("c").exists()
    assert store.total_bytes() == 2000 and store.evictions == 2
    again = KVPrefixStore(tmp_path, max_bytes=2500)  # another process sees the same index
    assert again.has("b") and again.tokens("b") == 10


class PrefixEngine(ScriptedEngine):
    """A scripted engine that declares KV slots: its prefixes become warm once used."""

    capabilities = Capabilities(streaming=False, kv_slots=True)

    def __init__(self, **kw: Any) -> None:
        super().__init__(self.answer, latency=0.05, **kw)
        self.warm: set[str] = set()
        self.log: list[tuple[str, str]] = []

    def answer(self, request: Request) -> str:
        return "ok"

    def prefix_key(self, action: Any, state: Any) -> str | None:
        return action.document.text[:3] if isinstance(action, Ask) else None

    def prefix_ready(self, digest: str) -> bool:
        return digest in self.warm

    async def _complete(self, request: Request) -> Any:
        key = request.action.document.text[:3]
        self.log.append(("start", key))
        result = await super()._complete(request)
        self.warm.add(key)
        self.log.append(("end", key))
        return result


def test_prefix_aware_scheduling_warms_each_prefix_once() -> None:
    engine = PrefixEngine(max_concurrency=4)
    thunks = [generate(Ask(document=CBlock("AAA doc", cache=True), question=q)) for q in "wxyz"]
    thunks.append(generate(Ask(document=CBlock("BBB doc", cache=True), question="other")))
    run(*thunks, engine=engine, progress=False)
    log = engine.log
    first_a_end = log.index(("end", "AAA"))
    a_starts = [i for i, item in enumerate(log) if item == ("start", "AAA")]
    assert len(a_starts) == 4
    assert a_starts[0] < first_a_end < a_starts[1]  # the others waited for the warm-up
    assert log.index(("start", "BBB")) < first_a_end  # another prefix ran meanwhile


class EarlyWarmEngine(PrefixEngine):
    """Its prefix is warm once a generation has prefilled it (a first wait), well
    before that generation ends (the decode: the scripted latency, four times as long)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._latency = 0.2
        self.cold_starts = 0

    async def _complete(self, request: Request) -> Any:
        key = request.action.document.text[:3]
        if key not in self.warm:
            self.cold_starts += 1
            await anyio.sleep(0.05)
            self.warm.add(key)
        return await super()._complete(request)


def test_generations_sharing_a_prefix_fan_out_once_it_is_warm() -> None:
    engine = EarlyWarmEngine(max_concurrency=4)
    document = CBlock("AAA doc", cache=True)
    thunks = [generate(Ask(document=document, question=q)) for q in "wxyz"]
    result = run(*thunks, engine=engine, progress=False)
    assert result.generations == 4
    assert engine.cold_starts == 1  # one generation warmed the prefix
    # ... and the other three started while it was still running, not after it ended.
    assert engine.log[:4] == [("start", "AAA")] * 4


def test_a_prefix_that_never_warms_is_freed_when_its_generation_ends() -> None:
    engine = PrefixEngine(max_concurrency=4)  # warm only once a generation has ended
    engine.prefix_ready = lambda digest: False  # type: ignore[method-assign]
    thunks = [generate(Ask(document=CBlock("AAA doc", cache=True), question=q)) for q in "wx"]
    result = run(*thunks, engine=engine, progress=False)
    assert result.generations == 2
    assert engine.log == [("start", "AAA"), ("end", "AAA"), ("start", "AAA"), ("end", "AAA")]


@pytest.fixture(scope="module")
def kv_engine(tmp_path_factory: pytest.TempPathFactory, llama: LlamaCppEngine) -> Any:
    kv_dir = tmp_path_factory.mktemp("kv")
    engine = LlamaCppEngine(
        llama.model_path, sha256=llama.model_sha256, home=llama.home, kv_dir=kv_dir, n_parallel=4
    )
    yield engine
    engine.close()


def _document_tokens(engine: LlamaCppEngine, text: str) -> int:
    return len(engine.shared().http("/tokenize", {"content": text})["tokens"])


@pytest.mark.real
def test_shared_document_is_prefilled_once(kv_engine: LlamaCppEngine) -> None:
    text = DOCUMENT[:4500]
    doc_tokens = _document_tokens(kv_engine, text)
    assert doc_tokens >= 800
    document = CBlock(text, cache=True)
    with options(temperature=0, max_tokens=4):
        thunks = [generate(Ask(document=document, question=q)) for q in QUESTIONS]
    run(*thunks, engine=kv_engine, progress=False)
    question_tokens = max(
        _document_tokens(kv_engine, f"\n\nQuestion: {q}\nAnswer:") for q in QUESTIONS
    )
    evaluated = sum(t.usage.input_tokens - t.usage.cached_input_tokens for t in thunks)
    assert evaluated <= doc_tokens + 4 * question_tokens + 16
    assert all(t.usage.cached_input_tokens >= doc_tokens - 8 for t in thunks[1:])
    assert kv_engine.kv_store.digests()
    # Once the document was saved, the other questions started while the first one
    # still decoded: all four slots were busy at once (waiting for the first to end,
    # at most three would have been).
    assert kv_engine.shared().slots.peak_busy == 4


SECOND_PROCESS = textwrap.dedent(
    """
    import json, sys
    from spangraph import CBlock, Component, Span, generate, run
    from spangraph.engines import LlamaCppEngine

    class Ask(Component[str]):
        template = "{document}\\n\\nQuestion: {question}\\nAnswer:"
        document: Span
        question: Span

    model, sha, home, kv_dir, text = sys.argv[1:6]
    engine = LlamaCppEngine(model, sha256=sha, home=home, kv_dir=kv_dir, n_parallel=4)
    thunk = generate(Ask(document=CBlock(text, cache=True), question="Who may grant licenses?"),
                     options={"max_tokens": 4, "temperature": 0})
    run(thunk, engine=engine, progress=False)
    usage = thunk.usage
    print(json.dumps([usage.input_tokens, usage.cached_input_tokens]))
    engine.close()
    """
)


@pytest.mark.real
def test_a_new_process_reuses_the_saved_prefix(kv_engine: LlamaCppEngine) -> None:
    text = DOCUMENT[:4500]
    warm = generate(
        Ask(document=CBlock(text, cache=True), question="Warm up."), options={"max_tokens": 2}
    )
    run(warm, engine=kv_engine, progress=False)
    doc_tokens = _document_tokens(kv_engine, text)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            SECOND_PROCESS,
            str(kv_engine.model_path),
            kv_engine.model_sha256,
            str(kv_engine.home),
            kv_engine.config.slot_save_path,
            text,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    total, cached = (int(x) for x in out.strip().splitlines()[-1].strip("[]").split(","))
    assert total - cached <= 0.10 * doc_tokens


# -- what a restore may trust (the store alone; the real engine is in test_kv_faults.py) --

DIGEST = "0123456789abcdef0123456789abcdef01234567"
MODEL = "a" * 64
CONTENT = b"GGSQ the cached document, which must never reach a message " * 100
OPEN_AND_CLOSE = (
    "import sys; from spangraph.cache import KVPrefixStore; KVPrefixStore(sys.argv[1]).close()"
)


def _saved(directory: pathlib.Path, model: str = MODEL) -> KVPrefixStore:
    store = KVPrefixStore(directory, model=model)
    temp = store.temp_name(DIGEST)
    (directory / temp).write_bytes(CONTENT)
    assert store.commit(DIGEST, temp, tokens=42)
    return store


def _mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _truncated(path: pathlib.Path) -> None:
    path.write_bytes(path.read_bytes()[: len(CONTENT) // 2])


def _garbage(path: pathlib.Path) -> None:
    path.write_bytes(os.urandom(len(CONTENT)))


def _one_byte(path: pathlib.Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_truncated, f"is {len(CONTENT) // 2} bytes where its index row says {len(CONTENT)}"),
        (lambda p: p.write_bytes(b""), f"is 0 bytes where its index row says {len(CONTENT)}"),
        (_garbage, "does not match its checksum"),
        (_one_byte, "does not match its checksum"),
        (lambda p: p.unlink(), "is missing"),
    ],
    ids=["truncated", "empty", "garbage", "one-byte", "missing"],
)
def test_a_damaged_slot_file_is_dropped_with_a_warning_naming_it(
    tmp_path: pathlib.Path, damage: Any, reason: str
) -> None:
    store = _saved(tmp_path)
    path = store.path(DIGEST)
    assert store.verified(DIGEST)
    damage(path)
    with pytest.warns(RuntimeWarning) as caught:
        assert not store.verified(DIGEST)
    (warning,) = caught
    message = str(warning.message)
    assert message == f"KV slot file {path} {reason}: dropped; its prefix is prefilled again"
    assert b"cached document" not in message.encode()
    assert not path.exists() and store.digests() == [] and not store.has(DIGEST)
    assert not store.verified(DIGEST)  # nothing left to verify, nothing more to say


def test_a_row_of_another_model_is_never_restored(tmp_path: pathlib.Path) -> None:
    _saved(tmp_path, model="b" * 64)
    store = KVPrefixStore(tmp_path, model=MODEL)
    assert not store.has(DIGEST)  # not ready for scheduling either
    with pytest.warns(RuntimeWarning, match="was saved by another model: dropped"):
        assert not store.verified(DIGEST)
    assert not store.path(DIGEST).exists() and store.digests() == []


def test_a_verified_file_is_read_again_only_when_it_changed(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _saved(tmp_path)
    reads: list[str] = []
    checksum = kv_module.file_checksum
    monkeypatch.setattr(kv_module, "file_checksum", lambda p: reads.append(str(p)) or checksum(p))
    # The store hashed the file when it committed it: restoring it needs no read.
    assert store.verified(DIGEST) and store.verified(DIGEST) and reads == []
    store.path(DIGEST).write_bytes(CONTENT)  # same bytes, written again: the ctime moves
    assert store.verified(DIGEST) and store.verified(DIGEST) and len(reads) == 1
    other = KVPrefixStore(tmp_path, model=MODEL)  # another store (process) reads it itself
    assert other.verified(DIGEST) and len(reads) == 2


def test_a_commit_puts_a_complete_file_in_place_and_indexes_it(tmp_path: pathlib.Path) -> None:
    store = KVPrefixStore(tmp_path, model=MODEL)
    temp = store.temp_name(DIGEST)
    assert re.fullmatch(rf"{DIGEST}\.{os.getpid()}-[0-9a-f]{{12}}\.tmp", temp)
    assert temp != store.temp_name(DIGEST)  # concurrent writers never share a name
    (tmp_path / temp).write_bytes(CONTENT)
    assert not store.has(DIGEST) and not store.verified(DIGEST)  # a temp file is not a slot
    assert store.commit(DIGEST, temp, tokens=42)
    assert not (tmp_path / temp).exists() and store.path(DIGEST).read_bytes() == CONTENT
    assert store.has(DIGEST) and store.verified(DIGEST) and store.tokens(DIGEST) == 42
    assert not store.commit(DIGEST, "gone.1-ab.tmp", tokens=1)  # a temp a cleanup took
    assert store.verified(DIGEST)


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def test_opening_a_store_clears_what_no_row_names(tmp_path: pathlib.Path) -> None:
    store = _saved(tmp_path)
    store.close()
    hour_ago = time.time() - 2 * 3600
    dead = tmp_path / f"{DIGEST}.{_dead_pid()}-aaaaaaaaaaaa.tmp"  # a writer killed mid-save
    mine = tmp_path / f"{DIGEST}.{os.getpid()}-bbbbbbbbbbbb.tmp"  # this process's, in flight
    live = tmp_path / f"{DIGEST}.1-cccccccccccc.tmp"  # a live writer's (pid 1 runs)
    stale = tmp_path / f"{DIGEST}.1-dddddddddddd.tmp"  # a live pid, but hours old: reused pid
    orphan = tmp_path / ("f" * 40 + ".kv")  # renamed into place, killed before its row
    notes = tmp_path / "notes.txt"  # not the store's
    for path in (dead, mine, live, stale, orphan, notes):
        path.write_bytes(b"half")
    os.utime(stale, (hour_ago, hour_ago))
    again = KVPrefixStore(tmp_path, model=MODEL)
    left = {p.name for p in tmp_path.iterdir() if not p.name.startswith("index.db")}
    assert left == {mine.name, live.name, notes.name, store.filename(DIGEST)}
    assert again.verified(DIGEST)


def test_an_index_of_an_older_version_is_dropped_with_its_files(tmp_path: pathlib.Path) -> None:
    conn = sqlite3.connect(tmp_path / "index.db")
    conn.execute(
        "CREATE TABLE prefixes (digest TEXT PRIMARY KEY, size INTEGER NOT NULL, "
        "tokens INTEGER NOT NULL, accessed REAL NOT NULL)"
    )
    conn.execute("INSERT INTO prefixes VALUES (?, ?, ?, ?)", (DIGEST, len(CONTENT), 42, 0.0))
    conn.commit()
    conn.close()
    (tmp_path / f"{DIGEST}.kv").write_bytes(CONTENT)
    store = KVPrefixStore(tmp_path, model=MODEL)  # no crash, no file it cannot verify
    assert store.digests() == [] and not store.path(DIGEST).exists()
    assert not store.verified(DIGEST)
    _saved(tmp_path).close()
    assert KVPrefixStore(tmp_path, model=MODEL).verified(DIGEST)  # the new schema stays


def test_an_index_that_is_not_a_database_is_started_again(tmp_path: pathlib.Path) -> None:
    (tmp_path / "index.db").write_bytes(b"this is not SQLite" * 100)
    (tmp_path / f"{DIGEST}.kv").write_bytes(CONTENT)
    with pytest.warns(RuntimeWarning, match="is not a usable SQLite database"):
        store = KVPrefixStore(tmp_path, model=MODEL)
    assert store.digests() == [] and not store.path(DIGEST).exists()
    _saved(tmp_path)
    assert store.verified(DIGEST)


def test_folders_and_files_are_the_user_s_alone_whatever_the_umask(
    tmp_path: pathlib.Path,
) -> None:
    previous = os.umask(0o022)
    try:
        directory = tmp_path / "made" / "kv"
        store = KVPrefixStore(directory, model=MODEL)
        temp = store.temp_name(DIGEST)
        (directory / temp).write_bytes(CONTENT)  # as llama.cpp writes it: 0644 here
        assert _mode(directory / temp) == 0o644
        store.commit(DIGEST, temp, tokens=1)
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "made") == 0o700 and _mode(directory) == 0o700
    files = [p for p in directory.iterdir()]
    assert {p.name for p in files} >= {"index.db", "index.db-wal", store.filename(DIGEST)}
    assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}


def _read_here(paths: list[pathlib.Path], needles: list[str]) -> list[str]:
    """What the key test of tests/engines/test_llamacpp_server.py used to do."""
    return [str(p) for p in paths for n in needles if n.encode() in p.read_bytes()]


@pytest.mark.parametrize(
    "scan", [files_containing, _read_here], ids=["from another process", "in this process"]
)
def test_a_live_index_s_files_are_read_only_from_another_process(
    tmp_path: pathlib.Path, scan: Any
) -> None:
    """The 'disk I/O error' that a second KVPrefixStore on the session's index met in
    the full suite. A test read every file under the home, the live index's included,
    in the process that held the index open: closing those descriptors dropped SQLite's
    POSIX locks on them. A later process (a CLI run, an example) closing the index then
    took itself for its last user and deleted the live ``-wal`` and ``-shm``; the first
    store wrote on into the deleted ``-wal``, and the next store of this process found a
    new, empty ``-wal`` where its shared memory said there were frames (a short read).
    ``files_containing`` reads in a child process, whose descriptors are its own."""
    first = KVPrefixStore(tmp_path, model=MODEL)
    assert scan(sorted(tmp_path.iterdir()), ["no such text"]) == []
    subprocess.run(
        [sys.executable, "-c", OPEN_AND_CLOSE, str(tmp_path)], cwd=ROOT, check=True, timeout=60
    )
    temp = first.temp_name(DIGEST)
    (tmp_path / temp).write_bytes(CONTENT)
    assert first.commit(DIGEST, temp, tokens=42)
    if scan is _read_here:
        with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
            KVPrefixStore(tmp_path, model=MODEL)
        return
    second = KVPrefixStore(tmp_path, model=MODEL)
    assert second.digests() == [DIGEST] and second.verified(DIGEST)


FORKED = textwrap.dedent(
    """
    import os, subprocess, sys
    from spangraph.cache import KVPrefixStore

    folder, digest, opener = sys.argv[1], sys.argv[2], sys.argv[3]
    store = KVPrefixStore(folder)
    store.digests()
    ready, go = os.pipe()
    child = os.fork()
    if child == 0:
        os.read(ready, 1)  # the parent has closed its store
        store.digests()
        subprocess.run([sys.executable, "-c", opener, folder], check=True)
        with open(store.path(digest), "wb") as f:
            f.write(b"saved state")
        store.record(digest, tokens=3)
        try:
            print(KVPrefixStore(folder).digests())
        except Exception as exc:
            print(repr(exc))
        sys.stdout.flush()
        os._exit(0)
    store.close()
    os.write(go, b"x")
    os.waitpid(child, 0)
    """
)


def test_a_store_used_across_a_fork_opens_its_index_again_in_the_child(
    tmp_path: pathlib.Path,
) -> None:
    """A forked child holds none of its parent's SQLite locks while SQLite believes it
    does: once the parent closed the index, another process closing it deleted the
    ``-wal`` and ``-shm`` the child used, and the child's next store met 'disk I/O
    error'. (Forked in a fresh interpreter: this one may run threads.)"""
    done = subprocess.run(
        [sys.executable, "-c", FORKED, str(tmp_path), DIGEST, OPEN_AND_CLOSE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == repr([DIGEST]), done.stdout + done.stderr
