"""KV-prefix reuse for cache=True spans: the store, prefix-aware scheduling, the real engine."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap
from typing import Any

import anyio
import pytest

from spangraph import CBlock, Component, Span, generate, options, run
from spangraph.cache import KVPrefixStore
from spangraph.engines import Capabilities, LlamaCppEngine, Request, ScriptedEngine
from tests.conftest import DOCUMENT

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


@pytest.fixture(scope="module")
def kv_engine(tmp_path_factory: pytest.TempPathFactory, llama: LlamaCppEngine) -> Any:
    kv_dir = tmp_path_factory.mktemp("kv")
    engine = LlamaCppEngine(
        llama.model_path, sha256=llama.model_sha256, home=llama.home, kv_dir=kv_dir, n_parallel=2
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
    engine = LlamaCppEngine(model, sha256=sha, home=home, kv_dir=kv_dir, n_parallel=2)
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
