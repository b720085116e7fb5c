"""``Secret``: a string that never shows itself (API keys, the embedded server's key)."""

from __future__ import annotations


class Secret:
    """A string that never shows itself in a repr, a str or a traceback's locals.

    ``reveal()`` is the one way to read it; call it only where the value is
    sent (an HTTP header, a client's constructor), never to build a message.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__
