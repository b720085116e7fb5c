"""What every span has in common: its parts, its content id, its rendering.

All three walks here are iterative (an explicit stack), so a chain of
10,000 nested components does not reach Python's recursion limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._cblock import CBlock
from ._digest import canonical_json, digest
from ._errors import CycleError, MissingProducerError, NotASpanError, SpanError
from ._prompt import Prompt, Segment
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


#: Each component class's render without the general walk (``Prompt``, or ``None``
#: for a shape it does not handle): compiled from the template (``_fastrender``), or
#: ``render_flat``. Filled as component classes are made; looked up by exact class.
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


def children_of(span: object, path: str | Callable[[], str] = "") -> Sequence[Any]:
    """The parts of ``span``, checked to be spans. ``path`` (or a function that
    builds it, called only for an error) names where ``span`` is."""
    if isinstance(span, CBlock):
        return ()
    if isinstance(span, ModelOutputThunk):
        if span.producer is None:
            raise MissingProducerError(
                "thunk has no producer; declare generations with spangraph.generate(action)",
                path=_resolve(path) or span_label(span),
            )
        parts = span.producer.inputs()
    elif span_type(span) != NOT_SPAN:
        parts = span.parts()  # type: ignore[attr-defined]
    else:
        raise NotASpanError(f"not a span: {type(span).__name__}", path=_resolve(path))
    kinds = _KINDS
    for i, part in enumerate(parts):
        if kinds.get(type(part)) in (None, NOT_SPAN) and not is_span(part):
            where = f"{_resolve(path) or span_label(span)}{_step(span, i, len(parts))}"
            raise NotASpanError(
                f"{type(part).__name__} is not a span (expected CBlock, Component or "
                "ModelOutputThunk; wrap text in CBlock)",
                path=where,
            )
    return parts


def _resolve(path: str | Callable[[], str]) -> str:
    return path if isinstance(path, str) else path()


def _step(parent: object, index: int, count: int) -> str:
    if isinstance(parent, ModelOutputThunk):
        if parent.producer is not None and parent.producer.kind != "generation":
            return f".inputs[{index}]"
        return ".action" if index == count - 1 else f".state[{index}]"
    return _PART_STEPS[index] if index < len(_PART_STEPS) else f".parts()[{index}]"


#: The step texts of a component's first parts, made once (every span path has them).
_PART_STEPS = tuple(f".parts()[{index}]" for index in range(64))


#: The kinds of node that run: a thunk's producer's kind. A run starts, counts and
#: traces these (they have attempts and spans); blocks and components are pure.
WORK_KINDS = frozenset({"generation", "task", "sampler"})


def node_kind(span: object) -> str:
    """A node's kind: ``block``, ``component``, or a thunk's producer's (``WORK_KINDS``)."""
    if isinstance(span, CBlock):
        return "block"
    if isinstance(span, ModelOutputThunk):
        return span.producer.kind if span.producer is not None else "generation"
    return "component"


def node_digest(span: object, child_ids: Sequence[str]) -> str:
    """The content id of ``span`` given the ids of its parts.

    A ``SpanError`` raised here has no path yet; the walk adds it (``.at``).
    """
    kind = _KINDS.get(type(span)) or span_type(span)
    if kind == MODEL:
        return digest("component", _class_key(type(span)), span._sg_params_json(), child_ids)  # type: ignore[attr-defined]
    if kind == BLOCK:
        return span.id  # type: ignore[attr-defined,no-any-return]
    if kind == THUNK:
        producer = span.producer  # type: ignore[attr-defined]
        return digest(producer.kind, "thunk", producer.params(), child_ids)
    return digest("component", _class_key(type(span)), _params_json(span), child_ids)


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


def cached_id(span: object) -> str | None:
    """The id already computed for ``span`` (custom components are never cached:
    they may be mutable)."""
    kind = _KINDS.get(type(span)) or span_type(span)
    if kind == BLOCK:
        return span.id  # type: ignore[attr-defined,no-any-return]
    if kind == THUNK:
        return span._id  # type: ignore[attr-defined,no-any-return]
    if kind == MODEL:
        return span.__pydantic_private__["_id"]  # type: ignore[attr-defined,no-any-return]
    return None


def _store_id(span: object, value: str) -> None:
    kind = span_type(span)
    if kind == THUNK:
        span._id = value  # type: ignore[attr-defined]
    elif kind == MODEL:
        span.__pydantic_private__["_id"] = value  # type: ignore[attr-defined]


