"""Compact JSON decoding: the schema option that keeps whitespace from running on.

llama.cpp built with llguidance (as the ``xllamacpp`` wheels are) decodes a
``json_schema`` through llguidance's ``%json``, whose whitespace between
tokens is ``[ \\t\\n\\r]+`` by default: unbounded. A small model that starts
to pretty-print can then write runs of ``"\\n    "`` until ``max_tokens`` is
spent, and the output does not parse. llguidance reads a top-level
``x-guidance`` key; ``whitespace_flexible: false`` allows no whitespace
outside strings (``{"name":"Paris","country":"France"}``). llama.cpp's own
JSON-schema-to-GBNF conversion (builds without llguidance) ignores the key
and bounds whitespace anyway (at most two newlines and 20 spaces per gap).

llama.cpp's OpenAI-compatible chat endpoint turns ``response_format`` into
GBNF even in llguidance builds; ``llguidance_grammar`` is the grammar
llama.cpp itself makes of a ``json_schema`` in those builds, compact, for
its ``grammar`` extension (``OpenAIEngine(json_mode="llguidance")``).

What this does not bound is a string's content: a model can repeat words
inside a string until ``max_tokens``; ``Field(max_length=...)`` (a
``maxLength`` in the schema) bounds that.
"""

from __future__ import annotations

import json
from typing import Any

#: llguidance's JSON options: no whitespace between tokens.
COMPACT_JSON = {"whitespace_flexible": False}


def compact_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with llguidance's compact-JSON option (a schema's own ``x-guidance`` wins)."""
    if "x-guidance" in schema:
        return schema
    return {"x-guidance": dict(COMPACT_JSON), **schema}


def llguidance_grammar(schema: dict[str, Any]) -> str:
    """A llguidance grammar for JSON of ``schema``, compact (llama.cpp's ``grammar``)."""
    return "%llguidance {}\nstart: %json " + json.dumps(compact_schema(schema))
