"""A rendered prompt: ordered segments that remember the span each came from."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, NamedTuple


class Segment(NamedTuple):
    """One piece of a rendered prompt (a named tuple: prompts are built per generation).

    ``span_id`` is the content id of the span whose render produced the text
    (template text belongs to the component that owns the template).
    ``cache`` is true for text of a ``CBlock(cache=True)``: engines that keep
    KV state use the boundaries of such segments as reusable prefixes.
    ``role`` is set inside chat messages; ``label`` marks text that only a
    completion-style prompt shows (``"user: "``), which chat engines drop.
    """

    text: str
    span_id: str
    cache: bool = False
    role: str | None = None
    label: bool = False


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """A chat message assembled from consecutive segments of one role."""

    role: str
    content: str


def segment(
    text: str,
    span_id: str,
    *,
    cache: bool = False,
    role: str | None = None,
    label: bool = False,
) -> Segment:
    """A new segment: the one way spangraph makes one. Renders call it, a compiled
    render writes what it makes as source (``segment_source``), and a segment copied
    with a change is ``seg._replace(...)``, so a field is added to ``Segment`` alone."""
    return Segment(text, span_id, cache=cache, role=role, label=label)


def segment_source(**fields: str) -> str:
    """Python source that builds a segment as the plain tuple a prompt may hold (see
    ``Prompt``), for generated code (``_fastrender``): each field's value is the
    expression given for it in ``fields``, else the field's default."""
    unknown = set(fields) - set(Segment._fields)
    if unknown:
        raise TypeError(f"Segment has no field(s) {', '.join(sorted(unknown))}")
    values = [
        fields[name] if name in fields else repr(Segment._field_defaults[name])
        for name in Segment._fields
    ]
    return f"({', '.join(values)},)"


#: A segment's text, or its plain tuple's (read in C).
segment_text = itemgetter(Segment._fields.index("text"))


class Prompt:
    """A rendered prompt: ordered ``Segment``s (immutable). ``text`` is their
    concatenation; ``segments`` the segments, each with the id of the span it
    came from and its ``cache`` flag. Prompts concatenate with ``+``.
    """

    # A prompt made by a compiled render (``_fastrender``) holds its segments as
    # plain tuples, in ``Segment``'s field order (``segment_source``), and
    # ``segments`` makes the ``Segment`` objects once, when first asked for:
    # most prompts are only ever read as ``text``.

    __slots__ = ("_raw", "_segments", "text")

    def __init__(self, segments: tuple[Segment, ...] = ()) -> None:
        #: The segments, or plain tuples of their fields (see above).
        self._raw: tuple[tuple[Any, ...], ...] = segments
        self._segments: tuple[Segment, ...] | None = segments
        #: The segments' text, joined (made with the prompt: engines read it per call).
        self.text: str = "".join(map(segment_text, segments))

    @property
    def segments(self) -> tuple[Segment, ...]:
        segments = self._segments
        if segments is None:
            segments = self._segments = tuple(map(Segment._make, self._raw))
        return segments

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Prompt) and other._raw == self._raw  # a Segment is its tuple

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"Prompt({self.segments!r})"

    def __iter__(self) -> Iterator[Segment]:
        return iter(self.segments)

    def __len__(self) -> int:
        return len(self._raw)

    def __add__(self, other: Prompt) -> Prompt:
        return Prompt(self.segments + other.segments)

    def span_ids(self) -> list[str]:
        """Distinct source span ids, in order of first appearance."""
        return list(dict.fromkeys(s.span_id for s in self.segments))

    def cached_prefix(self) -> tuple[Segment, ...]:
        """The leading run of ``cache=True`` segments (empty when the prompt starts
        uncached). Labels (a message's ``"user: "``, the line breaks between messages)
        are the format around content, not content: they join the run where cached
        content follows them, so a chat whose earlier messages are cached has them all
        in its prefix."""
        end = 0
        for index, seg in enumerate(self.segments):
            if seg.cache:
                end = index + 1
            elif not seg.label:
                break
        return self.segments[:end]

    @property
    def is_chat(self) -> bool:
        """Whether any segment has a chat role (a message, a chat history)."""
        return any(seg.role for seg in self.segments)

    def as_messages(self, default_role: str = "user") -> list[ChatTurn]:
        """Group segments into chat turns by role, dropping completion-only labels."""
        turns: list[ChatTurn] = []
        role: str | None = None
        buf: list[str] = []
        for seg in self.segments:
            if seg.label:
                continue
            seg_role = seg.role or default_role
            if seg_role != role and buf:
                turns.append(ChatTurn(role or default_role, "".join(buf).strip()))
                buf = []
            role = seg_role
            buf.append(seg.text)
        if buf:
            turns.append(ChatTurn(role or default_role, "".join(buf).strip()))
        return [t for t in turns if t.content]

    @staticmethod
    def join(prompts: Sequence[Prompt]) -> Prompt:
        return Prompt(tuple(seg for p in prompts for seg in p.segments))
