"""The demo workflow: questions over one shared, span-cached document.

Four questions about the Apache License 2.0 are asked in parallel over the
same ``CBlock(cache=True)`` document, on the embedded llama.cpp engine;
their answers are combined into a one-line summary. The document is
prefilled once and its KV state reused (KV-prefix cache); outputs are
memoised in ``out/memo.db``, so a second run is served from the span cache.

It prints the answers and a run summary, and writes the run's LogDAG as
``out/trace.svg`` and ``out/trace.otlp.jsonl`` (OTLP/JSON).
"""

from __future__ import annotations

import pathlib
import sys

from pydantic import BaseModel, Field

from spangraph import CBlock, Component, Span, compile, generate, options, run
from spangraph.cache import SQLiteStore
from spangraph.engines import LlamaCppEngine

HERE = pathlib.Path(__file__).parent
OUT = pathlib.Path("out")
#: Each question, by its label: the label names its node in the drawings and the trace
#: (without labels, four "generate(Answer)" nodes would look alike unless content capture
#: is on, when each label carries the first words of its question).
QUESTIONS = {
    "version?": "Which version of the License is this?",
    "patent license?": "Does the License grant a patent license?",
    "warranty?": "Is the Work provided with a warranty?",
    "copy of the License?": "Must a redistribution include a copy of the License?",
}


class Reply(BaseModel):
    """Constrained decoding keeps a small base model's answer short and well-formed."""

    answer: str = Field(min_length=2, max_length=100)


class Answer(Component[Reply]):
    """One question over the document, phrased for a base model."""

    template = "{document}\n\nQuestion: {question}\nAnswer as JSON:"
    document: Span
    question: Span


class Combine(Component[Reply]):
    template = "Facts about a software license:\n{answers}\n\nThe license in one sentence, as JSON:"
    answers: list[Span]


def build() -> Span:
    document = CBlock((HERE / "apache-2.0.txt").read_text(), cache=True)
    with options(temperature=0, max_tokens=60):
        answers = [
            generate(Answer(document=document, question=question), label=label)
            for label, question in QUESTIONS.items()
        ]
        return generate(Combine(answers=answers), label="one-sentence summary")


def main() -> int:
    OUT.mkdir(exist_ok=True)
    summary = build()
    graph = compile(summary)
    print(f"{graph}: {len(graph.generations())} generations over one cached document")
    engine = LlamaCppEngine()
    try:
        result = run(graph, engine=engine, cache=SQLiteStore(OUT / "memo.db"), name="demo")
    finally:
        engine.close()
    answers = summary.action.answers  # type: ignore[union-attr]
    for question, answer in zip(QUESTIONS.values(), answers, strict=True):
        print(f"Q: {question}\nA: {answer.parsed.answer}\n")
    print(f"Summary: {summary.parsed.answer}\n")  # type: ignore[union-attr]
    log = result.log
    assert log is not None
    totals = log.totals()
    print(result.summary())
    print(
        f"generations: {totals.generations}, tokens: {totals.input_tokens} in + "
        f"{totals.output_tokens} out, {totals.cached_tokens} prompt tokens reused from the KV "
        f"cache, {totals.cache_hits} output-memo hits"
    )
    if result.cache_hits == result.generations:
        print(
            "every generation was served from the span cache (run it after deleting out/ "
            "to compute again)"
        )
    path = log.critical_path()
    print(
        f"critical path ({sum(n.duration for n in path):.2f} s): "
        + " -> ".join(n.label for n in path)
    )
    print(
        f"trace written to {log.render(OUT / 'trace.svg')} and "
        f"{log.write_otlp_json(OUT / 'trace.otlp.jsonl')}"
    )
    print(f"graph drawn to {graph.render(OUT / 'graph.svg')}")
    return 0 if result.status == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
