"""What every span has in common: its parts, its content id, its rendering.

Two walks go over spans' parts, both depth first and iterative (an explicit
stack), so a chain of 10,000 nested components does not reach Python's
recursion limit:

- ``walk_ids``: content ids, each span's after its parts'. ``span_id`` and
  ``compile()`` (which adds a graph node per span there) both walk with it.
- ``render_reference``: the reference render. ``render_span`` tries a
  component class's compiled render first (``_fastrender``: the one fast
  path, tested equal to the reference).

Span paths (``Report.parts()[2].action``) name where a walk is, for errors
and for spans of a run; ``PathTracker`` keeps them as frames and makes their
text only when asked. ``docs/design/rendering.md`` describes all three.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from ._cblock import CBlock
from ._digest import canonical_json, digest
from ._errors import (
    CycleError,
    MissingProducerError,
    NotASpanError,
    SpanError,
    ThunkNotDoneError,
)
from ._prompt import Prompt, Segment, segment
from ._thunk import ModelOutputThunk, ThunkState

if TYPE_CHECKING:
    from ._component import Span


@runtime_checkable
class ComponentLike(Protocol):
    """The component protocol: any class with these three methods is a component.

    - ``parts()`` returns the spans the component is made of; it is the one
      source of truth for the graph.
    - ``render()`` returns a ``Prompt`` built only from the component's own
      text and the renders of ``parts()`` (use ``render_span(part)``).
    - ``parse_output(text)`` turns model text into the component's output.

    Optionally ``params()`` returns a JSON-serialisable mapping of everything
    else that changes the prompt; without it, the instance's non-span
    attributes are used for the content id.
    """

    def parts(self) -> Sequence[Any]: ...

    def render(self) -> Prompt: ...

    def parse_output(self, text: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class Text:
    """Literal text in a component's render items. ``label`` text is shown only to
    completion-style engines (role prefixes such as ``"user: "``)."""

    text: str
    label: bool = False


#: Each component class's compiled render (``_fastrender``), by exact class: a
#: ``Prompt``, or ``None`` for a shape it does not handle (then the reference walk
#: renders). Filled as component classes with a template are made.
FAST_RENDERS: dict[type, Callable[[Any], Prompt | None]] = {}

# What a template field is, in a component class's render steps.
STEP_NONE, STEP_PART, STEP_LIST, STEP_PARAM = range(4)

# What kind of span a type is, decided once per type (protocol checks are slow).
NOT_SPAN, BLOCK, THUNK, MODEL, CUSTOM = range(5)
_KINDS: dict[type, int] = {}


def span_type(obj: object) -> int:
    cls = type(obj)
    kind = _KINDS.get(cls)
    if kind is None:
        if issubclass(cls, CBlock):
            kind = BLOCK
        elif issubclass(cls, ModelOutputThunk):
            kind = THUNK
        elif hasattr(cls, "_sg_render_items"):
            kind = MODEL
        elif isinstance(obj, ComponentLike) and not isinstance(obj, type):
            kind = CUSTOM
        else:
            kind = NOT_SPAN
        _KINDS[cls] = kind
    return kind


def is_span(obj: object) -> bool:
    return span_type(obj) != NOT_SPAN


def span_label(span: object) -> str:
    if isinstance(span, ModelOutputThunk):
        return span._label()
    return type(span).__name__


def children_of(span: Any) -> Sequence[Any]:
    """The parts of ``span`` (a part that is not a span is refused when it is walked
    in turn). A ``SpanError`` raised here has no path yet; the walk adds it (``.at``)."""
    kind = span_type(span)
    if kind == BLOCK:
        return ()
    if kind == THUNK:
        if span.producer is None:
            raise MissingProducerError(
                "thunk has no producer; declare generations with spangraph.generate(action)"
            )
        parts: Sequence[Any] = span.producer.inputs()
        return parts
    if kind == NOT_SPAN:
        raise NotASpanError(
            f"{type(span).__name__} is not a span (expected CBlock, Component or "
            "ModelOutputThunk; wrap text in CBlock)"
        )
    parts = span.parts()
    return parts


def _step(parent: object, index: int, count: int) -> str:
    """The span-path step from ``parent`` to its part ``index`` (of ``count``)."""
    if isinstance(parent, ModelOutputThunk):
        if parent.producer is not None and parent.producer.kind != "generation":
            return f".inputs[{index}]"
        return ".action" if index == count - 1 else f".state[{index}]"
    return _PART_STEPS[index] if index < len(_PART_STEPS) else f".parts()[{index}]"


#: The step texts of a component's first parts, made once (every span path has them).
_PART_STEPS = tuple(f".parts()[{index}]" for index in range(64))


#: The kinds of node that run: a thunk's producer's kind. A run starts, counts and
#: traces these (they have attempts and spans); blocks and components are pure.
WORK_KINDS = frozenset({"generation", "task", "tool", "sampler"})


def node_kind(span: object) -> str:
    """A node's kind: ``block``, ``component``, or a thunk's producer's (``WORK_KINDS``)."""
    if isinstance(span, CBlock):
        return "block"
    if isinstance(span, ModelOutputThunk):
        return span.producer.kind if span.producer is not None else "generation"
    return "component"


