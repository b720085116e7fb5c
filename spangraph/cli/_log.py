"""``spangraph log FILE``: a run's log (OTLP/JSON lines), summarised, listed, drawn."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from typing import Any

import click

from ..nodes._internal import structural_part
from ..tracing import LogDAG, LogNode
from ..tracing._internal import semconv as sc
from ._common import fail

FORMATS = ("svg", "png", "pdf", "dot")
#: How the prompt and output get onto spans, for the message when they are not there.
CAPTURE_HINT = (
    "not captured: run with OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=SPAN_ONLY to "
    "record them"
)


@click.command("log", short_help="Summarise, list or draw a run's log (OTLP/JSON).")
@click.argument(
    "path", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path)
)
@click.option("--nodes", is_flag=True, help="List every node (one span each) in a table.")
@click.option("--failed", is_flag=True, help="List the failed nodes with their errors.")
@click.option(
    "--node",
    "wanted",
    metavar="ID|LABEL",
    help="Show one node: a span id, a node id (or its first 6+ digits) or a label (with or "
    "without its hint); its "
    "attributes, error, and prompt and output when they were captured.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    help="Draw the LogDAG in this format (default: OUT's suffix). dot needs no graphviz.",
)
@click.option(
    "-o",
    "--output",
    "out",
    metavar="OUT",
    type=click.Path(dir_okay=False, path_type=pathlib.Path),
    help="Where to draw it.",
)
@click.option("--render", "render", hidden=True, type=click.Path(path_type=pathlib.Path))
def log_command(
    path: pathlib.Path,
    nodes: bool,
    failed: bool,
    wanted: str | None,
    fmt: str | None,
    out: pathlib.Path | None,
    render: pathlib.Path | None,
) -> int:
    """Summarise a run's log: an OTLP/JSON lines file ('spangraph run --trace',
    Run.log.write_otlp_json). Prints its totals and critical path.

    Exit status: 0, 1 when a drawing could not be made, 2 a usage error (an unreadable
    FILE among them).
    """
    out = out if out is not None else render  # --render OUT: the old spelling of -o OUT
    fmt = _format(fmt, out)
    dag = read(path)
    shown = _find(dag, wanted) if wanted is not None else []
    _summary(dag)
    if nodes:
        click.echo()
        _table(list(dag))
    if failed:
        click.echo()
        _failures(dag)
    for node in shown:
        click.echo()
        _details(node)
    if out is not None and fmt is not None:
        return _draw(dag, out, fmt)
    return 0


def read(path: pathlib.Path) -> LogDAG:
    """The LogDAG in ``path``; a usage error when it is not an OTLP/JSON log."""
    try:
        return LogDAG.from_otlp_json(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="FILE") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise click.BadParameter(
            f"{path} is not an OTLP/JSON log (one ExportTraceServiceRequest per line): "
            f"{type(exc).__name__}: {exc}",
            param_hint="FILE",
        ) from None


def _format(fmt: str | None, out: pathlib.Path | None) -> str | None:
    if out is None:
        if fmt is not None:
            raise click.UsageError("--format needs -o OUT: where to draw it")
        return None
    if fmt is not None:
        return fmt
    suffix = out.suffix.lstrip(".").lower()
    if suffix not in FORMATS:
        raise click.BadParameter(
            f"cannot tell the format from {out.name!r}: give --format {'|'.join(FORMATS)} "
            "or an OUT ending in ." + ", .".join(FORMATS),
            param_hint="-o",
        )
    return suffix


def _summary(dag: LogDAG) -> None:
    t = dag.totals()
    run = dag.run
    if run is not None:
        status = run.attributes.get(sc.NODE_STATUS, run.status.lower())
        click.echo(f"run {run.name!r}: {status}, {max(0, run.end - run.start) / 1e9:.3f} s")
    click.echo(f"{len(dag)} nodes, {len(dag.edges)} edges")
    click.echo(
        f"generations {t.generations} (attempts {t.attempts}), tasks {t.tasks}, "
        f"tokens {t.input_tokens} in / {t.output_tokens} out, {t.cached_tokens} cached, "
        f"{t.cache_hits} cache hits, {t.failures} failed, {t.skipped} skipped"
    )
    path = dag.critical_path()
    click.echo(
        f"critical path ({sum(n.duration for n in path):.3f} s): "
        + (" -> ".join(n.label for n in path) or "(no nodes)")
    )


def _table(nodes: Sequence[LogNode]) -> None:
    header = ("SPAN", "NODE", "KIND", "STATUS", "TRY", "SECONDS", "IN", "OUT", "CACHE", "LABEL")
    rows = [
        (
            n.key,
            n.node_id[:12],
            n.kind,
            n.status,
            str(n.attempt),
            f"{n.duration:.3f}",
            str(n.input_tokens),
            str(n.output_tokens),
            "hit" if n.cache_hit else (f"{n.cached_tokens} kv" if n.cached_tokens else "-"),
            n.label,
        )
        for n in sorted(nodes, key=lambda n: (n.start, n.end))
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]))


def _failures(dag: LogDAG) -> None:
    failed = dag.filter(status="failed")
    if not failed:
        click.echo("no failed nodes")
    for node in failed:
        click.echo(f"{node.key}  {node.label}  at {node.path or '(no path)'}")
        click.echo(f"  {_error(node)}")


def _find(dag: LogDAG, wanted: str) -> list[LogNode]:
    """The spans of the one node ``wanted`` names (every attempt of it); a usage error
    naming the choices when it names several nodes, or naming none."""
    text = wanted.strip().lower()
    found = [
        n
        for n in dag
        if n.key == text
        or n.node_id == text
        or (len(text) >= 6 and n.node_id.startswith(text))
        or n.label == wanted
        or structural_part(n.label) == wanted
    ]
    if not found:
        raise click.BadParameter(
            f"no node has the span id, node id or label {wanted!r} (see them with --nodes)",
            param_hint="--node",
        )
    if len({n.node_id for n in found}) > 1:
        choices = "; ".join(f"{n.key} ({n.path or n.label})" for n in found[:10])
        more = f" and {len(found) - 10} more" if len(found) > 10 else ""
        raise click.BadParameter(
            f"{wanted!r} names {len(found)} nodes: give one's span id: {choices}{more}",
            param_hint="--node",
        )
    return sorted(found, key=lambda n: n.attempt)


def _details(node: LogNode) -> None:
    fields: list[tuple[str, Any]] = [
        ("span", node.key),
        ("node", node.node_id),
        ("label", node.label),
        ("kind", node.kind),
        ("status", node.status),
        ("attempt", node.attempt),
        ("path", node.path),
        ("seconds", f"{node.duration:.3f}"),
        ("model", node.model),
        (
            "tokens",
            f"{node.input_tokens} in / {node.output_tokens} out, {node.cached_tokens} cached",
        ),
        ("cache hit", "yes" if node.cache_hit else "no"),
        ("error", _error(node) if node.status == "failed" or node.error else None),
    ]
    for name, value in fields:
        if value not in (None, ""):
            click.echo(f"{name + ':':<11}{value}")
    click.echo("attributes:")
    for key in sorted(node.attributes):
        click.echo(f"  {key} = {_shown(node.attributes[key])}")
    if node.kind == "generation":
        for part, heading in (("input", "prompt"), ("output", "output")):
            text = node.content.get(part)
            shown = f"\n{_indented(_messages(text))}" if text else f" {CAPTURE_HINT}"
            click.echo(f"{heading}:{shown}")


def _error(node: LogNode) -> str:
    """The node's error as ``Type: message`` (the message is on spans only when content
    capture was on; its type always is)."""
    kind = node.attributes.get(sc.ERROR_TYPE)
    message = node.error
    if not message:
        return f"{kind} (its message was not captured)" if kind else "(no error recorded)"
    if kind and not message.startswith(str(kind)):
        return f"{kind}: {message}"
    return message


def _shown(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list) else str(value)


def _messages(text: str) -> str:
    """GenAI messages (``gen_ai.input.messages``: JSON, a list of ``{role, parts}``) as
    ``role: text`` lines; anything else as it is."""
    try:
        messages = json.loads(text)
        lines = []
        for message in messages:
            parts = message.get("parts", [])
            content = "".join(str(p.get("content", "")) for p in parts if p.get("type") == "text")
            lines.append(f"{message.get('role', '?')}: {content}")
    except (ValueError, TypeError, AttributeError):
        return text
    return "\n".join(lines)


def _indented(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _draw(dag: LogDAG, out: pathlib.Path, fmt: str) -> int:
    """Write the drawing (``LogDAG.render``): DOT source needs no graphviz; svg, png and
    pdf need its ``dot`` program, and without it the DOT source is written beside OUT
    instead (exit 1)."""
    try:
        written = dag.render(out, format=fmt)
    except OSError as exc:
        fail(f"cannot write {out}: {exc}")
    if written != out:
        click.echo(
            f"error: graphviz's dot program is not installed, so no {fmt} was drawn; "
            f"the DOT source is in {written}. Install graphviz (Debian/Ubuntu: apt-get "
            "install graphviz; macOS: brew install graphviz), or use --format dot",
            err=True,
        )
        return 1
    click.echo(f"drawn to {written}")
    return 0
