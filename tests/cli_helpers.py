"""Running the installed ``spangraph`` console script in a subprocess, as a user would."""

from __future__ import annotations

import http.server
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The console script pip installed beside the interpreter running the tests.
SCRIPT = pathlib.Path(sys.executable).parent / "spangraph"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def cli_env(home: pathlib.Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the script: its own SPANGRAPH_HOME, no engine setting, no
    content capture, unless ``extra`` says otherwise."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPANGRAPH_", "OTEL_"))}
    env["SPANGRAPH_HOME"] = str(home)
    env.update(extra or {})
    return env


def spangraph(
    *args: str | os.PathLike[str],
    home: pathlib.Path,
    env: Mapping[str, str] | None = None,
    stdin: str = "",
    cwd: pathlib.Path | None = None,
    timeout: float = 120,
) -> Result:
    """Run ``spangraph ARGS...`` and wait for it."""
    assert SCRIPT.is_file(), f"the console script is not installed at {SCRIPT}"
    done = subprocess.run(
        [str(SCRIPT), *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        env=cli_env(home, env),
        cwd=cwd,
        timeout=timeout,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def start(
    *args: str | os.PathLike[str], home: pathlib.Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ``spangraph ARGS...``; SIGINT is made to act as in a terminal (a shell that
    started the tests in the background would have the child inherit it ignored)."""
    return subprocess.Popen(
        [str(SCRIPT), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(home, env),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def write(path: pathlib.Path, source: str) -> pathlib.Path:
    path.write_text(textwrap.dedent(source).lstrip())
    return path


def assert_usage_error(result: Result) -> None:
    """Exit status 2, a usage line, an error, and no traceback."""
    assert result.code == 2, result
    assert "Usage: spangraph" in result.err, result
    assert "Error:" in result.err, result
    assert "Traceback" not in result.err + result.out, result


@dataclass(frozen=True)
class Received:
    """One request the collector received: its path, headers and decoded body."""

    path: str
    headers: dict[str, str]
    request: Any  # ExportTraceServiceRequest

    def spans(self) -> list[Any]:
        return [
            span
            for resource in self.request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]


class Collector:
    """An OTLP/HTTP trace collector on 127.0.0.1 (an ephemeral port), in a thread: each
    POST body is decoded with opentelemetry-proto and kept in ``received``; the answer
    is ``status`` with ``body`` (default: an empty ``ExportTraceServiceResponse``)."""

    def __init__(self, status: int = 200, body: bytes | None = None) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        self.received: list[Received] = []
        answer = body if body is not None else ExportTraceServiceResponse().SerializeToString()
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                request = ExportTraceServiceRequest.FromString(self.rfile.read(length))
                headers = {k.lower(): v for k, v in self.headers.items()}
                received.append(Received(self.path, headers, request))
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Collector:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
