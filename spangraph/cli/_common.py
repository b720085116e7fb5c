"""What the commands share: failing without a traceback, spangraph's folder, units."""

from __future__ import annotations

import pathlib
import re
import time
from typing import NoReturn

import click


def fail(message: str) -> NoReturn:
    """Stop the command: ``Error: message`` on stderr, exit status 1 (a usage error,
    exit status 2, is ``click.UsageError`` / ``click.BadParameter``)."""
    raise click.ClickException(message)


def spangraph_home() -> pathlib.Path:
    """``$SPANGRAPH_HOME`` (default ``~/.cache/spangraph``) as the engines resolve it;
    a setting that cannot be used is a usage error naming the variable."""
    from ..engines import SpangraphHomeError
    from ..engines._internal import spangraph_home as resolve

    try:
        return resolve()
    except SpangraphHomeError as exc:
        raise click.UsageError(str(exc)) from None


# -- units ------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)?", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """An option's duration in seconds: ``90s``, ``15m``, ``12h``, ``30d``, ``2w``
    (seconds without a unit). A click callback: anything else is a usage error."""
    if value is None:
        return None
    match = _DURATION.fullmatch(value.strip())
    if match is None:
        raise click.BadParameter(f"{value!r} is not a duration such as 90s, 15m, 12h, 30d or 2w")
    return float(match.group(1)) * _SECONDS[(match.group(2) or "s").lower()]


def byte_size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """An option's size in bytes: ``500M``, ``2G``, ``1.5GiB``, ``4096`` (powers of
    1024). A click callback: anything else is a usage error."""
    if value is None:
        return None
    match = _SIZE.fullmatch(value.strip())
    if match is None or (match.group(3).lower() == "i" and not match.group(2)):
        raise click.BadParameter(f"{value!r} is not a size such as 4096, 500M, 2G or 1.5GiB")
    return int(float(match.group(1)) * 1024 ** _POWERS[match.group(2).lower()])


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 file``, ``2 files``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def size(n: float) -> str:
    """``1.5 MiB``: a byte count for people."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def ago(when: float | None, now: float | None = None) -> str:
    """``3 h ago``: how long ago a time (seconds since the epoch) was."""
    if when is None:
        return "never"
    return f"{span((now if now is not None else time.time()) - when)} ago"


def span(seconds: float) -> str:
    """``3 h``: a length of time for people."""
    seconds = max(0.0, seconds)
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f} {unit}"
    return f"{seconds:.0f} s"
