"""How engines ask for structured output: the request each one builds (no server).

The outputs themselves are checked on the real engine in ``test_structured_output.py``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from spangraph import Component, Span
from spangraph.engines import Identity, OpenAIEngine
from spangraph.engines._schema import compact_schema, llguidance_grammar


class City(BaseModel):
    name: str
    country: str


class AskCity(Component[City]):
    template = "{q}"
    q: Span


class Count(Component[int]):
    template = "{q}"
    q: Span


def _arguments(engine: OpenAIEngine, action: Any) -> dict[str, Any]:
    return engine._arguments(engine.render(action, Identity(), {"max_tokens": 8}))


def test_compact_schema_adds_llguidance_s_option_and_keeps_a_schema_s_own() -> None:
    schema = AskCity.output_schema()
    assert schema is not None
    compact = compact_schema(schema)
    assert compact == {"x-guidance": {"whitespace_flexible": False}, **schema}
    assert "x-guidance" not in schema  # not changed in place
    own = {"x-guidance": {"whitespace_flexible": True}, "type": "object"}
    assert compact_schema(own) is own
    grammar = llguidance_grammar(schema)
    head, body = grammar.split("\n", 1)
    assert head == "%llguidance {}" and body.startswith("start: %json ")
    assert json.loads(body.removeprefix("start: %json ")) == compact


@pytest.mark.parametrize("mode", ["chat", "completion"])
def test_schema_mode_sends_the_schema_as_the_openai_api_takes_it(mode: Any) -> None:
    engine = OpenAIEngine("http://127.0.0.1:9/v1", mode=mode)
    args = _arguments(engine, AskCity(q="x"))
    schema = AskCity.output_schema()
    if mode == "chat":
        assert args["response_format"]["json_schema"]["schema"] == schema
        assert "extra_body" not in args
    else:
        assert args["extra_body"] == {"json_schema": schema}
    assert "json_mode" not in engine.fingerprint()


@pytest.mark.parametrize("mode", ["chat", "completion"])
def test_llguidance_mode_sends_a_compact_grammar_and_no_schema(mode: Any) -> None:
    engine = OpenAIEngine("http://127.0.0.1:9/v1", mode=mode, json_mode="llguidance")
    for action, component in ((AskCity(q="x"), AskCity), (Count(q="x"), Count)):
        args = _arguments(engine, action)
        schema = component.output_schema()
        assert schema is not None
        assert args["extra_body"] == {"grammar": llguidance_grammar(schema)}  # not wrapped
        assert "response_format" not in args
    assert engine._unwrapped("[1,2]", {"type": "array"}) == "[1,2]"
    assert engine.fingerprint()["json_mode"] == "llguidance"  # other outputs, other memo keys
    with pytest.raises(ValueError, match="json_mode must be 'schema' or 'llguidance'"):
        OpenAIEngine("http://127.0.0.1:9/v1", json_mode="compact")  # type: ignore[arg-type]
