"""Structured output on the real embedded engine: flexible against compact JSON.

llama.cpp's llguidance decodes a JSON schema with any run of whitespace
allowed between tokens; a small base model that starts to pretty-print can
fill ``max_tokens`` with ``"\\n    "`` and the output does not parse.
``LlamaCppEngine`` sends the schema with llguidance's compact option
(``spangraph/engines/_schema.py``). This prints, for four schemas (flat,
nested, list, string-heavy) and each way of decoding, over the same
prompts and seeds at the default temperature and ``max_tokens`` (256):
outputs that parse, outputs cut off at ``max_tokens``, outputs with
whitespace outside strings, and the tokens generated (mean and total).
The same through ``OpenAIEngine`` in chat mode against the same server:
``response_format`` (which llama.cpp turns into GBNF, whose whitespace rule
allows up to two newlines and 20 spaces or tabs per gap) against
``json_mode="llguidance"``.

    python benchmarks/structured_output.py [samples per hint, default 4]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from typing import Any

from pydantic import BaseModel

from spangraph import Component, Span, generate, run
from spangraph.engines import Completion, InferenceEngine, LlamaCppEngine, OpenAIEngine, Request


class City(BaseModel):
    name: str
    country: str


class Address(BaseModel):
    city: str
    country: str


class Person(BaseModel):
    name: str
    age: int
    address: Address


class Review(BaseModel):
    title: str
    summary: str
    pros: str
    cons: str


class AskCity(Component[City]):
    template = "{q}"
    q: Span


class AskPerson(Component[Person]):
    template = "{q}"
    q: Span


class AskList(Component[list[str]]):
    template = "{q}"
    q: Span


class AskReview(Component[Review]):
    template = "{q}"
    q: Span


CASES: dict[str, tuple[type[Component[Any]], list[str]]] = {
    "flat (City)": (
        AskCity,
        ["The capital of France", "City:", "A city:", "Describe Paris.", "Rome", "JSON:"],
    ),
    "nested (Person)": (
        AskPerson,
        ["A person:", "Someone from Lyon.", "JSON:", "Ada Lovelace", "Who?", "Employee:"],
    ),
    "list (list[str])": (
        AskList,
        ["Three capitals:", "Colours:", "JSON list:", "Fruits", "Planets:", "Tags:"],
    ),
    "string-heavy (Review)": (
        AskReview,
        ["A review of a phone:", "Review:", "JSON:", "The film was", "Hotel stay.", "Book:"],
    ),
}


class Measured(LlamaCppEngine):
    """The embedded engine, noting each completion's token count and finish reason;
    ``flexible`` sends the schema as it is (llguidance's default whitespace)."""

    def __init__(self, *args: Any, flexible: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flexible = flexible
        self.seen: list[tuple[int, str | None, str]] = []

    def _payload(self, request: Request) -> dict[str, Any]:
        payload = super()._payload(request)
        if self.flexible and request.schema is not None:
            payload["json_schema"] = request.schema
        return payload

    async def _complete(self, request: Request) -> Completion:
        completion = await super()._complete(request)
        self.seen.append(
            (completion.usage.output_tokens, completion.finish_reason, completion.text)
        )
        return completion


class MeasuredChat(OpenAIEngine):
    """``OpenAIEngine`` in chat mode on the embedded server, noting each completion."""

    def __init__(self, server: LlamaCppEngine, json_mode: Any) -> None:
        shared = server.shared()
        super().__init__(
            f"{shared.address}/v1", api_key=shared._key.reveal(), mode="chat", json_mode=json_mode
        )
        self.seen: list[tuple[int, str | None, str]] = []

    async def _complete(self, request: Request) -> Completion:
        completion = await super()._complete(request)
        self.seen.append(
            (completion.usage.output_tokens, completion.finish_reason, completion.text)
        )
        return completion


def whitespace_outside_strings(text: str) -> bool:
    in_string = escape = False
    for ch in text:
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in " \t\r\n":
            return True
    return False


def measure(engine: Any, component: type[Component[Any]], hints: list[str], seeds: int) -> str:
    engine.seen.clear()
    thunks = [
        generate(component(q=hint), options={"seed": seed})
        for hint in hints
        for seed in range(seeds)
    ]
    run(*thunks, engine=engine, on_error="continue", progress=False)
    parsed = sum(t.error is None for t in thunks)
    tokens = [n for n, _, _ in engine.seen]
    cut = sum(reason == "length" for _, reason, _ in engine.seen)
    spaced = sum(whitespace_outside_strings(text) for _, _, text in engine.seen)
    return (
        f"{parsed:3d}/{len(thunks)} parse  {cut:3d} cut off  {spaced:3d} spaced  "
        f"{statistics.mean(tokens):6.1f} tokens mean  {sum(tokens):6d} total"
    )


def main() -> None:
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    with tempfile.TemporaryDirectory() as kv:
        server = Measured(kv_dir=kv, flexible=False, kv_cache=False)
        engines: dict[str, InferenceEngine] = {
            "flexible (before)": Measured(kv_dir=kv, flexible=True, kv_cache=False),
            "compact (after)": server,
            "chat, response_format": MeasuredChat(server, "schema"),
            "chat, llguidance": MeasuredChat(server, "llguidance"),
        }
        results: dict[str, dict[str, str]] = {}
        for case, (component, hints) in CASES.items():
            for name, engine in engines.items():
                results.setdefault(case, {})[name] = measure(engine, component, hints, seeds)
                print(f"{case:24s} {name:22s} {results[case][name]}", flush=True)
        for engine in engines.values():
            engine.close()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
