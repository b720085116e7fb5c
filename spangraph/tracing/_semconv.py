"""Attribute names, pinned here.

The OpenTelemetry GenAI semantic conventions moved to their own repository
(``open-telemetry/semantic-conventions-genai``: ``model/gen-ai/registry.yaml``
and ``spans.yaml``, which cite semantic conventions v1.41.1) and the PyPI
``opentelemetry-semantic-conventions`` package marks its ``gen_ai``
constants deprecated, so the names spangraph emits are kept in this one
module. Which span carries which name, with its type, is pinned in
``tests/tracing/semconv_table.py``. ``spangraph.*`` names are ours;
``openinference.span.kind``, ``input.*`` and ``output.*`` are OpenInference's
(Arize Phoenix reads them for its span kinds and its input and output columns).
"""

from __future__ import annotations

# GenAI (OpenTelemetry semantic conventions)
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_REQUEST_TOP_K = "gen_ai.request.top_k"
GEN_AI_REQUEST_SEED = "gen_ai.request.seed"
GEN_AI_REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_REQUEST_STREAM = "gen_ai.request.stream"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
GEN_AI_OUTPUT_TYPE = "gen_ai.output.type"
GEN_AI_WORKFLOW_NAME = "gen_ai.workflow.name"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"

OP_TEXT_COMPLETION = "text_completion"
OP_CHAT = "chat"
OP_INVOKE_WORKFLOW = "invoke_workflow"
OP_EXECUTE_TOOL = "execute_tool"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_TOOL_TYPE = "gen_ai.tool.type"
#: A tool call's arguments and result (free text: with content capture on only).
GEN_AI_TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT = "gen_ai.tool.call.result"
#: The tools a generation was offered (free text: with content capture on only).
GEN_AI_TOOL_DEFINITIONS = "gen_ai.tool.definitions"

# gen_ai.output.type: what the request asked for (a JSON schema constrains the output, or not).
OUTPUT_JSON = "json"
OUTPUT_TEXT = "text"

# The GenAI content-capture switch.
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

# OpenInference (Phoenix)
OPENINFERENCE_SPAN_KIND = "openinference.span.kind"
INPUT_VALUE = "input.value"
INPUT_MIME_TYPE = "input.mime_type"
OUTPUT_VALUE = "output.value"
OUTPUT_MIME_TYPE = "output.mime_type"
MIME_TEXT = "text/plain"
MIME_JSON = "application/json"

# spangraph
RUN_ID = "spangraph.run.id"
NODE_ID = "spangraph.node.id"
NODE_KIND = "spangraph.node.kind"
NODE_LABEL = "spangraph.node.label"
NODE_STATUS = "spangraph.node.status"
NODE_UPSTREAM = "spangraph.node.upstream"
NODE_UPSTREAM_KINDS = "spangraph.node.upstream_kinds"
NODE_UPSTREAM_SPAN_IDS = "spangraph.node.upstream_span_ids"
NODE_ATTEMPT = "spangraph.node.attempt"
SPAN_PATH = "spangraph.span.path"
CACHE_HIT = "spangraph.cache.hit"
EDGE_KIND = "spangraph.edge.kind"
OPTIONS = "spangraph.request.options"
VALIDATION_PASSED = "spangraph.validation.passed"
SAMPLE_INDEX = "spangraph.sample.index"
SAMPLE_CHOSEN = "spangraph.sample.chosen"
SAMPLE_SCORE = "spangraph.sample.score"
INTERRUPT_ID = "spangraph.interrupt.id"
#: The question an interrupted task asked (free text: with content capture on only).
INTERRUPT_QUESTION = "spangraph.interrupt.question"
#: A generation whose primitive ran on an executor's worker: the worker's address,
#: and its wall-clock start and end there (nanoseconds since the epoch).
WORKER = "spangraph.worker"
WORKER_START = "spangraph.worker.start_time"
WORKER_END = "spangraph.worker.end_time"

# Free text (see ``_text``): with content capture off, an attribute ``X`` that would
# hold free text is left out, and ``X_length`` (characters) and ``X_digest`` stand in
# (``spangraph.skip.reason`` then keeps the failed input's span path and error type).
LENGTH_SUFFIX = "_length"
DIGEST_SUFFIX = "_digest"
ERROR_MESSAGE = "spangraph.error.message"
ERROR_MESSAGE_LENGTH = ERROR_MESSAGE + LENGTH_SUFFIX
ERROR_MESSAGE_DIGEST = ERROR_MESSAGE + DIGEST_SUFFIX
SKIP_REASON = "spangraph.skip.reason"
VALIDATION_REASON = "spangraph.validation.reason"
VALIDATION_REASON_LENGTH = VALIDATION_REASON + LENGTH_SUFFIX
VALIDATION_REASON_DIGEST = VALIDATION_REASON + DIGEST_SUFFIX
