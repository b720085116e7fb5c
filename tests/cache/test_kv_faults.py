"""Bad KV slot files and killed writers, on the real engine, each in a fresh process.

llama.cpp aborts the process on a truncated slot file (``GGML_ASSERT(nread <=
state_size)``; ``test_without_verification_a_truncated_file_aborts_the_process``
shows it), so every run here is a subprocess: it must exit 0 and answer (at
temperature 0) what a plain prefill answers.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from spangraph.cache import KVPrefixStore
from spangraph.engines import LlamaCppEngine
from tests.conftest import DOCUMENT

pytestmark = pytest.mark.real
ROOT = pathlib.Path(__file__).resolve().parents[2]
TEXT = DOCUMENT[:1200]

GENERATE = textwrap.dedent(
    """
    import json, os, signal, sys, warnings
    os.umask(0o022)
    from spangraph import CBlock, Component, Span, generate, run
    from spangraph.cache import KVPrefixStore
    from spangraph.engines import LlamaCppEngine

    class Ask(Component[str]):
        template = "{document}\\n\\nQuestion: {question}\\nAnswer:"
        document: Span
        question: Span

    model, sha, home, kv_dir, text, how = sys.argv[1:7]
    if how == "killed writer":  # llama.cpp has written half the file when the kill comes
        def commit(self, digest, temp_name, tokens):
            path = self.directory / temp_name
            os.truncate(path, path.stat().st_size // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        KVPrefixStore.commit = commit
    if how == "unverified":  # the store as it was: a row is enough to restore
        KVPrefixStore.verified = KVPrefixStore.has
    engine = LlamaCppEngine(model, sha256=sha, home=home, kv_dir=kv_dir, n_ctx=2048, n_parallel=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        thunk = generate(
            Ask(document=CBlock(text, cache=True), question="Who may grant licenses?"),
            options={"max_tokens": 12, "temperature": 0},
        )
        run(thunk, engine=engine, progress=False)
    print(json.dumps({
        "answer": thunk.value,
        "cached": thunk.usage.cached_input_tokens,
        "warnings": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
    }))
    engine.close()
    """
)


@dataclass
class Outcome:
    returncode: int
    answer: str = ""
    cached: int = 0
    warnings: tuple[str, ...] = ()
    stderr: str = ""


def _start(engine: LlamaCppEngine, kv_dir: pathlib.Path, how: str) -> subprocess.Popen[str]:
    argv = [str(engine.model_path), engine.model_sha256, str(engine.home), str(kv_dir), TEXT, how]
    return subprocess.Popen(
        [sys.executable, "-c", GENERATE, *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> Outcome:
    out, err = process.communicate(timeout=300)
    lines = out.strip().splitlines()
    if process.returncode != 0 or not lines:
        return Outcome(process.returncode, stderr=err[-2000:])
    result = json.loads(lines[-1])
    return Outcome(0, result["answer"], result["cached"], tuple(result["warnings"]), err[-2000:])


def _generate(engine: LlamaCppEngine, kv_dir: pathlib.Path, how: str = "plain") -> Outcome:
    return _finish(_start(engine, kv_dir, how))


@pytest.fixture(scope="module")
def engine(llama: LlamaCppEngine) -> LlamaCppEngine:
    return llama


@pytest.fixture(scope="module")
def prefilled(engine: LlamaCppEngine, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A slot folder holding the real prefix file, and the plain prefill's answer."""
    kv_dir = tmp_path_factory.mktemp("kv-prefilled")
    outcome = _generate(engine, kv_dir)
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.cached == 0 and outcome.answer.strip() and not outcome.warnings
    (slot_file,) = kv_dir.glob("*.kv")
    return kv_dir, slot_file.name, outcome.answer


def _store(engine: LlamaCppEngine, kv_dir: pathlib.Path) -> KVPrefixStore:
    return KVPrefixStore(kv_dir, model=engine.model_sha256)


def _copy(prefilled: Any, tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    source, name, _ = prefilled
    kv_dir = tmp_path / "kv"
    shutil.copytree(source, kv_dir)
    return kv_dir, kv_dir / name


def _assert_saved_again(engine: LlamaCppEngine, kv_dir: pathlib.Path, name: str) -> None:
    """One complete slot file under its real name, verified, 0600; no temporary file."""
    assert sorted(p.name for p in kv_dir.glob("*.kv")) == [name]
    assert not list(kv_dir.glob("*.tmp"))
    assert _store(engine, kv_dir).verified(name.removesuffix(".kv"))
    assert stat.S_IMODE((kv_dir / name).stat().st_mode) == 0o600


def test_an_intact_file_is_restored_and_answers_as_a_prefill(
    engine: LlamaCppEngine, prefilled: Any, tmp_path: pathlib.Path
) -> None:
    kv_dir, _ = _copy(prefilled, tmp_path)
    outcome = _generate(engine, kv_dir)
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.cached > 100 and not outcome.warnings  # restored, not prefilled
    assert outcome.answer == prefilled[2]


def _other_model(path: pathlib.Path) -> None:
    with sqlite3.connect(path.parent / "index.db") as conn:
        conn.execute("UPDATE prefixes SET model = ?", ("0" * 64,))


DAMAGES: dict[str, tuple[Callable[[pathlib.Path], None], str]] = {
    "truncated": (lambda p: os.truncate(p, p.stat().st_size // 2), "bytes where its index"),
    "empty": (lambda p: os.truncate(p, 0), "is 0 bytes where its index row says"),
    "garbage": (lambda p: p.write_bytes(os.urandom(p.stat().st_size)), "does not match"),
    "garbage after the header": (
        lambda p: p.write_bytes(p.read_bytes()[:64] + os.urandom(p.stat().st_size - 64)),
        "does not match its checksum",
    ),
    "missing": (lambda p: p.unlink(), "is missing"),
    "another model's row": (_other_model, "was saved by another model"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_bad_slot_file_is_dropped_and_the_prefix_prefilled(
    engine: LlamaCppEngine, prefilled: Any, tmp_path: pathlib.Path, damage: str
) -> None:
    kv_dir, slot_file = _copy(prefilled, tmp_path)
    harm, reason = DAMAGES[damage]
    harm(slot_file)
    outcome = _generate(engine, kv_dir)
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.answer == prefilled[2]
    assert outcome.cached == 0  # prefilled, not restored
    (warning,) = outcome.warnings
    assert warning.startswith(f"KV slot file {slot_file} ") and reason in warning
    _assert_saved_again(engine, kv_dir, slot_file.name)
    again = _generate(engine, kv_dir)  # and the file saved anew is good
    assert again.returncode == 0 and again.cached > 100 and again.answer == prefilled[2]


def test_without_verification_a_truncated_file_aborts_the_process(
    engine: LlamaCppEngine, prefilled: Any, tmp_path: pathlib.Path
) -> None:
    """The cause, shown: llama.cpp trusts the file it is given."""
    kv_dir, slot_file = _copy(prefilled, tmp_path)
    os.truncate(slot_file, slot_file.stat().st_size // 2)
    outcome = _generate(engine, kv_dir, "unverified")
    assert outcome.returncode == -signal.SIGABRT, outcome
    assert "GGML_ASSERT" in outcome.stderr


def test_a_killed_writer_leaves_no_file_under_a_real_name(
    engine: LlamaCppEngine, prefilled: Any, tmp_path: pathlib.Path
) -> None:
    kv_dir = tmp_path / "kv"
    killed = _generate(engine, kv_dir, "killed writer")
    assert killed.returncode == -signal.SIGKILL
    (half,) = kv_dir.glob("*.tmp")  # its half-written temporary file
    assert not list(kv_dir.glob("*.kv")) and _store(engine, kv_dir).digests() == []
    outcome = _generate(engine, kv_dir)
    assert outcome.returncode == 0, outcome.stderr
    assert outcome.answer == prefilled[2] and outcome.cached == 0 and not outcome.warnings
    assert not half.exists()  # cleared: its writer is dead
    _assert_saved_again(engine, kv_dir, prefilled[1])


def test_concurrent_writers_leave_one_complete_file(
    engine: LlamaCppEngine, prefilled: Any, tmp_path: pathlib.Path
) -> None:
    kv_dir = tmp_path / "kv"
    processes = [_start(engine, kv_dir, "plain") for _ in range(2)]
    outcomes = [_finish(p) for p in processes]
    assert [o.returncode for o in outcomes] == [0, 0], [o.stderr for o in outcomes]
    assert all(o.answer == prefilled[2] for o in outcomes)
    _assert_saved_again(engine, kv_dir, prefilled[1])
