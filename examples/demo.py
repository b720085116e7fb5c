"""The demo workflow: questions over one shared, span-cached document.

For now this compiles the workflow's graph, prints it, and draws it to
out/graph.svg; the run itself arrives with the engines.
"""

from __future__ import annotations

import pathlib

from spangraph import CBlock, Component, Span, compile, generate
from spangraph.graph._render import render_file

HERE = pathlib.Path(__file__).parent
QUESTIONS = [
    "Which version of the License is this?",
    "What does the License say about trademarks?",
    "Is the Work provided with a warranty?",
    "What must a redistribution of the Work include?",
]


class Answer(Component[str]):
    """One question over the document (a base-model friendly prompt)."""

    template = "{document}\n\nQuestion: {question}\nAnswer (one sentence):"
    document: Span
    question: Span


class Combine(Component[str]):
    template = "Questions and answers about a license:\n{answers}\n\nSummary in one sentence:"
    answers: list[Span]


def build() -> Span:
    document = CBlock((HERE / "apache-2.0.txt").read_text(), cache=True)
    answers = [generate(Answer(document=document, question=q)) for q in QUESTIONS]
    return generate(Combine(answers=answers))


def main() -> None:
    graph = compile(build())
    print(graph)
    for node_id in graph.topological_order():
        info = graph[node_id]
        print(f"  {info.kind:<10} {node_id[:12]}  {info.label}")
    path = render_file(graph.to_graphviz(), "out/graph.svg")
    print(f"graph written to {path}")


if __name__ == "__main__":
    main()
