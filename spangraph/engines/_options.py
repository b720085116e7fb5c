"""Model options: canonical names, validation, and merging.

Canonical names are the same for every engine; each engine maps them to its
wire names. Options that carry the ``extra:`` prefix are passed to the
engine verbatim (prefix removed), for settings spangraph does not know.
Precedence: engine defaults < execution state < call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from ._errors import InvalidOptionError

EXTRA_PREFIX = "extra:"


def _number(name: str, low: float, high: float, *, low_open: bool = False) -> Callable[[Any], Any]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise InvalidOptionError(f"option {name} must be a number, got {value!r}")
        below = value <= low if low_open else value < low
        if below or value > high:
            bracket = "(" if low_open else "["
            raise InvalidOptionError(
                f"option {name}={value!r} is out of range {bracket}{low}, {high}]"
            )
        return float(value)

    return check


def _integer(name: str, low: int) -> Callable[[Any], Any]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidOptionError(f"option {name} must be an integer, got {value!r}")
        if value < low:
            raise InvalidOptionError(f"option {name}={value} must be >= {low}")
        return value

    return check


def _stop(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise InvalidOptionError(f"option stop must be a string or a list of strings: {value!r}")
    return tuple(value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidOptionError(f"option system must be a string, got {type(value).__name__}")
    return value


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidOptionError(f"option seed must be an integer, got {value!r}")
    return value


#: The canonical option names, each with the check that validates and normalises its
#: value; an engine maps the ones it supports to its wire names (``wire_names``).
CANONICAL: dict[str, Callable[[Any], Any]] = {
    "temperature": _number("temperature", 0.0, 2.0),
    "max_tokens": _integer("max_tokens", 1),
    "top_p": _number("top_p", 0.0, 1.0, low_open=True),
    "top_k": _integer("top_k", 0),
    "seed": _seed,
    "stop": _stop,
    "system": _text,
}


def check_options(options: Mapping[str, Any], *, where: str = "") -> dict[str, Any]:
    """Validate and normalise options; raise ``InvalidOptionError`` naming the valid ones."""
    out: dict[str, Any] = {}
    for name, value in options.items():
        if name.startswith(EXTRA_PREFIX) and len(name) > len(EXTRA_PREFIX):
            out[name] = value
            continue
        check = CANONICAL.get(name)
        if check is None:
            raise InvalidOptionError(
                f"{where + ': ' if where else ''}unknown model option {name!r}; valid options: "
                f"{', '.join(CANONICAL)}, or '{EXTRA_PREFIX}<name>' to pass one to the engine "
                "verbatim"
            )
        if value is None:
            continue
        try:
            out[name] = check(value)
        except InvalidOptionError as exc:
            raise InvalidOptionError(f"{where}: {exc}" if where else str(exc)) from None
    return out


def merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    return merged


def is_deterministic(options: Mapping[str, Any]) -> bool:
    """Temperature 0 or an explicit seed: the same request gives the same output."""
    return options.get("temperature") == 0.0 or "seed" in options