# -- content ids -------------------------------------------------------------------------


def id_from_parts(span: Any, part_ids: Sequence[str]) -> str:
    """The content id of ``span`` given the ids of its parts: the id cached on the
    span, else computed and cached there (custom components are never cached: they
    may be mutable).

    A ``SpanError`` raised here has no path yet; the walk adds it (``.at``).
    """
    kind = span_type(span)
    if kind == BLOCK:
        block_id: str = span.id
        return block_id
    if kind == THUNK:
        value: str | None = span._id
        if value is None:
            producer = span.producer
            value = span._id = digest(producer.kind, "thunk", producer.params(), part_ids)
        return value
    if kind == MODEL:
        private = span.__pydantic_private__
        value = private["_id"]
        if value is None:
            params = span._sg_params_json()
            value = private["_id"] = digest("component", _class_key(type(span)), params, part_ids)
        return value
    return digest("component", _class_key(type(span)), _params_json(span), part_ids)


_CLASS_KEYS: dict[type, str] = {}


def _class_key(cls: type) -> str:
    key = _CLASS_KEYS.get(cls)
    if key is None:
        key = _CLASS_KEYS[cls] = f"{cls.__module__}.{cls.__qualname__}"
    return key


def _params_json(span: object) -> str:
    params = getattr(span, "params", None)
    if callable(params):
        value = params()
    else:
        value = {k: v for k, v in sorted(vars(span).items()) if not _holds_span(v)}
    return canonical_json(value, what=f"{type(span).__name__} parameters")


def _holds_span(value: object) -> bool:
    if is_span(value):
        return True
    return isinstance(value, list | tuple) and any(is_span(v) for v in value)


def cached_id(span: Any) -> str | None:
    """The id already computed for ``span`` (custom components are never cached:
    they may be mutable)."""
    kind = span_type(span)
    value: str | None = None
    if kind == BLOCK:
        value = span.id
    elif kind == THUNK:
        value = span._id
    elif kind == MODEL:
        value = span.__pydantic_private__["_id"]
    return value


class SpanIds(dict[int, str]):
    """The content ids a walk has found, by ``id()`` of the span (a span need not be
    hashable: a custom component may not be).

    ``add`` also holds the span, so that no ``id()`` is reused while the ids are
    kept (a custom component's ``parts()`` may make new spans each time it is called).
    """

    __slots__ = ("_alive",)

    def __init__(self) -> None:
        super().__init__()
        self._alive: list[object] = []

    def add(self, span: object, value: str) -> None:
        self[id(span)] = value
        self._alive.append(span)


#: Called by ``walk_ids`` for each span it walks: the span, its id, its path frame and
#: its parts' ids.
Visit = Callable[[Any, str, int, list[str]], None]


