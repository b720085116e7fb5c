"""The conventions spangraph's spans follow, pinned: each attribute a span may carry
that is not spangraph's own (``spangraph.*``), with its type and the spans that carry it
(``TABLE``); and spangraph's own attributes, the same way (``OWN``).

Sources, read when this table was written:

- OpenTelemetry GenAI semantic conventions, ``open-telemetry/semantic-conventions-genai``
  (``model/gen-ai/registry.yaml`` and ``spans.yaml``; they cite semantic conventions
  v1.41.1): the ``gen_ai.inference.client`` span (a generation; kind CLIENT, or
  INTERNAL for a model in the same process) and the ``gen_ai.invoke_workflow.internal``
  span (the run);
- OpenTelemetry semantic conventions v1.41.1 for ``server.*`` and ``error.type``;
- OpenInference's ``spec/semantic_conventions.md`` (``Arize-ai/openinference``) for
  ``openinference.span.kind`` and ``input.*`` / ``output.*``.

Span sorts: ``run`` (the run span), ``inference`` (a generation's attempt that reached
the engine: ``done``, ``failed`` or ``retried``), ``task`` and ``sampler``. A skipped or
cancelled generation never reached its engine: its span is none of these (``unrun``),
and carries no ``gen_ai.*`` attribute.

Presence:

- ``required``: on every span of its sorts;
- ``recommended``: on a span of its sorts when the value is known (the request set the
  option, a response came, the engine is remote, the attempt failed);
- ``opt-in``: content, on spans of its sorts only with content capture on, and then on
  every such span that has the content (``tests/tracing/test_semconv.py`` says which).
"""

from __future__ import annotations

from typing import NamedTuple


class Convention(NamedTuple):
    name: str
    #: ``string``, ``int``, ``double``, ``boolean`` or ``string[]`` (the spec's value types).
    type: str
    sorts: frozenset[str]
    presence: str


RUN = frozenset({"run"})
INFERENCE = frozenset({"inference"})
ALL = frozenset({"run", "inference", "task", "sampler"})
WITH_IO = frozenset({"run", "inference", "task"})

TABLE: dict[str, Convention] = {
    c.name: c
    for c in (
        # GenAI: the invoke_workflow span
        Convention("gen_ai.operation.name", "string", RUN | INFERENCE, "required"),
        Convention("gen_ai.workflow.name", "string", RUN, "required"),
        # GenAI: the inference span
        Convention("gen_ai.provider.name", "string", INFERENCE, "required"),
        Convention("gen_ai.request.model", "string", INFERENCE, "required"),
        Convention("gen_ai.output.type", "string", INFERENCE, "required"),
        Convention("gen_ai.request.temperature", "double", INFERENCE, "recommended"),
        Convention("gen_ai.request.max_tokens", "int", INFERENCE, "recommended"),
        Convention("gen_ai.request.top_p", "double", INFERENCE, "recommended"),
        Convention("gen_ai.request.top_k", "double", INFERENCE, "recommended"),
        Convention("gen_ai.request.seed", "int", INFERENCE, "recommended"),
        Convention("gen_ai.response.model", "string", INFERENCE, "recommended"),
        Convention("gen_ai.response.finish_reasons", "string[]", INFERENCE, "recommended"),
        # On a streamed generation: the time from the request to its first text, seconds.
        Convention("gen_ai.request.stream", "boolean", INFERENCE, "recommended"),
        Convention("gen_ai.response.time_to_first_chunk", "double", INFERENCE, "recommended"),
        Convention("gen_ai.usage.input_tokens", "int", INFERENCE, "required"),
        Convention("gen_ai.usage.output_tokens", "int", INFERENCE, "required"),
        Convention("gen_ai.usage.cache_read.input_tokens", "int", INFERENCE, "required"),
        Convention("server.address", "string", INFERENCE, "recommended"),
        Convention("server.port", "int", INFERENCE, "recommended"),
        # Stop strings are text the user wrote: content.
        Convention("gen_ai.request.stop_sequences", "string[]", INFERENCE, "opt-in"),
        # The spec's type is "any": a JSON string where structured values are not supported.
        Convention("gen_ai.input.messages", "string", INFERENCE, "opt-in"),
        Convention("gen_ai.output.messages", "string", INFERENCE, "opt-in"),
        Convention("error.type", "string", ALL, "recommended"),
        # OpenInference
        Convention("openinference.span.kind", "string", ALL, "required"),
        Convention("input.value", "string", WITH_IO, "opt-in"),
        Convention("input.mime_type", "string", WITH_IO, "opt-in"),
        Convention("output.value", "string", WITH_IO, "opt-in"),
        Convention("output.mime_type", "string", WITH_IO, "opt-in"),
    )
}

UNRUN = frozenset({"unrun"})
NODES = frozenset({"inference", "task", "sampler"}) | UNRUN

#: spangraph's own attributes (``spangraph/tracing/_semconv.py``; ``_emit`` says what
#: each means). Content (``opt-in``) has a ``_length`` and ``_digest`` stand-in with
#: capture off.
OWN: dict[str, Convention] = {
    c.name: c
    for c in (
        Convention("spangraph.run.id", "string", ALL | UNRUN, "required"),
        Convention("spangraph.node.kind", "string", ALL | UNRUN, "required"),
        Convention("spangraph.node.status", "string", ALL | UNRUN, "required"),
        Convention("spangraph.node.id", "string", NODES, "required"),
        Convention("spangraph.node.label", "string", NODES, "required"),
        Convention("spangraph.node.attempt", "int", NODES, "required"),
        Convention("spangraph.span.path", "string", NODES, "required"),
        Convention("spangraph.cache.hit", "boolean", NODES, "required"),
        # The nearest executed nodes upstream: their node ids, edge kinds, and span ids
        # (16 hex digits; "" for one without a span yet), in one order.
        Convention("spangraph.node.upstream", "string[]", NODES, "required"),
        Convention("spangraph.node.upstream_kinds", "string[]", NODES, "required"),
        Convention("spangraph.node.upstream_span_ids", "string[]", NODES, "required"),
        Convention("spangraph.request.options", "string", INFERENCE, "required"),
        # A sampler's attempts.
        Convention("spangraph.sample.index", "int", INFERENCE, "recommended"),
        Convention("spangraph.sample.chosen", "boolean", INFERENCE, "recommended"),
        Convention("spangraph.sample.score", "double", INFERENCE, "recommended"),
        Convention("spangraph.validation.passed", "boolean", INFERENCE, "recommended"),
        Convention("spangraph.validation.reason", "string", INFERENCE, "opt-in"),
        Convention("spangraph.validation.reason_length", "int", INFERENCE, "recommended"),
        Convention("spangraph.validation.reason_digest", "string", INFERENCE, "recommended"),
        # Errors and skips.
        Convention("spangraph.error.message", "string", ALL | UNRUN, "opt-in"),
        Convention("spangraph.error.message_length", "int", ALL | UNRUN, "recommended"),
        Convention("spangraph.error.message_digest", "string", ALL | UNRUN, "recommended"),
        Convention("spangraph.skip.reason", "string", NODES, "recommended"),
    )
}

#: Values the conventions fix (an attribute not listed here may hold any value).
VALUES: dict[str, frozenset[str]] = {
    "gen_ai.operation.name": frozenset({"invoke_workflow", "chat", "text_completion"}),
    "gen_ai.output.type": frozenset({"text", "json", "image", "speech"}),
    "openinference.span.kind": frozenset({"LLM", "CHAIN"}),
    "input.mime_type": frozenset({"text/plain", "application/json"}),
    "output.mime_type": frozenset({"text/plain", "application/json"}),
}
