"""``LogDAG``: a run's log as a DAG, built from its OpenTelemetry spans.

Nodes are executed nodes (one per span: each attempt of a generation or
task, each sampler); edges come from span links (``spangraph.edge.kind``:
part, dynamic, retry, sample). The same structure is rebuilt from SDK
``ReadableSpan``s (``from_spans``) or from an OTLP/JSON file
(``from_otlp_json``), and written back with ``write_otlp_json``.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import _semconv as sc

# OTLP enums (opentelemetry-proto): SpanKind is the SDK's value + 1; status codes match.
_KIND_TO_OTLP = {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
_OTLP_TO_KIND = {v: k for k, v in _KIND_TO_OTLP.items()}
_STATUS_TO_OTLP = {"UNSET": 0, "OK": 1, "ERROR": 2}
_OTLP_TO_STATUS = {v: k for k, v in _STATUS_TO_OTLP.items()}


@dataclass(frozen=True)
class SpanRecord:
    """A span, independent of where it came from (SDK object or OTLP/JSON)."""

    name: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_id: str | None
    kind: str
    start: int  # ns since the epoch
    end: int
    attributes: Mapping[str, Any]
    links: tuple[tuple[str, str, Mapping[str, Any]], ...] = ()
    status: str = "UNSET"
    status_message: str = ""
    scope: str = "spangraph"
    resource: Mapping[str, Any] = field(default_factory=dict)
    #: The instrumentation scope's version ("" when it has none).
    scope_version: str = ""

    @staticmethod
    def from_readable(span: Any) -> SpanRecord:
        context = span.get_span_context()
        parent = span.parent
        links = tuple(
            (
                f"{link.context.trace_id:032x}",
                f"{link.context.span_id:016x}",
                dict(link.attributes or {}),
            )
            for link in span.links
        )
        scope = getattr(span, "instrumentation_scope", None)
        return SpanRecord(
            name=span.name,
            trace_id=f"{context.trace_id:032x}",
            span_id=f"{context.span_id:016x}",
            parent_id=f"{parent.span_id:016x}" if parent is not None else None,
            kind=span.kind.name,
            start=int(span.start_time or 0),
            end=int(span.end_time or 0),
            attributes=_plain(dict(span.attributes or {})),
            links=links,
            status=span.status.status_code.name,
            status_message=span.status.description or "",
            scope=scope.name if scope is not None else "spangraph",
            resource=_plain(dict(span.resource.attributes)) if span.resource else {},
            scope_version=(scope.version or "") if scope is not None else "",
        )


def _plain(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in attributes.items()}


@dataclass(frozen=True)
class LogNode:
    """One executed node of a run (one span)."""

    key: str  # the span id
    node_id: str
    kind: str
    name: str
    label: str
    path: str
    status: str
    start: int
    end: int
    attempt: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_hit: bool
    error: str | None
    model: str | None
    options_json: str
    content: Mapping[str, str]
    attributes: Mapping[str, Any]
    parent: str | None

    @property
    def options(self) -> dict[str, Any]:
        """The generation's model options (parsed on demand)."""
        try:
            value = json.loads(self.options_json) if self.options_json else {}
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    @property
    def duration(self) -> float:
        """Seconds."""
        return max(0, self.end - self.start) / 1e9


@dataclass(frozen=True)
class LogEdge:
    """An edge of the run's DAG, ``source`` to ``target`` (span ids); ``kind`` is
    ``"part"``, ``"dynamic"``, ``"retry"``, ``"sample"`` (a sampler to an attempt) or
    ``"judge"`` (an attempt to the judge call that judged it)."""

    source: str  # span id of the upstream node
    target: str
    kind: str


@dataclass(frozen=True)
class Totals:
    """What a run added up to (``LogDAG.totals()``): generations, attempts and tasks
    run, tokens, cache hits, failures and skipped nodes."""

    generations: int  # distinct generation nodes that ran (attempts counted apart)
    attempts: int
    tasks: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_hits: int
    failures: int
    skipped: int


