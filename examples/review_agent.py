"""An agent-style loop with two tools over the Apache License 2.0, and a person's review.

The embedded engine answers a question about the licence with two tools:
``search_clause`` (the sentences that mention a keyword) and ``count_words``.
Its answer goes to a review task that asks a person, with ``interrupt()``, to
approve or edit it before it is used to write a one-line notice.

    python examples/review_agent.py                   # runs until the review, then stops
    python examples/review_agent.py --approve         # resumes: the answer is used as it is
    python examples/review_agent.py --edit "TEXT"     # resumes with TEXT instead

Each call is a separate process: the questions, the answers and every
deterministic generation and tool result are kept in ``out/agent-memo.db``,
so the resume serves the done work from the memo (it prints how many engine
calls it made). Each run's LogDAG is drawn to ``out/review_agent-N.svg``.
"""

from __future__ import annotations

import argparse
import pathlib
import re

from pydantic import BaseModel

from spangraph import Component, Span, generate, interrupt, options, run, task, tool
from spangraph.cache import SQLiteStore
from spangraph.engines import LlamaCppEngine

HERE = pathlib.Path(__file__).parent
OUT = pathlib.Path("out")
LICENCE = (HERE / "apache-2.0.txt").read_text()
SENTENCES = [s.strip() for s in re.split(r"(?<=[.;])\s+", " ".join(LICENCE.split())) if s.strip()]


@tool
def search_clause(keyword: str) -> list[str]:
    """Return the sentences of the Apache License 2.0 that mention a keyword (at most 2)."""
    return [s for s in SENTENCES if keyword.lower() in s.lower()][:2]


@tool
def count_words(text: str) -> int:
    """Count the words of a text."""
    return len(text.split())


class Question(Component[str]):
    template = "Question about the Apache License 2.0: {question}"
    question: Span


class Notice(Component[str]):
    template = "Reviewed finding: {finding}\nWrite it as a one-line notice for a README:"
    finding: Span


class Review(BaseModel):
    approved: bool
    text: str = ""


@task
def review(finding: str) -> str:
    answer = interrupt(f"Approve this finding, or edit it: {finding!r}", Review)
    return finding if answer.approved and not answer.text else answer.text


def build() -> Span:
    with options(temperature=0, max_tokens=48):
        finding = generate(
            Question(question="What does the licence say about patents?"),
            tools=[search_clause, count_words],
            tool_choice="search_clause",  # a 270M base model: force the first call
            max_tool_rounds=2,
            label="agent",
        )
        return generate(Notice(finding=review(finding)), label="notice")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--approve", action="store_true")
    parser.add_argument("--edit", metavar="TEXT")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    store = SQLiteStore(OUT / "agent-memo.db")
    engine = LlamaCppEngine()
    try:
        answers = None
        if args.approve or args.edit:
            pending = store.get("spangraph.example:pending")
            if pending is None:
                raise SystemExit("nothing waits for a review: run without options first")
            answer = {"approved": args.edit is None, "text": args.edit or ""}
            answers = {pending["id"]: answer}
        notice = build()
        result = run(notice, engine=engine, cache=store, resume=answers, progress=False)
        print(result.summary(), f"({result.engine_calls} engine calls)")
        for asked in result.interrupts:
            print(f"waiting: {asked.question}")
            print("resume with --approve or --edit TEXT")
            store.put("spangraph.example:pending", {"id": asked.id})
        if result.status == "done":
            print("notice:", notice.value)
        index = len(list(OUT.glob("review_agent-*.svg"))) + 1
        if result.log is not None:
            print("LogDAG:", result.log.render(OUT / f"review_agent-{index}.svg"))
    finally:
        engine.close()
        store.close()


if __name__ == "__main__":
    main()
