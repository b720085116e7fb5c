"""The embedded engine's HTTP server: only this process may use it.

It listens on 127.0.0.1 for the engine's own slot and tokenize calls (and for
``openai_engine()``). Every request needs the server's random key, and no web
origin is allowed to read an answer. The key is in no repr, message, log
record, span or file.
"""

from __future__ import annotations

import json
import logging
import pathlib
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel, Field

from spangraph import CBlock, Component, Span, generate, run
from spangraph.cache import SQLiteStore
from spangraph.engines import EngineRequestError, LlamaCppEngine
from spangraph.tracing import _provider as provider_module
from tests.conftest import DOCUMENT
from tests.scan import files_containing

pytestmark = pytest.mark.real

EVIL = "http://evil.example"
#: Endpoints that run the model or touch slot files, and a body each accepts.
GUARDED: list[tuple[str, str, Mapping[str, Any] | None]] = [
    ("POST", "/completion", {"prompt": "Hi", "n_predict": 1}),
    ("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 1}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}),
    ("POST", "/slots/0?action=save", {"filename": "intruder.kv"}),
    ("POST", "/slots/0?action=erase", {}),
    ("POST", "/tokenize", {"content": "Hi"}),
    ("GET", "/slots", None),
    ("GET", "/v1/models", None),
]


def _call(
    address: str,
    method: str,
    path: str,
    body: Mapping[str, Any] | None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        address + path,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", **(headers or {})},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _cors(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("access-control-")}


def test_requests_without_the_key_are_refused(llama: LlamaCppEngine) -> None:
    shared = llama.shared()
    for method, path, body in GUARDED:
        for headers in ({}, {"Authorization": "Bearer not-the-key"}, {"Origin": EVIL}):
            status, _, answer = _call(shared.address, method, path, body, headers)
            assert status == 401, (method, path, headers, answer[:200])
    assert not (pathlib.Path(llama.config.slot_save_path) / "intruder.kv").exists()


def test_the_engine_s_own_calls_carry_the_key(llama: LlamaCppEngine) -> None:
    shared = llama.shared()
    status, _, answer = _call(
        shared.address, "POST", "/completion", {"prompt": "Hi", "n_predict": 1}, shared.headers()
    )
    assert status == 200 and json.loads(answer)["content"] is not None
    assert shared.http("/tokenize", {"content": "Hi"})["tokens"]
    with pytest.raises(EngineRequestError, match="400"):  # authorised, and a bad name
        shared.http("/slots/0?action=restore", {"filename": "../escape.kv"})


def test_no_web_origin_may_read_an_answer(llama: LlamaCppEngine) -> None:
    shared = llama.shared()
    for method, path, body in GUARDED[:2]:
        for headers in ({"Origin": EVIL}, {"Origin": EVIL, **shared.headers()}):
            _, answer_headers, _ = _call(shared.address, method, path, body, headers)
            cors = _cors(answer_headers)
            assert cors.get("access-control-allow-origin", "") in ("", "null"), cors
            assert cors.get("access-control-allow-credentials", "false") == "false"
        preflight = {"Origin": EVIL, "Access-Control-Request-Method": "POST"}
        _, answer_headers, _ = _call(shared.address, "OPTIONS", path, None, preflight)
        cors = _cors(answer_headers)
        assert cors.get("access-control-allow-origin", "") in ("", "null"), cors
        assert cors.get("access-control-allow-credentials", "false") == "false"
        assert "POST" not in cors.get("access-control-allow-methods", "")


class City(BaseModel):
    name: str = Field(max_length=20)
    country: str = Field(max_length=20)


class AskCity(Component[City]):
    template = "Name a city and its country as JSON.\n{hint}\n"
    hint: Span


class Ask(Component[str]):
    template = "{document}\n\nQuestion: {question}\nAnswer:"
    document: Span
    question: Span


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(provider_module.trace, "get_tracer_provider", lambda: provider)
    yield memory
    provider.shutdown()


def test_the_key_never_appears(
    llama: LlamaCppEngine,
    tmp_path: pathlib.Path,
    exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    kv_dir = tmp_path / "kv"  # its own slot folder: its own server, and its own key
    engine = LlamaCppEngine(
        llama.model_path, sha256=llama.model_sha256, home=llama.home, kv_dir=kv_dir
    )
    shared = engine.shared()
    keys = [shared._key.reveal(), llama.shared()._key.reveal()]
    assert len(set(keys)) == 2 and all(len(key) >= 40 for key in keys)
    store = SQLiteStore(tmp_path / "memo.db")
    failures: list[BaseException] = []
    texts: list[str] = []
    for on in (engine, engine.openai_engine(), engine.openai_engine(mode="chat")):
        document = CBlock(DOCUMENT[:1500], cache=True)
        short = {"max_tokens": 8, "temperature": 0}
        thunks = [
            generate(Ask(document=document, question="Who is a Licensor?"), options=short),
            generate(AskCity(hint="In Europe."), options={"max_tokens": 40}),
            generate(CBlock("x"), options={**short, "extra:n_probs": "many"}),  # answered 400
            generate(CBlock("word " * 6000), options=short),  # over the slot: refused
        ]
        result = run(*thunks, engine=on, cache=store, on_error="continue", progress=False)
        result.log.write_otlp_json(tmp_path / f"trace-{on.kind}.jsonl")
        failures += [t.error for t in thunks if t.error is not None]
        texts += [repr(on), str(on), repr(vars(on)), repr(result), repr(result.log.nodes)]
    try:
        shared.http("/slots/0?action=restore", {"filename": "missing.kv"})
    except EngineRequestError as exc:
        failures.append(exc)
    assert len(failures) == 7 and any(kv_dir.glob("*.kv"))
    texts += [repr(engine), repr(shared), repr(vars(shared)), repr(vars(engine))]
    engine.close()
    texts += [f"{error!s} {error!r} {error.__cause__!r}" for error in failures]
    texts += [record.getMessage() for record in caplog.records]
    texts += [repr(record.__dict__) for record in caplog.records]
    for span in exporter.get_finished_spans():
        texts.append(json.dumps(dict(span.attributes or {}), default=str))
        texts.append(span.status.description or "")
        texts += [json.dumps(dict(e.attributes or {}), default=str) for e in span.events]
    captured = capfd.readouterr()
    texts += [captured.out, captured.err]
    assert caplog.records and exporter.get_finished_spans()  # there was something to look at
    assert not [text for text in texts for key in keys if key in text]
    written = [
        path
        for folder in (tmp_path, llama.home)
        for path in folder.rglob("*")
        if path.is_file() and path.suffix != ".gguf"
    ]
    assert len(written) >= 4
    # Read from another process: this one holds the live KV index under llama.home.
    assert files_containing(written, keys) == []