class LogDAG:
    """What a run did: one ``LogNode`` per executed node and the ``LogEdge`` records
    between them, built from the run's spans (``Run.log``) or read from an
    OTLP/JSON file (``from_otlp_json``).

    Queries: ``totals()``, ``filter(kind=..., status=...)``, ``critical_path()``,
    ``upstream(key)``, ``subdag(node_id)``. It writes itself back to OTLP/JSON
    (``write_otlp_json``) and draws itself (``render(path)``, ``to_graphviz()``,
    and as SVG in a notebook).
    """

    def __init__(self, records: Sequence[SpanRecord]) -> None:
        self.records = list(records)
        self.run: SpanRecord | None = None
        self.nodes: dict[str, LogNode] = {}
        self.edges: list[LogEdge] = []
        for record in self.records:
            attributes = record.attributes
            if attributes.get(sc.NODE_KIND) == "run":
                self.run = record
                continue
            self.nodes[record.span_id] = _node(record)
        # A graph node's final span (its last attempt) stands for it as a source.
        final: dict[str, str] = {}
        for node in sorted(self.nodes.values(), key=lambda n: n.attempt):
            if node.status != "retried":
                final[node.node_id] = node.key
        seen: set[tuple[str, str, str]] = set()
        for record in self.records:
            if record.span_id not in self.nodes:
                continue
            linked: set[str] = set()
            for _, source, link_attributes in record.links:
                if source in self.nodes:
                    kind = str(link_attributes.get(sc.EDGE_KIND, "part"))
                    self._add_edge(LogEdge(source, record.span_id, kind), seen)
                    linked.add(source)
            # Links beyond the SDK's limit (or dropped by a viewer) are in the attributes.
            upstream = record.attributes.get(sc.NODE_UPSTREAM) or []
            kinds = record.attributes.get(sc.NODE_UPSTREAM_KINDS) or ["part"] * len(upstream)
            for node_id, kind in zip(upstream, kinds, strict=False):
                source_key = final.get(str(node_id))
                if source_key is not None and source_key not in linked:
                    self._add_edge(LogEdge(source_key, record.span_id, str(kind)), seen)
            parent = record.parent_id
            if parent in self.nodes and self.nodes[parent].kind == "sampler":
                self._add_edge(LogEdge(parent, record.span_id, "sample"), seen)

    def _add_edge(self, edge: LogEdge, seen: set[tuple[str, str, str]]) -> None:
        key = (edge.source, edge.target, edge.kind)
        if key not in seen:
            seen.add(key)
            self.edges.append(edge)

    # -- construction ------------------------------------------------------------------

    @classmethod
    def from_spans(cls, spans: Iterable[Any]) -> LogDAG:
        """From SDK ``ReadableSpan`` objects (or ``SpanRecord`` objects)."""
        records = [s if isinstance(s, SpanRecord) else SpanRecord.from_readable(s) for s in spans]
        return cls(sorted(records, key=lambda r: (r.start, r.end, r.span_id)))

    @classmethod
    def from_otlp_json(cls, path: str | os.PathLike[str]) -> LogDAG:
        """Read OTLP/JSON lines (one ExportTraceServiceRequest per line)."""
        records: list[SpanRecord] = []
        for line in pathlib.Path(path).read_text().splitlines():
            if line.strip():
                records.extend(_records_from_otlp(json.loads(line)))
        return cls.from_spans(records)

    def write_otlp_json(self, path: str | os.PathLike[str]) -> pathlib.Path:
        """Write OTLP/JSON lines: hex trace and span ids, integer enums (per the OTLP spec)."""
        target = pathlib.Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w") as out:
            out.write(json.dumps(_otlp_request(self.records), separators=(",", ":")) + "\n")
        return target

    # -- equality ----------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LogDAG):
            return NotImplemented
        return (
            self.nodes == other.nodes
            and sorted(map(_edge_key, self.edges)) == sorted(map(_edge_key, other.edges))
            and self.run == other.run
        )

    __hash__ = None  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[LogNode]:
        return iter(self.nodes.values())

    # -- queries -------------------------------------------------------------------------

    def filter(self, *, kind: str | None = None, status: str | None = None) -> list[LogNode]:
        return [
            n
            for n in self.nodes.values()
            if (kind is None or n.kind == kind) and (status is None or n.status == status)
        ]

    def upstream(self, key: str) -> list[LogNode]:
        return [self.nodes[e.source] for e in self.edges if e.target == key]

    def critical_path(self) -> list[LogNode]:
        """The chain of nodes, following edges, with the longest total duration."""
        order = sorted(self.nodes.values(), key=lambda n: (n.end, n.start))
        best: dict[str, tuple[float, str | None]] = {}
        incoming: dict[str, list[str]] = {}
        for edge in self.edges:
            incoming.setdefault(edge.target, []).append(edge.source)
        for node in order:
            prior = [(best[s][0], s) for s in incoming.get(node.key, ()) if s in best]
            length, source = max(prior, default=(0.0, None))
            best[node.key] = (length + node.duration, source)
        if not best:
            return []
        key: str | None = max(best, key=lambda k: best[k][0])
        chain: list[LogNode] = []
        while key is not None:
            chain.append(self.nodes[key])
            key = best[key][1]
        return list(reversed(chain))

    def totals(self) -> Totals:
        nodes = list(self.nodes.values())
        generations = [n for n in nodes if n.kind == "generation"]
        ran = [n for n in generations if n.status != "skipped"]
        return Totals(
            generations=len({n.node_id for n in ran}),
            attempts=len(ran),
            tasks=len({n.node_id for n in nodes if n.kind == "task" and n.status != "skipped"}),
            input_tokens=sum(n.input_tokens for n in generations),
            output_tokens=sum(n.output_tokens for n in generations),
            cached_tokens=sum(n.cached_tokens for n in generations),
            cache_hits=len([n for n in generations if n.cache_hit]),
            failures=len([n for n in nodes if n.status == "failed"]),
            skipped=len([n for n in nodes if n.status == "skipped"]),
        )

    def subdag(self, node_id: str) -> LogDAG:
        """The spans of graph node ``node_id`` and everything upstream of it."""
        keys = {n.key for n in self.nodes.values() if n.node_id == node_id}
        todo = list(keys)
        while todo:
            key = todo.pop()
            for edge in self.edges:
                if edge.target == key and edge.source not in keys:
                    keys.add(edge.source)
                    todo.append(edge.source)
        records = [r for r in self.records if r.span_id in keys or r is self.run]
        return LogDAG(records)

    # -- rendering ---------------------------------------------------------------------

    def to_graphviz(
        self,
        *,
        timings: bool = True,
        collapse: int | None = None,
        rankdir: str = "LR",
        critical_path: bool = True,
        legend: bool = True,
    ) -> Any:
        """The drawing as a ``graphviz.Digraph``: ``timings`` (durations in labels),
        ``collapse`` (sibling groups larger than this are one node; default
        ``COLLAPSE_THRESHOLD``), ``rankdir``, ``critical_path`` (highlight it),
        ``legend`` (a key to the styles used)."""
        from ._render import COLLAPSE_THRESHOLD, logdag_to_graphviz

        return logdag_to_graphviz(
            self,
            timings=timings,
            collapse=COLLAPSE_THRESHOLD if collapse is None else collapse,
            rankdir=rankdir,
            critical_path=critical_path,
            legend=legend,
        )

    def render(
        self, path: str | os.PathLike[str], format: str | None = None, *, legend: bool = True
    ) -> pathlib.Path:
        """Draw the run to ``path`` and return the path written. ``format``: ``svg``,
        ``png``, ``pdf`` or ``dot`` (DOT source); by default the path's suffix says
        (else ``svg``). Without graphviz's ``dot`` program, the DOT source is written
        beside ``path`` (``.dot``) instead. ``legend``: a key to the styles used."""
        from ._render import render_file

        return render_file(self.to_graphviz(legend=legend), pathlib.Path(path), format)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        from ._render import mimebundle

        return mimebundle(self.to_graphviz())

    def __repr__(self) -> str:
        t = self.totals()
        return (
            f"<LogDAG {len(self.nodes)} nodes, {len(self.edges)} edges, {t.generations} "
            f"generations, {t.input_tokens + t.output_tokens} tokens>"
        )


