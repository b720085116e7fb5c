"""OpenAIEngine against servers that answer, but not with a completion.

These are faults, so the server here is a small real HTTP server on 127.0.0.1
that answers what a misconfigured proxy or a wrong ``base_url`` would: an HTML
page, JSON of another shape, a body that is not JSON. (The engine's normal
behaviour is tested against a real llama.cpp server in ``test_openai.py``.)
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import anyio
import pytest

from spangraph import CBlock, NodeFailedError, RetryPolicy, arun, generate, run
from spangraph.engines import EngineResponseError, OpenAIEngine, TransientEngineError

ANSWERS = {
    "html": (200, "text/html", b"<html><body>Please log in</body></html>"),
    "other json": (200, "application/json", json.dumps({"object": "error"}).encode()),
    "no choices": (
        200,
        "application/json",
        json.dumps(
            {"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": []}
        ).encode(),
    ),
    "not json": (200, "application/json", b"{not json"),
}


class _Handler(http.server.BaseHTTPRequestHandler):
    answer: tuple[int, str, bytes] = (200, "text/plain", b"")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        status, kind, body = self.server.answer  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.mark.parametrize("mode", ["chat", "completion"])
@pytest.mark.parametrize("answer", list(ANSWERS))
def test_a_body_that_is_not_a_completion_is_an_engine_response_error(
    server: http.server.ThreadingHTTPServer, answer: str, mode: str
) -> None:
    server.answer = ANSWERS[answer]  # type: ignore[attr-defined]
    engine = OpenAIEngine(f"http://127.0.0.1:{server.server_address[1]}/v1", mode=mode)  # type: ignore[arg-type]
    thunk = generate(CBlock("hello"))
    with pytest.raises(NodeFailedError) as caught:
        run(thunk, engine=engine, progress=False)
    error = caught.value.__cause__
    assert isinstance(error, EngineResponseError)
    message = str(error)
    assert "answered 200" in message and ANSWERS[answer][1] in message
    assert ANSWERS[answer][2].decode()[:12] in message  # an excerpt of the body
    assert caught.value.path == "generate(CBlock)"
    anyio.run(engine.aclose)


def test_a_server_error_page_says_what_it_was(server: http.server.ThreadingHTTPServer) -> None:
    server.answer = (502, "text/html", b"<html>Bad Gateway</html>")  # type: ignore[attr-defined]
    engine = OpenAIEngine(f"http://127.0.0.1:{server.server_address[1]}/v1")
    thunk = generate(CBlock("hello"))
    with pytest.raises(NodeFailedError) as caught:
        run(thunk, engine=engine, progress=False, retry=RetryPolicy(attempts=1))
    error = caught.value.__cause__
    assert isinstance(error, TransientEngineError)
    assert "answered 502" in str(error) and "Bad Gateway" in str(error)
    anyio.run(engine.aclose)


@pytest.mark.parametrize("answer", ["html", "other json"])
def test_a_stream_that_is_not_one_is_an_engine_error_too(
    server: http.server.ThreadingHTTPServer, answer: str
) -> None:
    server.answer = ANSWERS[answer]  # type: ignore[attr-defined]
    engine = OpenAIEngine(f"http://127.0.0.1:{server.server_address[1]}/v1")
    thunk = generate(CBlock("hello"))
    caught: list[BaseException] = []

    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def go() -> None:
                try:
                    await arun(thunk, engine=engine, progress=False)
                except NodeFailedError as exc:
                    caught.append(exc)

            tg.start_soon(go)
            with pytest.raises(Exception):  # noqa: B017 - the stream re-raises the engine's error
                async for _ in thunk.stream():
                    pass
        await engine.aclose()

    anyio.run(main)
    (error,) = caught
    assert error.__cause__ is not None
    assert isinstance(error.__cause__, EngineResponseError)