def cut_path(path: str, limit: int) -> str:
    """``path`` if it has at most ``limit`` characters, else ``…`` and its end: the
    last ``limit`` characters or fewer, from the first ``.`` in them (where a step
    starts; with none, exactly the last ``limit``)."""
    if len(path) <= limit:
        return path
    start = len(path) - limit
    dot = path.find(".", start)
    return "…" + path[dot if dot >= 0 else start :]


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
        self.parents.append(parent)
        self.spans.append(parent_span)
        self.indexes.append(index)
        return len(self.parents) - 1

    def path(self, frame: int, limit: int | None = None) -> str:
        """The path to ``frame``; with ``limit``, only its last ``limit`` steps after ``…``."""
        out: list[str] = []
        parents, known = self.parents, self.steps
        left = limit if limit is not None else -1
        while frame >= 0:
            if left == 0:
                out.append("…")
                break
            left -= 1
            out.append(known.get(frame) or self.step(frame))
            frame = parents[frame]
        out.reverse()
        return "".join(out)

    def tail(self, frame: int, limit: int, memo: dict[int, tuple[str, bool]]) -> str:
        """The end of the path to ``frame``: the whole path if it has at most ``limit``
        characters, else ``…`` and its last ``limit`` characters or fewer, from where a
        step starts (the first ``.`` in them; with none, exactly the last ``limit``).
        That is ``cut_path(path(frame), limit)``, built from the parent frame's tail.

        ``memo`` holds, by frame, the tail's text without the ``…`` and whether it
        was cut. Every frame on the way up is memoised, so over a whole graph each
        frame is visited once, whichever order the nodes are asked in (a run asks
        bottom-up: the deepest nodes finish first), and a frame costs a
        concatenation, not a walk of its steps.
        """
        known = memo.get(frame)
        if known is None:
            chain: list[int] = []
            parents = self.parents
            at = frame
            while at >= 0:
                known = memo.get(at)
                if known is not None:
                    break
                chain.append(at)
                at = parents[at]
            text, cut = known if known is not None else ("", False)
            steps, step = self.steps, self.step
            for at in reversed(chain):
                text += steps.get(at) or step(at)
                if len(text) > limit:
                    start = len(text) - limit
                    dot = text.find(".", start)
                    text, cut = text[dot if dot >= 0 else start :], True
                memo[at] = (text, cut)
        else:
            text, cut = known
        return "…" + text if cut else text

    def step(self, frame: int) -> str:
        """The text of one step (the root's label for a root frame), made once."""
        text = self.steps.get(frame)
        if text is None:
            if self.parents[frame] < 0:
                text = self.labels[frame]
            else:
                span, index = self.spans[frame], self.indexes[frame]
                if not isinstance(span, ModelOutputThunk):
                    text = _PART_STEPS[index] if index < len(_PART_STEPS) else _step(span, index, 0)
                else:
                    count = 0
                    if span.producer is not None:
                        count = len(span.producer.inputs())  # checked when the walk made the frame
                    text = _step(span, index, count)
            self.steps[frame] = text
        return text


def span_id(root: object) -> str:
    """The content id of ``root``, computing (and caching) the ids below it."""
    known = cached_id(root)
    if known is not None:
        return known
    paths = PathTracker()
    # A frame is [span, path frame, parts, index of the next part to visit].
    stack: list[list[Any]] = [[root, paths.root(span_label(root)), None, 0]]
    on_path: set[int] = {id(root)}
    local: dict[int, str] = {}
    while stack:
        top = stack[-1]
        span, frame, kids, nxt = top
        if kids is None:
            kids = top[2] = children_of(span, partial(paths.path, frame))
        if nxt < len(kids):
            top[3] = nxt + 1
            kid = kids[nxt]
            try:
                if id(kid) in local or cached_id(kid) is not None:
                    continue
            except SpanError as exc:  # a block's id, computed on first use, found it bad
                raise exc.at(paths.path(frame) + _step(span, nxt, len(kids))) from None
            if id(kid) in on_path:
                raise CycleError(
                    _cycle_text(stack, kid), path=paths.path(frame) + _step(span, nxt, len(kids))
                )
            on_path.add(id(kid))
            stack.append([kid, paths.add(frame, span, nxt), None, 0])
            continue
        stack.pop()
        on_path.discard(id(span))
        child_ids = [local.get(id(k)) or cached_id(k) or "" for k in kids]
        try:
            value = node_digest(span, child_ids)
        except SpanError as exc:
            raise exc.at(paths.path(frame)) from None
        local[id(span)] = value
        _store_id(span, value)
    return local[id(root)]


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