def walk_ids(
    root: object,
    *,
    frame: int,
    paths: PathTracker,
    ids: SpanIds,
    known: Callable[[Any], str | None] = cached_id,
    visit: Visit | None = None,
) -> str:
    """The content id of ``root``, from a depth-first walk of the parts below it.

    A span's id is computed after its parts' (in post-order, so every part
    before the spans that use it) and once per object: ``ids`` keeps every id
    the walk finds, and the walk does not go below a span whose id
    ``known(span)`` gives (by default, a span whose id is cached on it).
    ``visit`` is called for each span walked, in that order: ``compile()``
    adds its graph nodes there. ``frame`` is the root's frame in ``paths``;
    the walk adds a frame for each span it goes into, and errors (a cycle, a
    part that is not a span, a parameter that cannot be digested) name the
    span path where they were found.
    """
    # A stack entry: [span, its path frame, its parts, index of the next part to visit].
    stack: list[list[Any]] = [[root, frame, None, 0]]
    on_path = {id(root)}
    while stack:
        top = stack[-1]
        span, frame, parts, index = top
        if parts is None:
            try:
                parts = top[2] = children_of(span)
            except SpanError as exc:
                raise exc.at(paths.path(frame)) from None
        if index < len(parts):
            top[3] = index + 1
            part = parts[index]
            if id(part) in ids:
                continue
            try:
                found = known(part)
            except SpanError as exc:  # a block's id, computed on first use, found it bad
                raise exc.at(paths.path(frame) + _step(span, index, len(parts))) from None
            if found is not None:
                ids.add(part, found)
            elif id(part) in on_path:
                where = paths.path(frame) + _step(span, index, len(parts))
                raise CycleError(_cycle_text(stack, part), path=where)
            else:
                on_path.add(id(part))
                stack.append([part, paths.add(frame, span, index), None, 0])
            continue
        stack.pop()
        on_path.discard(id(span))
        part_ids = [ids[id(part)] for part in parts]
        try:
            value = id_from_parts(span, part_ids)
        except SpanError as exc:
            raise exc.at(paths.path(frame)) from None
        ids.add(span, value)
        if visit is not None:
            visit(span, value, frame, part_ids)
    return ids[id(root)]


def span_id(root: object) -> str:
    """The content id of ``root``, computing (and caching) the ids below it."""
    known = cached_id(root)
    if known is not None:
        return known
    paths = PathTracker()
    return walk_ids(root, frame=paths.root(span_label(root)), paths=paths, ids=SpanIds())


def _cycle_text(stack: Sequence[Sequence[Any]], again: object) -> str:
    names: list[str] = []
    started = False
    for span, *_ in stack:
        if span is again:
            started = True
        if started:
            names.append(span_label(span))
    names.append(span_label(again))
    return "cycle: " + " -> ".join(names)


# -- span paths --------------------------------------------------------------------------


def cut_path(path: str, limit: int) -> str:
    """``path`` if it has at most ``limit`` characters, else ``…`` and its end (``_end``)."""
    return path if len(path) <= limit else "…" + _end(path, limit)


def _end(path: str, limit: int) -> str:
    """The last ``limit`` characters of ``path`` or fewer, from the first ``.`` in them
    (where a step starts; with none, exactly the last ``limit``)."""
    start = len(path) - limit
    dot = path.find(".", start)
    return path[dot if dot >= 0 else start :]


class TailMemo:
    """``PathTracker.tail``'s memo, for one run and one limit: by frame, the end of its
    path without the ``…`` (``texts``), and the frames whose path was cut (``cut``).

    Two tables, not a ``(text, cut)`` pair per frame: a traced run memoises a
    couple of frames per node and keeps them while it runs, and each pair
    would be one more container that the collector's young generation counts,
    which brings full collections of the whole heap sooner
    (``docs/design/scheduler.md``, "What a traced run keeps"). A frame number is
    in ``cut`` only once its text is in ``texts``.
    """

    __slots__ = ("cut", "texts")

    def __init__(self) -> None:
        self.texts: dict[int, str] = {}
        self.cut: set[int] = set()


