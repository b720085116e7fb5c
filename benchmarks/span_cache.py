"""The span cache against what a llama.cpp user writes by hand, on the real engine.

Workload: 8 questions over one ~1,500-token document (the start of the Apache
License 2.0), 16 tokens each, temperature 0, on the embedded model (Gemma 3 270M).
Every contestant runs in the same process (but (d)), in interleaved rounds: a
round runs each once, in turn, so that the machine's drifting speed reaches all
of them alike. Each round uses its own copy of the document (its first line
names the round), so that no contestant finds the previous round's prompt in a
slot or in llama.cpp's own prompt cache, and every cold run is cold.

- (a) hand-written, sequential: plain asyncio + httpx against an
  ``xllamacpp.Server`` with 1 slot, set up as its README shows, with llama.cpp's
  default prompt caching (``cache_prompt`` on): the questions one after another,
  so each reuses the document the previous one left in the slot.
- (b) hand-written, everything at once: the same client sending all 8 at once to
  a server with as many slots as spangraph's engine.
- (c) spangraph, cold: ``generate()`` of each question with the document as
  ``CBlock(cache=True)``, on ``LlamaCppEngine()`` with its defaults.
- (d) spangraph, warm from disk: the same run in a fresh process, whose engine
  finds the document's KV state that (c) saved (loading the model is not timed).
- (e) 16 prompts with no shared prefix: spangraph against (b)'s client.

Hand-written servers get an API key too (nothing to do with speed: a local
server nobody else may use), and ``OMP_WAIT_POLICY=PASSIVE`` as spangraph sets it.

Printed: best and median wall time of each, prompt tokens evaluated and reused
(llama.cpp's ``prompt_n`` and ``cache_n``), the ratios, the floor (the document
prefilled once, then the questions' own tokens at the measured rates), where
(d)'s time goes, and how often answers differ between a batched and a
sequential run of the same prompts (with and without a ``seed``).

Targets (on the medians): (c)/(a) <= 0.8x; (d)/(a) <= 0.3x; (e) <= 1.0x.

``python benchmarks/span_cache.py [--rounds N]`` (default 5), from the repository root.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import pathlib
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as spangraph sets it, before llama.cpp loads

import httpx

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
MAX_TOKENS = 16
FAN_OUT = 16
TARGET_COLD, TARGET_WARM, TARGET_FAN_OUT = 0.8, 0.3, 1.0


class Ask(Component[str]):
    template = "{document}\n\nQuestion: {question}\nAnswer:"
    document: Span
    question: Span


def document_text(round_no: int = 0) -> str:
    """The document of a round: its own first line, then the same ~1,500 tokens."""
    licence = (ROOT / "examples" / "apache-2.0.txt").read_text()[:7200]
    return f"Copy {round_no} of the licence.\n{licence}"


def question_prompt(document: str, question: str) -> str:
    """What a hand-written client sends: the same text ``Ask`` renders."""
    return Ask.template.format(document=document, question=question)


def fan_out_prompts(round_no: int) -> list[str]:
    return [
        f"Round {round_no}, note {k}: one short sentence about the number {k * 7 + 3}:"
        for k in range(FAN_OUT)
    ]


@dataclass
class Outcome:
    """One contestant's run: its wall time, tokens and answers."""

    wall: float
    evaluated: int
    reused: int
    answers: list[str]
    extra: dict[str, Any] = field(default_factory=dict)


# -- the hand-written client ------------------------------------------------------------


