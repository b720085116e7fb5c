"""Free text on spans: the one rule for what text a span may carry.

*Free text* is text the run did not make up itself: prompts and outputs,
component parameters (they render into prompts), model options that hold
text (``stop``, ``system``, ``extra:`` options), validation reasons and
judge verdicts, exception messages (a ``ParseError`` quotes the raw output,
a pydantic ``ValidationError`` its input, a task's own error anything) and
skip reasons built from them. *Structural* text is made of the program's
shape and nothing else: ids, kinds, statuses, class names and function
names, span paths (class names and part indexes), engine and model names,
option names and numeric option values, error type names. Span paths on
spans are structural by construction (``TaskProducer.name`` names the
function, never its arguments); so are labels with capture off (with it
on, a label may carry a short hint of the node's content: ``nodes._label``),
except a label the user gave (``label=``), which is theirs and always shown.

A run decides once, from its capture mode (``capture_mode()``), how its
spans carry free text, and every span attribute and status that could hold
some is set here:

- capture off (``NO_CONTENT``, the default): no free text. Where it would
  go, a span carries its length and digest instead, as ``<name>_length``
  and ``<name>_digest`` (``spangraph.error.message_length``, …); an error
  keeps its type (``error.type``), and the span status says only that; a
  skip reason names the failed input's span path and error type; text
  options show as ``{"length": …, "digest": …}`` in
  ``spangraph.request.options``.
- capture on (``SPAN_ONLY``): the text itself, cut at the limits below.

What a span may say about content, by capture mode:

- a generation's prompt and output: off, nothing (its token counts are on
  the span); on, ``gen_ai.input.messages`` and ``gen_ai.output.messages``
  (GenAI), and ``input.value`` / ``output.value`` with their
  ``input.mime_type`` / ``output.mime_type`` (OpenInference: Phoenix's span
  table reads them), each cut at ``CONTENT_LIMIT``;
- a task's arguments (each span in them as its value) and its result, and
  a run's input (the text of the blocks its graph starts from) and output
  (each root's value): off, nothing; on, ``input.value`` / ``output.value``
  (a string as ``text/plain``, anything else as its JSON, ``application/json``);
- stop sequences: off, only in ``spangraph.request.options`` as lengths and
  digests; on, also ``gen_ai.request.stop_sequences``.

The digest is blake2b of the UTF-8 text, 8 bytes as 16 hex digits
(``text_digest``): stable across runs and processes, so a user who holds a
text (an exception, ``Run.failed``) can find its spans without the spans
holding it. Prompt and output get no digest: that would cost a hash of
every prompt on every generation; their token counts are on the span.

Only the rare paths pay for the rule (errors, skips, a sampler's attempts,
a request's options once per distinct request); a generation that succeeds
costs what it did.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from hashlib import blake2b
from typing import Any

from opentelemetry.trace import Status, StatusCode

from .. import events as ev
from . import _semconv as sc

#: Longest message text (prompt, output) recorded when content capture is on (characters).
CONTENT_LIMIT = 16_384
#: Longest error message or skip reason recorded when content capture is on (characters).
ERROR_LIMIT = 500
#: Longest other free text (a validation reason, say) recorded when capture is on.
TEXT_LIMIT = 1000

#: ``FreeText.values``'s "not given" (``None`` is a value a task may return).
_NOTHING: Any = object()


def text_digest(text: str) -> str:
    """The digest spans carry in place of ``text`` with capture off (16 hex digits)."""
    return blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


class FreeText:
    """A run's rule for free text on its spans, fixed by its capture mode."""

    __slots__ = ("captured",)

    def __init__(self, mode: str) -> None:
        #: Whether spans carry free text (``SPAN_ONLY``) or only its length and digest.
        self.captured = mode == "SPAN_ONLY"

    def messages(self, attributes: dict[str, Any], record: ev.GenerationRecord) -> None:
        """The prompt and output as GenAI messages and as OpenInference's input and
        output values (called with capture on only: with it off, a generation's span
        gets nothing here, not even a digest)."""
        prompt = _cut(record.prompt)
        attributes[sc.GEN_AI_INPUT_MESSAGES] = json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]
        )
        attributes[sc.INPUT_VALUE] = prompt
        attributes[sc.INPUT_MIME_TYPE] = sc.MIME_TEXT
        if record.tools:  # a tool loop's round: the tools it was offered
            attributes[sc.GEN_AI_TOOL_DEFINITIONS] = _cut(json.dumps(list(record.tools)))
        if record.output is not None:
            output = _cut(record.output)
            attributes[sc.GEN_AI_OUTPUT_MESSAGES] = json.dumps(
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": output}],
                        "finish_reason": record.finish_reason or "",
                    }
                ]
            )
            attributes[sc.OUTPUT_VALUE] = output
            json_output = record.output_type == sc.OUTPUT_JSON and output is record.output
            attributes[sc.OUTPUT_MIME_TYPE] = sc.MIME_JSON if json_output else sc.MIME_TEXT

    def values(
        self,
        attributes: dict[str, Any],
        *,
        given: Any = _NOTHING,
        result: Any = _NOTHING,
    ) -> None:
        """A task's or a run's input (``given``) and output (``result``) as
        OpenInference's ``input.value`` and ``output.value`` (with capture on; with it
        off, nothing)."""
        if not self.captured:
            return
        if given is not _NOTHING:
            attributes[sc.INPUT_VALUE], attributes[sc.INPUT_MIME_TYPE] = _value_text(given)
        if result is not _NOTHING:
            attributes[sc.OUTPUT_VALUE], attributes[sc.OUTPUT_MIME_TYPE] = _value_text(result)

    def stop_sequences(self, attributes: dict[str, Any], stop: Any) -> None:
        """``gen_ai.request.stop_sequences`` (with capture on: stop strings are free
        text; with it off, ``options`` shows each one's length and digest)."""
        if not self.captured or stop is None:
            return
        stops = (stop,) if isinstance(stop, str) else tuple(stop)
        if stops and all(isinstance(s, str) for s in stops):
            attributes[sc.GEN_AI_REQUEST_STOP_SEQUENCES] = stops

    def put(self, attributes: dict[str, Any], name: str, text: str, limit: int) -> None:
        """Set attribute ``name`` to ``text`` (capture on), else its length and digest."""
        if self.captured:
            attributes[name] = text if len(text) <= limit else text[:limit]
        else:
            attributes[name + sc.LENGTH_SUFFIX] = len(text)
            attributes[name + sc.DIGEST_SUFFIX] = text_digest(text)

    def error(self, attributes: dict[str, Any], error: BaseException) -> Status:
        """Record ``error`` on a span's attributes; the span's status."""
        kind = type(error).__name__
        message = str(error)
        attributes[sc.ERROR_TYPE] = kind
        self.put(attributes, sc.ERROR_MESSAGE, message, ERROR_LIMIT)
        return Status(StatusCode.ERROR, message[:ERROR_LIMIT] if self.captured else kind)

    def skip(self, attributes: dict[str, Any], event: ev.NodeSkipped) -> None:
        """Why a node was skipped: the whole reason (capture on), else the failed
        input's span path and error type (both structural)."""
        if self.captured:
            self.put(attributes, sc.SKIP_REASON, event.reason, ERROR_LIMIT)
        elif event.error_type:
            reason = f"input {event.input_path} failed: {event.error_type}"
            attributes[sc.SKIP_REASON] = reason[:ERROR_LIMIT]
        elif event.reason:
            self.put(attributes, sc.SKIP_REASON, event.reason, ERROR_LIMIT)

    def extra(self, attributes: dict[str, Any], extra: Mapping[str, Any]) -> None:
        """An event's own attributes (``NodeFinished.attributes``): strings are free
        text, other values (numbers, flags) are set as they are; ``None`` is left out."""
        for name, value in extra.items():
            if isinstance(value, str):
                self.put(attributes, name, value, TEXT_LIMIT)
            elif value is not None:
                attributes[name] = value

    def options(self, options: Mapping[str, Any]) -> str:
        """``spangraph.request.options``: the request's options as JSON, text values as
        their length and digest with capture off. ``system`` is left out: it is part of
        the prompt (``gen_ai.input.messages`` with capture on)."""
        shown = {
            name: _plain(value) if self.captured else _withheld(value)
            for name, value in options.items()
            if name != "system"
        }
        return json.dumps(shown, sort_keys=True, default=str)


def _cut(text: str) -> str:
    return text if len(text) <= CONTENT_LIMIT else text[:CONTENT_LIMIT] + "…[truncated]"


def _value_text(value: Any) -> tuple[str, str]:
    """A value as ``input.value`` / ``output.value`` text and its MIME type: a string
    as it is, anything else as its JSON (a JSON text cut short is plain text)."""
    if isinstance(value, str):
        return _cut(value), sc.MIME_TEXT
    text = json.dumps(value, default=_jsonable, ensure_ascii=False)
    cut = _cut(text)
    return cut, sc.MIME_JSON if cut is text else sc.MIME_TEXT


def _jsonable(value: Any) -> Any:
    """What ``json.dumps`` cannot write, as what it can: a pydantic model's JSON
    data, a dataclass's fields, a set's items; anything else as its ``str``."""
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):  # (a model, not a model class)
        return dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return str(value)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _withheld(value: Any) -> Any:
    """An option's value without its text: numbers and flags as they are, each string
    of a list apart (so a list of stops keeps its count), anything else as its JSON."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [_withheld(v) for v in value]
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return {"length": len(text), "digest": text_digest(text)}
