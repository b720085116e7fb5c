"""Parsing model text into a component's output type, and the JSON schema that
constrains it."""

from __future__ import annotations

import enum
import functools
import json
import re
import typing
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from ._errors import ParseError

_SCALARS = (int, float, bool)
_BOOL_WORDS = {"yes": True, "true": True, "y": True, "no": False, "false": False, "n": False}
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


@functools.cache
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def is_plain_text(tp: Any) -> bool:
    return tp is str or tp is Any


def output_schema(tp: Any) -> dict[str, Any] | None:
    """The JSON schema that constrains decoding to ``tp``; ``None`` for plain text.

    Objects are closed (``additionalProperties: false``): with an open schema a
    small base model keeps inventing keys until it runs out of tokens.
    """
    if is_plain_text(tp):
        return None
    schema = _adapter(tp).json_schema()
    _close_objects(schema)
    return schema


def _close_objects(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            node.setdefault("additionalProperties", False)
        for value in node.values():
            _close_objects(value)
    elif isinstance(node, list):
        for value in node:
            _close_objects(value)


def parse_as(tp: Any, text: str) -> Any:
    """Parse ``text`` as ``tp`` (str, int, float, bool, Literal, Enum, pydantic
    models, and list/dict of those). Raises ``ParseError`` keeping the raw text."""
    if is_plain_text(tp):
        return text
    stripped = text.strip()
    adapter = _adapter(tp)
    try:
        return adapter.validate_json(stripped)
    except (ValidationError, ValueError) as first:
        error: Exception = first
    candidate = _scalar_candidate(tp, stripped)
    if candidate is not None:
        try:
            return adapter.validate_python(candidate)
        except (ValidationError, ValueError) as second:
            error = second
    embedded = _embedded_json(stripped) if _wants_json(tp) else None
    if embedded is not None:
        try:
            return adapter.validate_json(embedded)
        except (ValidationError, ValueError) as third:
            error = third
    raise ParseError(_first_line(error), raw=text, expected=type_name(tp))


def _first_line(error: Exception) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"output does not parse{' at ' + where if where else ''}: {first['msg']}"
    return f"output does not parse: {error}"


def _wants_json(tp: Any) -> bool:
    origin = typing.get_origin(tp) or tp
    return origin in (list, dict, tuple) or (
        isinstance(origin, type) and issubclass(origin, BaseModel)
    )


def _scalar_candidate(tp: Any, text: str) -> Any:
    """Lenient reading of a scalar from free text: ``"42."`` → ``"42"``, ``"Yes."`` → True."""
    word = text.split("\n", 1)[0].strip().strip(".!,;:\"'`* ")
    if tp is bool:
        return _BOOL_WORDS.get(word.lower())
    if tp in (int, float):
        match = _NUMBER.search(text)
        return match.group(0) if match else None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if word.lower() in (str(member.value).lower(), member.name.lower()):
                return member.value
        return None
    if typing.get_origin(tp) is typing.Literal:
        for option in typing.get_args(tp):
            if str(option).lower() == word.lower():
                return option
        return None
    return None


def _embedded_json(text: str) -> str | None:
    """The first balanced JSON object or array inside ``text``, if any."""
    for opener, closer in (("{", "}"), ("[", "]")):
        start = text.find(opener)
        if start < 0:
            continue
        depth = 0
        in_string = False
        escape = False
        for i in range(start, len(text)):
            ch = text[i]
            if in_string:
                if escape:
                    escape = False
                elif ch == "\\":
                    escape = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch == opener:
                depth += 1
            elif ch == closer:
                depth -= 1
                if depth == 0:
                    candidate = text[start : i + 1]
                    try:
                        json.loads(candidate)
                    except ValueError:
                        break
                    return candidate
    return None