def _edge_key(edge: LogEdge) -> tuple[str, str, str]:
    return (edge.source, edge.target, edge.kind)


def _node(record: SpanRecord) -> LogNode:
    a = record.attributes
    content: dict[str, str] = {}
    for key, name in ((sc.GEN_AI_INPUT_MESSAGES, "input"), (sc.GEN_AI_OUTPUT_MESSAGES, "output")):
        if key in a:
            content[name] = str(a[key])
    error = a.get(sc.ERROR_MESSAGE) or (record.status_message if record.status == "ERROR" else None)
    return LogNode(
        key=record.span_id,
        node_id=str(a.get(sc.NODE_ID, "")),
        kind=str(a.get(sc.NODE_KIND, "")),
        name=record.name,
        label=str(a.get(sc.NODE_LABEL, record.name)),
        path=str(a.get(sc.SPAN_PATH, "")),
        status=str(a.get(sc.NODE_STATUS, "done")),
        start=record.start,
        end=record.end,
        attempt=int(a.get(sc.NODE_ATTEMPT, 1)),
        input_tokens=int(a.get(sc.GEN_AI_USAGE_INPUT_TOKENS, 0)),
        output_tokens=int(a.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS, 0)),
        cached_tokens=int(a.get(sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, 0)),
        cache_hit=bool(a.get(sc.CACHE_HIT, False)),
        error=str(error) if error else None,
        model=str(a[sc.GEN_AI_REQUEST_MODEL]) if sc.GEN_AI_REQUEST_MODEL in a else None,
        options_json=str(a.get(sc.OPTIONS, "")),
        content=content,
        attributes=dict(a),
        parent=record.parent_id,
    )


