"""The live viewer check's inside: Arize Phoenix started, fed a run's spans over
OTLP/HTTP, read back through its API, and stopped.

``test_phoenix.py`` runs this module as a program (``python -m
tests.tracing.phoenix_live WORKDIR [--namespace]``), inside a network namespace
of its own when it can make one (``unshare -rn``): only a loopback interface
there, so Phoenix's gRPC port, which binds every interface, is reachable from
nowhere else. Without one, the HTTP port binds 127.0.0.1 and both ports need
the admin secret.

Phoenix runs from the ``viewer`` extra, in memory (SQLite ``:memory:``), on
127.0.0.1 with ports the kernel picked, with authentication on (a fresh secret
and admin secret per run, the admin secret the bearer token for export and
reads), and with its telemetry off. The spans are read back through Phoenix's REST
API. Two runs of ``workflow.program`` on the
scripted engine are sent (``live-on`` with content capture on, ``live-off``
with it off); what Phoenix holds for their traces is printed as JSON on stdout
for the test to judge. Phoenix is stopped before this program exits, and dies
with it if it is killed.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Longest wait for Phoenix to answer, and then for the spans to be stored (seconds).
START_TIMEOUT = 150.0
STORE_TIMEOUT = 30.0
#: Each run of ``workflow.program``: the run, two generations and a task.
SPANS_PER_RUN = 4


def loopback_up() -> None:
    """Bring ``lo`` up (a new network namespace has it down), as ``ip link set lo up``."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


def free_ports(count: int) -> list[int]:
    """Ports the kernel picks on 127.0.0.1 (held together so that they differ)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def new_secret() -> str:
    """A secret Phoenix accepts: 32 characters or more, a digit and a lowercase letter."""
    return "s1" + secrets.token_hex(24)


def die_with_parent() -> None:
    """In the child, before it runs Phoenix: the kernel kills it when this program dies."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


@contextmanager
def phoenix(workdir: Path) -> Iterator[tuple[str, str, int]]:
    """A Phoenix server for the block: its base URL, admin secret and process id."""
    http_port, grpc_port = free_ports(2)
    admin = new_secret()
    env = {
        **os.environ,
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(http_port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_WORKING_DIR": str(workdir),
        "PHOENIX_SQL_DATABASE_URL": "sqlite:///:memory:",
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ENABLE_AUTH": "true",
        "PHOENIX_SECRET": new_secret(),
        "PHOENIX_ADMIN_SECRET": admin,
    }
    log = (workdir / "phoenix.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "phoenix.server.main", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    try:
        yield f"http://127.0.0.1:{http_port}", admin, server.pid
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def wait_until_up(base_url: str, workdir: Path) -> float:
    """Seconds until Phoenix answered its health check."""
    started = time.monotonic()
    while time.monotonic() - started < START_TIMEOUT:
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.25)
    log = (workdir / "phoenix.log").read_text(errors="replace")[-3000:]
    raise SystemExit(f"Phoenix did not answer within {START_TIMEOUT:.0f} s:\n{log}")


def unauthenticated_status(base_url: str) -> int:
    """What Phoenix answers a read that carries no token."""
    try:
        with urllib.request.urlopen(f"{base_url}/v1/projects", timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)


def warm_up() -> None:
    """Import what sending and reading back need, while Phoenix starts (its start is
    most of this check's time; the two overlap on two cores)."""
    import spangraph.engines  # noqa: F401

    from . import workflow  # noqa: F401


def exporting_provider(base_url: str, admin: str) -> Any:
    """An SDK tracer provider, set globally, that exports to Phoenix over OTLP/HTTP
    (made while Phoenix starts: nothing is sent yet)."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = OTLPSpanExporter(
        endpoint=f"{base_url}/v1/traces", headers={"authorization": f"Bearer {admin}"}
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "spangraph-live"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def send_runs(provider: Any) -> dict[str, str]:
    """Run the program twice, capture on then off; the trace id of each run by its name,
    once the provider has exported every span."""
    import spangraph.tracing
    from spangraph import run
    from spangraph.engines import ScriptedEngine

    from .workflow import program, scripted_reply

    traces: dict[str, str] = {}
    for name, capture in (("live-on", "SPAN_ONLY"), ("live-off", None)):
        spangraph.tracing.capture_content = capture
        result = run(
            *program(max_tokens=8), engine=ScriptedEngine(scripted_reply), progress=False, name=name
        )
        assert result.log is not None and result.log.run is not None
        traces[name] = result.log.run.trace_id
    assert provider.force_flush(timeout_millis=20_000), "the spans were not all exported"
    provider.shutdown()
    return traces


def flat(attributes: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Phoenix's attributes (nested by dots) as dotted names."""
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if isinstance(value, Mapping):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def get_spans(base_url: str, admin: str, trace_ids: list[str]) -> list[dict[str, Any]]:
    """The spans of these traces, through Phoenix's REST API (``GET
    /v1/projects/{project}/spans``, what ``phoenix.client``'s ``spans.get_spans``
    calls: importing that client costs as much CPU as Phoenix's own start)."""
    spans: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query: list[tuple[str, str]] = [("trace_id", t) for t in trace_ids]
        query.append(("limit", "1000"))
        if cursor:
            query.append(("cursor", cursor))
        request = urllib.request.Request(
            f"{base_url}/v1/projects/default/spans?{urllib.parse.urlencode(query)}",
            headers={"Authorization": f"Bearer {admin}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            payload = json.load(response)
        spans.extend(payload["data"])
        cursor = payload.get("next_cursor")
        if not cursor or not payload["data"]:
            return spans


def read_back(base_url: str, admin: str, traces: dict[str, str]) -> dict[str, list[Any]]:
    """The spans Phoenix holds for each trace, once it holds them all."""
    started = time.monotonic()
    while True:
        spans = get_spans(base_url, admin, list(traces.values()))
        if len(spans) >= SPANS_PER_RUN * len(traces):
            break
        if time.monotonic() - started > STORE_TIMEOUT:
            held = f"Phoenix holds {len(spans)} of the runs' spans"
            raise SystemExit(f"{held} after {STORE_TIMEOUT:.0f} s")
        time.sleep(0.25)
    by_run: dict[str, list[Any]] = {name: [] for name in traces}
    names = {trace_id: name for name, trace_id in traces.items()}
    for span in spans:
        by_run[names[span["context"]["trace_id"]]].append(
            {
                "name": span["name"],
                "span_kind": span["span_kind"],
                "parent_id": span.get("parent_id"),
                "status_code": span["status_code"],
                "attributes": flat(span.get("attributes") or {}),
            }
        )
    return by_run


def main() -> None:
    workdir = Path(sys.argv[1])
    namespace = "--namespace" in sys.argv[2:]
    if namespace:
        loopback_up()
    with phoenix(workdir) as (base_url, admin, pid):
        provider = exporting_provider(base_url, admin)
        warm_up()
        startup = wait_until_up(base_url, workdir)
        refused = unauthenticated_status(base_url)
        sent = time.monotonic()
        traces = send_runs(provider)
        runs = read_back(base_url, admin, traces)
        checked = time.monotonic() - sent
    report = {
        "namespace": namespace,
        "phoenix_pid": pid,
        "startup": startup,
        "checked": checked,
        "refused": refused,
        "runs": runs,
    }
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