class HandWritten:
    """An ``xllamacpp.Server`` and a plain asyncio + httpx client, as a user writes them."""

    def __init__(self, model_path: str, n_parallel: int, n_ctx: int) -> None:
        import xllamacpp as xlc

        params = xlc.CommonParams()
        params.model.path = model_path
        params.n_parallel = n_parallel
        params.n_ctx = n_ctx
        params.verbosity = -1
        self.key = secrets.token_urlsafe(24)
        params.api_keys = [self.key]
        self.server: Any = xlc.Server(params)
        self.url = f"{self.server.listening_address}/completion"

    async def _ask(self, client: httpx.AsyncClient, prompt: str, extra: dict[str, Any]) -> Any:
        body = {"prompt": prompt, "n_predict": MAX_TOKENS, "temperature": 0, **extra}
        response = await client.post(self.url, json=body)
        response.raise_for_status()
        return response.json()

    async def _run(self, prompts: Sequence[str], at_once: bool, extra: dict[str, Any]) -> Any:
        headers = {"Authorization": f"Bearer {self.key}"}
        async with httpx.AsyncClient(timeout=None, headers=headers) as client:
            if at_once:
                return await asyncio.gather(*(self._ask(client, p, extra) for p in prompts))
            return [await self._ask(client, p, extra) for p in prompts]

    def run(self, prompts: Sequence[str], *, at_once: bool, **extra: Any) -> Outcome:
        start = time.perf_counter()
        replies = asyncio.run(self._run(prompts, at_once, extra))
        wall = time.perf_counter() - start
        timings = [r["timings"] for r in replies]
        return Outcome(
            wall,
            sum(int(t["prompt_n"]) for t in timings),
            sum(int(t["cache_n"]) for t in timings),
            [str(r["content"]) for r in replies],
            {"timings": timings},
        )

    def close(self) -> None:
        del self.server


# -- spangraph ---------------------------------------------------------------------------


def ask_workload(round_no: int, **more: Any) -> list[Any]:
    document = CBlock(document_text(round_no), cache=True)
    with options(temperature=0, max_tokens=MAX_TOKENS, **more):
        return [generate(Ask(document=document, question=q)) for q in QUESTIONS]


def measure(engine: LlamaCppEngine, thunks: list[Any], cache: Any = None) -> Outcome:
    start = time.perf_counter()
    result = run(*thunks, engine=engine, cache=cache, progress=False)
    wall = time.perf_counter() - start
    usage = [t.usage for t in thunks]
    timings = [t.timings for t in thunks]
    return Outcome(
        wall,
        sum(u.input_tokens - u.cached_input_tokens for u in usage),
        sum(u.cached_input_tokens for u in usage),
        [str(t.value) for t in thunks],
        {
            "engine_calls": result.engine_calls,
            "cache_hits": result.cache_hits,
            "queue_ms": [t.queue_ms for t in timings],
            "prefill_ms": [t.prefill_ms for t in timings],
            "decode_ms": [t.decode_ms for t in timings],
            "total_ms": [t.total_ms for t in timings],
            "output_tokens": [u.output_tokens for u in usage],
        },
    )


def warm_in_fresh_process(kv_dir: str, round_no: int) -> Outcome:
    """(d): a new process, a new engine on the same KV folder; only the run is timed."""
    code = (
        "import json, sys, dataclasses; sys.path.insert(0, 'benchmarks');"
        "from span_cache import ask_workload, measure;"
        "from spangraph.engines import LlamaCppEngine;"
        f"e = LlamaCppEngine(kv_dir={kv_dir!r}); e.shared();"
        f"print(json.dumps(dataclasses.asdict(measure(e, ask_workload({round_no}))))); e.close()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
    )
    return Outcome(**json.loads(out.stdout.strip().splitlines()[-1]))


def fan_out_workload(round_no: int) -> list[Any]:
    with options(temperature=0, max_tokens=MAX_TOKENS):
        return [generate(CBlock(prompt)) for prompt in fan_out_prompts(round_no)]


# -- the report --------------------------------------------------------------------------


