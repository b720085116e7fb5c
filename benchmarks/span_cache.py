"""Span-cache benchmark on the real embedded engine (llama.cpp, Gemma 3 270M).

Workload: 8 questions over one ~1,500-token document (the start of the
Apache License 2.0), as ``CBlock(cache=True)``. Printed for each
configuration: prompt tokens evaluated, document tokens reused, wall time.

(a) span cache off: every prompt is evaluated in full (no KV reuse);
(b) span cache on, cold: the document is prefilled once, saved, restored;
(c) span cache on, warm from disk, in a fresh process (same KV directory);
(d) re-run of the unchanged graph with a warm output memo (SQLite).

Targets: >= 90% of document tokens reused in (b); (b) >= 4x faster than
(a); (d) <= 1% of (a).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import tempfile
import time

from spangraph import CBlock, Component, Span, generate, options, run
from spangraph.cache import SQLiteStore
from spangraph.engines import LlamaCppEngine

ROOT = pathlib.Path(__file__).resolve().parent.parent
QUESTIONS = [
    "Who is a Licensor?",
    "What is a Derivative Work?",
    "What is a Contribution?",
    "What does Object form mean?",
    "What does Source form mean?",
    "Who is a Contributor?",
    "What is the Work?",
    "What is a Legal Entity?",
]


class Ask(Component[str]):
    template = "{document}\n\nQuestion: {question}\nAnswer:"
    document: Span
    question: Span


def document_text() -> str:
    return (ROOT / "examples" / "apache-2.0.txt").read_text()[:7200]


def workload() -> list[object]:
    document = CBlock(document_text(), cache=True)
    with options(temperature=0, max_tokens=8):
        return [generate(Ask(document=document, question=q)) for q in QUESTIONS]


def measure(engine: LlamaCppEngine, cache: object = None) -> dict[str, float]:
    thunks = workload()
    start = time.perf_counter()
    result = run(*thunks, engine=engine, cache=cache, progress=False)
    wall = time.perf_counter() - start
    evaluated = sum(t.usage.input_tokens - t.usage.cached_input_tokens for t in thunks)  # type: ignore[attr-defined]
    reused = sum(t.usage.cached_input_tokens for t in thunks)  # type: ignore[attr-defined]
    return {
        "wall": wall,
        "evaluated": evaluated,
        "reused": reused,
        "hits": result.cache_hits,
        "engine_calls": result.engine_calls,
    }


def fresh_process(kv_dir: str) -> dict[str, float]:
    code = (
        "import json, sys; sys.path.insert(0, 'benchmarks');"
        "from span_cache import measure; from spangraph.engines import LlamaCppEngine;"
        f"e = LlamaCppEngine(kv_dir={kv_dir!r}); e.shared();"
        "print(json.dumps(measure(e))); e.close()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        off = LlamaCppEngine(kv_dir=f"{tmp}/kv-off", kv_cache=False)
        off.shared()
        doc_tokens = len(off.shared().http("/tokenize", {"content": document_text()})["tokens"])
        a = measure(off)
        off.close()

        on = LlamaCppEngine(kv_dir=f"{tmp}/kv")
        on.shared()
        b = measure(on)
        on.close()

        c = fresh_process(f"{tmp}/kv")

        memo_engine = LlamaCppEngine(kv_dir=f"{tmp}/kv")
        memo_engine.shared()
        measure(memo_engine, SQLiteStore(f"{tmp}/memo.db"))  # fills the memo
        d = measure(memo_engine, SQLiteStore(f"{tmp}/memo.db"))
        memo_engine.close()

    print(f"workload: {len(QUESTIONS)} questions over a {doc_tokens}-token cached document")
    print(f"{'configuration':<42}{'evaluated':>10}{'reused':>8}{'wall s':>9}")
    rows = [
        ("(a) span cache off", a),
        ("(b) span cache on (cold)", b),
        ("(c) on, KV warm from disk, fresh process", c),
        ("(d) re-run, warm output memo", d),
    ]
    for label, row in rows:
        print(f"{label:<42}{row['evaluated']:>10.0f}{row['reused']:>8.0f}{row['wall']:>9.3f}")
    total_doc = doc_tokens * len(QUESTIONS)
    cold_max = (len(QUESTIONS) - 1) / len(QUESTIONS)
    print(
        f"document tokens reused in (b): {min(b['reused'] / total_doc, 1):.1%} (cold: the first "
        f"question must prefill it, so at most {cold_max:.1%}; of the 7 later questions' "
        f"document tokens: {min(b['reused'] / (doc_tokens * (len(QUESTIONS) - 1)), 1):.1%})"
    )
    print(f"document tokens reused in (c): {min(c['reused'] / total_doc, 1):.1%} (target >= 90%)")
    print(f"(b) speed-up over (a): {a['wall'] / b['wall']:.1f}x (target >= 4x)")
    print(f"(c) speed-up over (a): {a['wall'] / c['wall']:.1f}x")
    print(
        f"(d) memo re-run: {d['wall'] * 1000:.1f} ms = {d['wall'] / a['wall']:.2%} of (a) "
        f"(target <= 1%), {d['engine_calls']:.0f} engine calls, {d['hits']:.0f} memo hits"
    )


if __name__ == "__main__":
    main()
