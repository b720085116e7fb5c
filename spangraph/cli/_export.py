"""``spangraph export FILE --endpoint URL``: an OTLP/JSON run log to an OTLP/HTTP collector.

Collectors and viewers that take OTLP over HTTP take protobuf (Phoenix
takes nothing else). Each line of the file is an ``ExportTraceServiceRequest``
in OTLP/JSON; it is read into opentelemetry-proto's message with
protobuf's ``json_format`` and sent as one POST of its binary encoding.
Everything in the line goes across: every resource, scope (with its
version), span, attribute, link and event.

OTLP/JSON differs from protobuf's JSON mapping in one place: trace and span
ids are hex strings, where protobuf's mapping of ``bytes`` is base64. They
are converted before parsing (protobuf would read hex as base64 without
complaint, and send wrong ids).
"""

from __future__ import annotations

import base64
import json
import pathlib
import urllib.error
import urllib.request
from typing import Any

import click

from ._common import count, fail
from ._run import traces_url

#: OTLP/JSON's id fields (hex) and the number of hex digits each has.
ID_DIGITS = {"traceId": 32, "spanId": 16, "parentSpanId": 16}
CONTENT_TYPE = "application/x-protobuf"


@click.command("export", short_help="Send a run's log to an OTLP/HTTP collector.")
@click.argument(
    "path", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path)
)
@click.option(
    "--endpoint",
    required=True,
    metavar="URL",
    help="The collector's OTLP/HTTP traces URL, e.g. http://127.0.0.1:6006/v1/traces "
    "(Phoenix) or http://127.0.0.1:4318 (/v1/traces is added to a URL without a path).",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="K=V",
    help="An HTTP header to send (repeat for several), e.g. 'authorization=Bearer …'.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the collector, per request.",
)
def export_command(
    path: pathlib.Path, endpoint: str, headers: tuple[str, ...], timeout: float
) -> int:
    """Send a run's log (OTLP/JSON lines, from 'spangraph run --trace' or
    Run.log.write_otlp_json) to an OTLP/HTTP collector, as protobuf.

    Exit status: 0 sent, 1 the collector refused or could not be reached, 2 a usage error
    (an unreadable FILE among them).
    """
    url = traces_url(endpoint, "--endpoint")
    sent_headers = {"Content-Type": CONTENT_TYPE, **_headers(headers)}
    requests = read_requests(path)
    spans = 0
    for number, request in requests:
        in_line = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        rejected = _post(url, request.SerializeToString(), sent_headers, timeout, number)
        if rejected:
            fail(f"{url} rejected {rejected} of the {in_line} spans of line {number}")
        spans += in_line
    click.echo(f"sent {count(spans, 'span')} in {count(len(requests), 'request')} to {url}")
    return 0


def read_requests(path: pathlib.Path) -> list[tuple[int, Any]]:
    """Each non-empty line of ``path`` as an ``ExportTraceServiceRequest``, with its line
    number; a usage error naming the line when one is not OTLP/JSON."""
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="FILE") from None
    requests = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = _ids_as_base64(json.loads(line))
            request = json_format.ParseDict(data, ExportTraceServiceRequest())
        except (ValueError, TypeError, json_format.ParseError) as exc:
            raise click.BadParameter(
                f"{path}, line {number}, is not an OTLP/JSON ExportTraceServiceRequest: {exc}",
                param_hint="FILE",
            ) from None
        requests.append((number, request))
    if not requests:
        raise click.BadParameter(f"{path} holds no spans", param_hint="FILE")
    return requests


def _ids_as_base64(value: Any, key: str = "") -> Any:
    """``value`` with every OTLP/JSON id (hex) as protobuf's JSON mapping has bytes (base64)."""
    if isinstance(value, dict):
        return {k: _ids_as_base64(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_ids_as_base64(v) for v in value]
    digits = ID_DIGITS.get(key)
    if digits is None or not isinstance(value, str) or value == "":
        return value
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) * 2 != digits:
        raise ValueError(f"{key} must be {digits} hex digits (OTLP/JSON), got {value!r}")
    return base64.b64encode(raw).decode()


def _headers(pairs: tuple[str, ...]) -> dict[str, str]:
    headers = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{pair!r} is not K=V", param_hint="--header")
        headers[name.strip()] = value.strip()
    return headers


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float, line: int) -> int:
    """POST one request; the number of spans the collector rejected (partial success).
    An error status, or no answer, ends the command (exit status 1)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = response.read()
    except urllib.error.HTTPError as exc:
        fail(f"{url} refused line {line}: HTTP {exc.code} {exc.reason}{_why(exc.read())}")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        fail(f"cannot reach {url}: {reason}")
    try:
        parsed = ExportTraceServiceResponse.FromString(answer)
    except Exception:  # an answer that is not the protocol's: nothing to learn from it
        return 0
    rejected: int = parsed.partial_success.rejected_spans
    if rejected:
        message = parsed.partial_success.error_message
        click.echo(f"{url}: {message or 'spans rejected'}", err=True)
    return rejected


def _why(body: bytes) -> str:
    """The collector's reason: a ``google.rpc.Status`` message (protobuf), else text."""
    if not body:
        return ""
    try:
        from google.rpc.status_pb2 import Status

        message = str(Status.FromString(body).message)
    except Exception:
        message = ""
    if not message:
        message = body.decode("utf-8", "replace").strip()
    return f": {message[:500]}" if message else ""