def differing(one: Sequence[str], other: Sequence[str]) -> int:
    return sum(a.strip() != b.strip() for a, b in zip(one, other, strict=True))


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = LlamaCppEngine(kv_dir=f"{tmp}/kv")
        shared = engine.shared()
        slots, n_ctx = engine.config.n_parallel, engine.config.n_ctx
        model_path = str(engine.model_path)
        sequential = HandWritten(model_path, 1, 4096)
        at_once = HandWritten(model_path, slots, n_ctx)
        doc_tokens = len(shared.http("/tokenize", {"content": document_text()})["tokens"])
        print(
            f"workload: {len(QUESTIONS)} questions of {MAX_TOKENS} tokens over a "
            f"{doc_tokens}-token document; {os.cpu_count()} cores; spangraph's engine: "
            f"{slots} slots, n_ctx {n_ctx}; {rounds} interleaved rounds"
        )
        results: dict[str, list[Outcome]] = {k: [] for k in "abcde"}
        results["e peer"] = []
        for r in range(rounds):
            prompts = [question_prompt(document_text(r), q) for q in QUESTIONS]
            results["a"].append(sequential.run(prompts, at_once=False))
            results["b"].append(at_once.run(prompts, at_once=True))
            results["c"].append(measure(engine, ask_workload(r)))
            results["d"].append(warm_in_fresh_process(f"{tmp}/kv", r))
            results["e"].append(measure(engine, fan_out_workload(r)))
            results["e peer"].append(at_once.run(fan_out_prompts(r), at_once=True))
            print(
                f"  round {r + 1}: "
                + ", ".join(f"({k}) {v[-1].wall:.2f} s" for k, v in results.items())
            )

        # Determinism: the same prompts, batched (spangraph) and one at a time (a).
        seeded = rounds + 1
        prompts = [question_prompt(document_text(seeded), q) for q in QUESTIONS]
        seeded_a = sequential.run(prompts, at_once=False, seed=42)
        seeded_c = measure(engine, ask_workload(seeded, seed=42))

        # One restore of a saved document state, alone (part of (d)'s prefill times).
        restore_ms = shared.http(
            "/slots/0?action=restore",
            {"filename": engine.kv_store.filename(engine.kv_store.digests()[0])},
        )["timings"]["restore_ms"]

        # The output memo, for scale: the unchanged graph run again.
        memo = SQLiteStore(f"{tmp}/memo.db")
        measure(engine, ask_workload(0), memo)
        memo_run = measure(engine, ask_workload(0), SQLiteStore(f"{tmp}/memo.db"))
        sequential.close()
        at_once.close()
        engine.close()

    report(results, doc_tokens, slots, seeded_a, seeded_c, memo_run, restore_ms)