# -- OTLP/JSON ---------------------------------------------------------------------------------


def _any_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}  # int64 is a string in OTLP/JSON
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [_any_value(v) for v in value]}}
    return {"stringValue": str(value)}


def _from_any_value(value: Mapping[str, Any]) -> Any:
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [_from_any_value(v) for v in value["arrayValue"].get("values", [])]
    return str(value.get("stringValue", ""))


def _attributes(attributes: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _any_value(v)} for k, v in attributes.items()]


def _from_attributes(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {item["key"]: _from_any_value(item.get("value", {})) for item in items}


def _otlp_request(records: Sequence[SpanRecord]) -> dict[str, Any]:
    """One ExportTraceServiceRequest: the spans grouped by resource, then by
    instrumentation scope (name and version), each group where it first occurs."""
    resources: dict[str, tuple[Mapping[str, Any], dict[tuple[str, str], list[Any]]]] = {}
    for r in records:
        key = json.dumps(r.resource, sort_keys=True, default=str)
        scopes = resources.setdefault(key, (r.resource, {}))[1]
        scopes.setdefault((r.scope, r.scope_version), []).append(_otlp_span(r))
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": _attributes(resource)},
                "scopeSpans": [
                    {"scope": _otlp_scope(name, version), "spans": spans}
                    for (name, version), spans in scopes.items()
                ],
            }
            for resource, scopes in resources.values()
        ]
    }


def _otlp_scope(name: str, version: str) -> dict[str, str]:
    return {"name": name, "version": version} if version else {"name": name}


def _otlp_span(r: SpanRecord) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": r.trace_id,
        "spanId": r.span_id,
        "name": r.name,
        "kind": _KIND_TO_OTLP.get(r.kind, 1),
        "startTimeUnixNano": str(r.start),
        "endTimeUnixNano": str(r.end),
        "attributes": _attributes(r.attributes),
        "links": [{"traceId": t, "spanId": s, "attributes": _attributes(a)} for t, s, a in r.links],
        "status": {"code": _STATUS_TO_OTLP.get(r.status, 0), "message": r.status_message},
    }
    if r.parent_id:
        span["parentSpanId"] = r.parent_id
    return span


def _hex_id(value: Any, digits: int, what: str) -> str:
    """OTLP/JSON ids are hex strings. (protobuf's json_format would read them as
    base64 without complaint, so they are converted here explicitly.)"""
    text = str(value).lower()
    if len(text) != digits or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"OTLP/JSON {what} must be {digits} hex digits, got {value!r}")
    return text


def _records_from_otlp(request: Mapping[str, Any]) -> list[SpanRecord]:
    out: list[SpanRecord] = []
    for resource_spans in request.get("resourceSpans", []):
        resource = _from_attributes(resource_spans.get("resource", {}).get("attributes", []))
        for scope_spans in resource_spans.get("scopeSpans", []):
            scope_of = scope_spans.get("scope", {})
            scope, scope_version = scope_of.get("name", ""), scope_of.get("version", "")
            for s in scope_spans.get("spans", []):
                status = s.get("status", {})
                parent = s.get("parentSpanId") or None
                out.append(
                    SpanRecord(
                        name=s["name"],
                        trace_id=_hex_id(s["traceId"], 32, "traceId"),
                        span_id=_hex_id(s["spanId"], 16, "spanId"),
                        parent_id=_hex_id(parent, 16, "parentSpanId") if parent else None,
                        kind=_OTLP_TO_KIND.get(int(s.get("kind", 1)), "INTERNAL"),
                        start=int(s["startTimeUnixNano"]),
                        end=int(s["endTimeUnixNano"]),
                        attributes=_from_attributes(s.get("attributes", [])),
                        links=tuple(
                            (
                                _hex_id(link["traceId"], 32, "link traceId"),
                                _hex_id(link["spanId"], 16, "link spanId"),
                                _from_attributes(link.get("attributes", [])),
                            )
                            for link in s.get("links", [])
                        ),
                        status=_OTLP_TO_STATUS.get(int(status.get("code", 0)), "UNSET"),
                        status_message=str(status.get("message", "")),
                        scope=scope,
                        resource=resource,
                        scope_version=str(scope_version),
                    )
                )
    return out