def render_span(root: object) -> Prompt:
    """Render any span into a ``Prompt``.

    Pydantic components expose their template as render items (literal text
    and parts) and are expanded here without recursion; custom components'
    own ``render()`` is called, and checked to use only what ``parts()``
    returns. Span paths for errors are rebuilt only when an error happens.
    """
    fast = FAST_RENDERS.get(type(root))
    if fast is not None:
        flat = fast(root)
        if flat is not None:
            return flat
    out: list[Segment] = []
    append = out.append
    kinds = _KINDS
    new = tuple.__new__  # Segment(...) without its Python-level __new__
    done = ThunkState.DONE
    # Work items: (item, owner id, role, where); ``where`` is (parent where,
    # parent component, item) from which an error's span path is rebuilt.
    stack: list[tuple[Any, str, str | None, Any]] = [(root, "", None, None)]
    pop, push = stack.pop, stack.append
    while stack:
        item, owner, role, where = pop()
        cls = type(item)
        if cls is Text:
            if item.text:
                append(new(Segment, (item.text, owner, False, role, item.label)))
            continue
        kind = kinds.get(cls) or span_type(item)
        if kind == THUNK:
            if item.state is not done:
                from ._errors import ThunkNotDoneError

                raise ThunkNotDoneError(
                    f"cannot render {item!r}: {item._not_done_reason()}",
                    path=_render_path(root, where),
                )
            append(new(Segment, (item._value, item._id or span_id(item), False, role, False)))
        elif kind == BLOCK:
            if item.text:
                append(new(Segment, (item.text, item._id or item.id, item.cache, role, False)))
        elif kind == MODEL:
            own = item.__pydantic_private__["_id"] or span_id(item)
            items, own_role = item._sg_render_plan()
            if own_role is None:
                own_role = role
            here = (where, item)
            for sub in items:
                push((sub, own, own_role, (here, sub)))
        elif kind == CUSTOM:
            out.extend(_render_custom(item, role, _render_path(root, where)))
        else:
            raise NotASpanError(
                f"not a span: {type(item).__name__}", path=_render_path(root, where)
            )
    return Prompt(tuple(out))


def render_flat(component: Any) -> Prompt | None:
    """The usual shape of a component that arranges its render items in code (or has
    no template), without the general walk: render items that are all literal text,
    blocks and done thunks. ``None`` for anything else (a nested component, a thunk
    not done): the walk renders it, or says why not. (Classes with a template have a
    compiled render instead: see ``_fastrender``.)"""
    own = component.__pydantic_private__["_id"] or span_id(component)
    items, role = component._sg_render_plan()
    return _flat_prompt(reversed(items), own, role)


def _flat_prompt(items: Iterable[Any], own: str, role: str | None) -> Prompt | None:
    """``render_flat`` from render items in prompt order."""
    kinds, new, done = _KINDS, tuple.__new__, ThunkState.DONE
    out: list[Segment] = []
    for item in items:
        cls = type(item)
        if cls is Text:
            if item.text:
                out.append(new(Segment, (item.text, own, False, role, item.label)))
            continue
        kind = kinds.get(cls)
        if kind == THUNK and item.state is done:
            out.append(new(Segment, (item._value, item._id or span_id(item), False, role, False)))
        elif kind == BLOCK:
            if item.text:
                out.append(new(Segment, (item.text, item._id or item.id, item.cache, role, False)))
        else:
            return None
    return Prompt(tuple(out))


def _render_path(root: object, where: Any) -> str:
    """The span path of a render work item (see ``render_span``)."""
    steps: list[str] = []
    while where is not None:
        (parent_where, parent), item = where
        index = next((i for i, p in enumerate(parent.parts()) if p is item), None)
        steps.append(f".parts()[{index}]" if index is not None else "")
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
    if role is None:
        return list(prompt.segments)
    return [Segment(s.text, s.span_id, s.cache, s.role or role, s.label) for s in prompt.segments]


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
    return Segment(text, span_id(component))


def as_span(value: object, *, path: str = "") -> Span:
    """Coerce ``str`` to ``CBlock``; pass spans through; refuse anything else."""
    if isinstance(value, str):
        return CBlock(value)
    if is_span(value):
        return value  # type: ignore[return-value]
    raise NotASpanError(
        f"{type(value).__name__} is not a span (expected str, CBlock, Component or "
        "ModelOutputThunk)",
        path=path,
    )