class PathTracker:
    """Rebuilds the span path of a walk's frame only when it is asked for.

    Each frame records its parent frame, the parent span and the index of
    the part it is; the text (``.parts()[2]``, ``.action``) is made on demand.
    """

    __slots__ = ("indexes", "labels", "parents", "spans", "steps")

    def __init__(self) -> None:
        self.parents: list[int] = []
        self.spans: list[object] = []
        self.indexes: list[int] = []
        self.labels: dict[int, str] = {}
        #: Step texts already made, by frame: frames near the roots are on many paths.
        self.steps: dict[int, str] = {}

    def root(self, label: str) -> int:
        frame = len(self.parents)
        self.parents.append(-1)
        self.spans.append(None)
        self.indexes.append(-1)
        self.labels[frame] = label
        return frame

    def add(self, parent: int, parent_span: object, index: int) -> int:
        frame = len(self.parents)
        self.parents.append(parent)
        self.spans.append(parent_span)
        self.indexes.append(index)
        return frame

    def path(self, frame: int, limit: int | None = None) -> str:
        """The path to ``frame``; with ``limit``, only its last ``limit`` steps after ``…``."""
        out: list[str] = []
        parents = self.parents
        left = limit if limit is not None else -1
        while frame >= 0:
            if left == 0:
                out.append("…")
                break
            left -= 1
            out.append(self.step(frame))
            frame = parents[frame]
        out.reverse()
        return "".join(out)

    def tail(self, frame: int, limit: int, memo: TailMemo) -> str:
        """``cut_path(path(frame), limit)``, built from the parent frame's tail: cutting
        a path's end as each step is added gives the same end as cutting the whole
        path, since the cut (``_end``) looks only at the last ``limit`` characters.

        ``memo`` holds, by frame, the tail's text without the ``…``, and which
        frames were cut. Every frame on the way up is memoised, so over a whole
        graph each frame is visited once, whichever order the nodes are asked in
        (a run asks bottom-up: the deepest nodes finish first), and a frame costs
        a concatenation, not a walk of its steps.
        """
        texts, cut = memo.texts, memo.cut
        text = texts.get(frame)
        if text is None:
            chain: list[int] = []
            at = frame
            while at >= 0 and at not in texts:
                chain.append(at)
                at = self.parents[at]
            text, cutting = (texts[at], at in cut) if at >= 0 else ("", False)
            for at in reversed(chain):
                text += self.step(at)
                if len(text) > limit:
                    text, cutting = _end(text, limit), True
                texts[at] = text
                if cutting:
                    cut.add(at)
        return "…" + text if frame in cut else text

    def step(self, frame: int) -> str:
        """The text of one step (the root's label for a root frame), made once."""
        text = self.steps.get(frame)
        if text is None:
            if self.parents[frame] < 0:
                text = self.labels[frame]
            else:
                span, count = self.spans[frame], 0
                if isinstance(span, ModelOutputThunk) and span.producer is not None:
                    count = len(span.producer.inputs())  # checked when the walk made the frame
                text = _step(span, self.indexes[frame], count)
            self.steps[frame] = text
        return text


# -- rendering ---------------------------------------------------------------------------


def render_span(root: object) -> Prompt:
    """Render any span into a ``Prompt``: with its class's compiled render when it
    has one and it handles the span's shape, else with ``render_reference``."""
    fast = FAST_RENDERS.get(type(root))
    if fast is not None:
        prompt = fast(root)
        if prompt is not None:
            return prompt
    return render_reference(root)