def report(
    results: dict[str, list[Outcome]],
    doc_tokens: int,
    slots: int,
    seeded_a: Outcome,
    seeded_c: Outcome,
    memo_run: Outcome,
    restore_ms: float,
) -> None:
    labels = {
        "a": "(a) hand-written, sequential, 1 slot",
        "b": f"(b) hand-written, all at once, {slots} slots",
        "c": "(c) spangraph, cold",
        "d": "(d) spangraph, KV warm from disk, new process",
        "e": f"(e) spangraph, {FAN_OUT} prompts, no shared prefix",
        "e peer": f"(e) hand-written, the {FAN_OUT} at once, {slots} slots",
    }
    print()
    print(f"{'contestant':<50}{'best s':>8}{'median s':>10}{'evaluated':>11}{'reused':>9}")
    for key, label in labels.items():
        runs = results[key]
        walls = [o.wall for o in runs]
        print(
            f"{label:<50}{min(walls):>8.2f}{median(walls):>10.2f}"
            f"{median([o.evaluated for o in runs]):>11.0f}{median([o.reused for o in runs]):>9.0f}"
        )
    print("  (tokens: the median per round of prompt tokens evaluated and reused)")

    def ratio(mine: str, theirs: str, target: float | None) -> None:
        pairs = [m.wall / t.wall for m, t in zip(results[mine], results[theirs], strict=True)]
        on_medians = median([o.wall for o in results[mine]]) / median(
            [o.wall for o in results[theirs]]
        )
        best = min(o.wall for o in results[mine]) / min(o.wall for o in results[theirs])
        verdict = ""
        if target is not None:
            verdict = f", target <= {target:g}x: " + ("met" if on_medians <= target else "MISSED")
        print(
            f"  {labels[mine][:3]}/{labels[theirs][:3]} {on_medians:.2f}x on medians, {best:.2f}x "
            f"on bests, per round {min(pairs):.2f}-{max(pairs):.2f}x{verdict}"
        )

    print()
    ratio("c", "a", TARGET_COLD)
    ratio("d", "a", TARGET_WARM)
    print(f"  (e) spangraph / hand-written at once, {FAN_OUT} prompts:", end="")
    ratio("e", "e peer", TARGET_FAN_OUT)
    ratio("b", "a", None)

    # The floor: measured rates, from (a)'s first request (the document's prefill) and
    # from spangraph's cold runs (decoding in batches of up to `slots`).
    first = [o.extra["timings"][0] for o in results["a"]]
    prefill_rate = median([t["prompt_n"] / t["prompt_ms"] for t in first])  # tokens per ms
    cold = results["c"]
    step_ms = median(  # one decoding step, in a batch
        [
            ms / n
            for o in cold
            for ms, n in zip(o.extra["decode_ms"], o.extra["output_tokens"], strict=True)
            if ms > 0 and n > 0
        ]
    )
    question_tokens = (
        sum(t["prompt_n"] for t in results["a"][0].extra["timings"][1:])
        * len(QUESTIONS)
        / (len(QUESTIONS) - 1)
    )  # (a)'s later requests evaluate only their question's tokens
    waves = math.ceil(len(QUESTIONS) / slots)
    questions_ms = question_tokens / prefill_rate + waves * MAX_TOKENS * step_ms
    document_ms = doc_tokens / prefill_rate
    print()
    print(
        f"floor: the document once ({doc_tokens} tokens at {prefill_rate * 1e3:.0f} tokens/s: "
        f"{document_ms / 1e3:.2f} s), then the questions' own {question_tokens:.0f} tokens at "
        f"that rate and {waves} wave(s) of {MAX_TOKENS} decoding steps of {step_ms:.0f} ms "
        f"(a step of a batch, measured in (c)): {questions_ms / 1e3:.2f} s"
    )
    print(
        f"  cold floor {(document_ms + questions_ms) / 1e3:.2f} s "
        f"(c median {median([o.wall for o in cold]):.2f} s); "
        f"warm floor {questions_ms / 1e3:.2f} s "
        f"(d median {median([o.wall for o in results['d']]):.2f} s)"
    )

    warm = results["d"]
    parts = ("queue_ms", "prefill_ms", "decode_ms", "total_ms")
    print()
    print("(d) where the time goes, per generation (ms; medians over rounds and generations):")
    for part in parts:
        values = [v for o in warm for v in o.extra[part]]
        print(f"  {part[:-3]:<8} median {median(values):8.1f}  max {max(values):8.1f}")
    print(
        f"  (prefill includes restoring the document's saved state: one restore alone took "
        f"{restore_ms:.0f} ms; total is the generation's whole protocol, from its start)"
    )
    longest = median([max(o.extra["total_ms"]) for o in warm])
    whole = median([o.wall for o in warm]) * 1e3
    print(
        f"  the longest generation took {longest:.0f} ms of the {whole:.0f} ms run; the rest "
        "(starting the run, rendering, the slots' queue) is spangraph's"
    )

    print()
    print("answers that differ between batched and sequential runs of the same prompts:")
    per_round = [differing(a.answers, c.answers) for a, c in zip(results["a"], cold, strict=True)]
    print(
        f"  (c) against (a): {sum(per_round)} of {len(QUESTIONS) * len(per_round)} "
        f"(per round: {per_round})"
    )
    at_once = [
        differing(a.answers, b.answers) for a, b in zip(results["a"], results["b"], strict=True)
    ]
    print(f"  (b) against (a): {sum(at_once)} of {len(QUESTIONS) * len(at_once)}")
    print(
        f"  with seed=42 on both: {differing(seeded_a.answers, seeded_c.answers)} of "
        f"{len(QUESTIONS)}"
    )
    print()
    print(
        f"memo re-run of the unchanged graph: {memo_run.wall * 1e3:.1f} ms, "
        f"{memo_run.extra['engine_calls']} engine calls, {memo_run.extra['cache_hits']} memo hits"
    )


if __name__ == "__main__":
    arguments = sys.argv[1:]
    count = int(arguments[arguments.index("--rounds") + 1]) if "--rounds" in arguments else 5
    main(count)