def render_reference(root: object) -> Prompt:
    """The reference render: every way of rendering gives what this gives.

    A block is its text; a finished thunk is its text (a thunk not done is an
    error); a component is its render items (``_sg_render_items``: literal
    ``Text`` and parts, in prompt order) expanded in turn, each segment
    taking the id of the span it came from (literal text belongs to the
    component whose items hold it) and the innermost chat role around it
    (``_sg_message_role``). A component of the component protocol renders
    itself (``render()``), checked to use only what ``parts()`` returns.
    Span paths for errors are rebuilt only when an error happens.
    """
    out: list[Segment] = []
    # Work items: (item, owner id, role, where); ``where`` is (parent where, parent
    # component, item), from which an error's span path is rebuilt.
    stack: list[tuple[Any, str, str | None, Any]] = [(root, "", None, None)]
    while stack:
        item, owner, role, where = stack.pop()
        if type(item) is Text:
            if item.text:
                out.append(segment(item.text, owner, role=role, label=item.label))
            continue
        kind = span_type(item)
        if kind == BLOCK:
            if item.text:
                out.append(segment(item.text, item.id, cache=item.cache, role=role))
        elif kind == THUNK:
            if item.state is not ThunkState.DONE:
                raise ThunkNotDoneError(
                    f"cannot render {item!r}: {item._not_done_reason()}",
                    path=_render_path(root, where),
                )
            out.append(segment(item.value, span_id(item), role=role))
        elif kind == MODEL:
            own, own_role = span_id(item), item._sg_message_role()
            inner_role = role if own_role is None else own_role
            here = (where, item)
            for sub in reversed(item._sg_render_items()):
                stack.append((sub, own, inner_role, (here, sub)))
        elif kind == CUSTOM:
            out.extend(_render_custom(item, role, _render_path(root, where)))
        else:
            raise NotASpanError(
                f"not a span: {type(item).__name__}", path=_render_path(root, where)
            )
    return Prompt(tuple(out))


def _render_path(root: object, where: Any) -> str:
    """The span path of a render work item (see ``render_reference``)."""
    steps: list[str] = []
    while where is not None:
        (parent_where, parent), item = where
        index = next((i for i, p in enumerate(parent.parts()) if p is item), None)
        steps.append(_step(parent, index, 0) if index is not None else "")
        where = parent_where
    return span_label(root) + "".join(reversed(steps))


def _render_custom(component: ComponentLike, role: str | None, path: str) -> list[Segment]:
    prompt = component.render()
    if not isinstance(prompt, Prompt):
        raise SpanError(
            f"{type(component).__name__}.render() returned {type(prompt).__name__}, not a Prompt",
            path=path,
        )
    allowed = _ids_below(component)
    for index, seg in enumerate(prompt.segments):
        if seg.span_id not in allowed:
            name = type(component).__name__
            raise SpanError(
                f"{name}.render() uses the text of {_where_held(component, seg.span_id, index)}, "
                "which parts() does not return; parts() must list every span that render() "
                "uses (the graph is built from parts())",
                path=path,
            )
    return [s if s.role or role is None else s._replace(role=role) for s in prompt.segments]


def _where_held(component: object, span_id_: str, index: int) -> str:
    """Where ``component`` holds the span with id ``span_id_``: the attribute (and index)
    it sits in, as a path such as ``Report.extra`` or ``Report.notes[2]``; else the
    prompt segment it was found in."""
    name = type(component).__name__
    values = getattr(component, "__dict__", {})
    for attribute, value in values.items():
        items = value if isinstance(value, list | tuple) else (value,)
        for position, item in enumerate(items):
            if is_span(item) and span_id(item) == span_id_:
                where = f"[{position}]" if items is value else ""
                return f"{type(item).__name__} {name}.{attribute}{where}"
    return f"a span outside it (prompt segment {index})"


def _ids_below(root: object) -> set[str]:
    seen: set[str] = set()
    stack = [root]
    while stack:
        span = stack.pop()
        sid = span_id(span)
        if sid in seen:
            continue
        seen.add(sid)
        if not isinstance(span, ModelOutputThunk):
            stack.extend(children_of(span))
    return seen


def own_segment(component: object, text: str) -> Segment:
    """A segment of a custom component's own text (for use in ``render()``)."""
    return segment(text, span_id(component))


def as_span(value: object, *, path: str = "") -> Span:
    """Coerce ``str`` to ``CBlock``; pass spans through; refuse anything else."""
    if isinstance(value, str):
        return CBlock(value)
    if is_span(value):
        return cast("Span", value)
    raise NotASpanError(
        f"{type(value).__name__} is not a span (expected str, CBlock, Component or "
        "ModelOutputThunk)",
        path=path,
    )
