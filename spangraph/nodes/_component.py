"""``Component``: a span made of parts, with a template and a typed output."""

from __future__ import annotations

import collections.abc
import copy
import json
import string
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Generic, Self, TypeVar, Union, cast

from pydantic import BaseModel, ConfigDict, PlainValidator, PrivateAttr, ValidationError

from ._cblock import CBlock
from ._digest import check_text
from ._errors import DigestError, ParameterError, TemplateError
from ._fastrender import compile_render
from ._parsing import output_schema, parse_as
from ._prompt import Prompt
from ._span import (
    FAST_RENDERS,
    STEP_LIST,
    STEP_NONE,
    STEP_PARAM,
    STEP_PART,
    ComponentLike,
    Text,
    as_span,
    render_span,
    span_id,
)
from ._thunk import ModelOutputThunk

T = TypeVar("T")

#: Component classes whose output is plain text: no schema, and ``parse_output``
#: returns the text as it is, so the generate protocol skips both. (A set, not a
#: class attribute: this is read per generation, and reading an attribute of a
#: pydantic model class goes through its metaclass's ``__getattr__``.)
TEXT_OUTPUT: set[type] = set()


def _coerce_span(value: Any) -> Any:
    try:
        return as_span(value)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


class Component(BaseModel, Generic[T]):
    """Base class of components: a pydantic model whose span-typed fields are its parts.

    Fields annotated with a span type (``CBlock``, ``ModelOutputThunk``, a
    ``Component`` subclass, ``Span``, or a list of those) are the parts, in
    declaration order; every other field is a parameter. ``template`` (a
    ``str.format`` string) places parts and parameters in the prompt; without
    one, the parts are joined by blank lines. ``T``, the generic parameter,
    is the output type: ``parse_output`` parses into it and engines that
    support constrained decoding receive its JSON schema.

    Components are immutable; their id is a content digest, and equality and
    hashing go by that id.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid")

    template: ClassVar[str | None] = None
    _sg_part_fields: ClassVar[tuple[str, ...]] = ()
    _sg_list_fields: ClassVar[frozenset[str]] = frozenset()
    _sg_param_fields: ClassVar[tuple[str, ...]] = ()
    #: The template as ``(literal text, field, what the field is, format spec)``
    #: steps (``STEP_PART``, ``STEP_LIST``, ``STEP_PARAM``, or ``STEP_NONE``: no
    #: field), decided once per class; ``None`` without a template.
    _sg_template_steps: ClassVar[tuple[tuple[str, str | None, int, str], ...] | None] = None
    _sg_output: ClassVar[dict[type, tuple[Any, dict[str, Any] | None]]] = {}

    _id: str | None = PrivateAttr(default=None)
    _parts: tuple[Any, ...] | None = PrivateAttr(default=None)

    def __init__(self, /, *args: Any, **kwargs: Any) -> None:
        if args:
            names = list(type(self).model_fields)
            if len(args) > len(names):
                raise TypeError(
                    f"{type(self).__name__} takes at most {len(names)} positional arguments "
                    f"({', '.join(names)}), got {len(args)}"
                )
            for name, value in zip(names, args, strict=False):
                if name in kwargs:
                    raise TypeError(f"{type(self).__name__} got two values for {name!r}")
                kwargs[name] = value
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            raise _span_given_to_parameter(type(self), exc, kwargs) or exc from None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._sg_classify()

    @classmethod
    def __pydantic_on_complete__(cls) -> None:
        # A class whose annotations name a class defined later (a forward reference)
        # is complete only once pydantic rebuilds it (``model_rebuild()``, or on its
        # first use): its fields are classified again then, so that a field annotated
        # with a component defined later is a part, not a parameter.
        super().__pydantic_on_complete__()
        if globals().get("Component") is not None:  # (not Component itself, being made)
            cls._sg_classify()

    @classmethod
    def _sg_classify(cls) -> None:
        """Split the fields into parts and parameters, and prepare the class's render."""
        parts: list[str] = []
        lists: set[str] = set()
        params: list[str] = []
        reserved = sorted(set(cls.model_fields) & _RESERVED)
        if reserved:
            raise TemplateError(
                f"{cls.__name__} has field(s) {', '.join(reserved)}, which would hide the "
                "component protocol's methods; rename them (e.g. 'items')"
            )
        for name, info in cls.model_fields.items():
            kind = _span_annotation(info.annotation)
            if kind is None:
                params.append(name)
            else:
                parts.append(name)
                if kind == "many":
                    lists.add(name)
        cls._sg_part_fields = tuple(parts)
        cls._sg_list_fields = frozenset(lists)
        cls._sg_param_fields = tuple(params)
        cls._sg_template_steps = _parse_template(cls) if cls.template is not None else None
        if (
            not _overrides(cls, "parse_output", "output_schema")
            and cls._sg_find_output_type() is str
        ):
            TEXT_OUTPUT.add(cls)
        else:
            TEXT_OUTPUT.discard(cls)
        # A class whose render items come from its template alone gets a render compiled
        # from the template's steps (the fast path); any other renders by the reference walk.
        if cls._sg_template_steps is not None and (
            cls._sg_render_items is Component._sg_render_items
        ):
            FAST_RENDERS[cls] = compile_render(
                cls.__qualname__,
                cls._sg_template_steps,
                own_role=cls._sg_message_role is not Component._sg_message_role,
            )
        else:
            FAST_RENDERS.pop(cls, None)

    # -- the component protocol ------------------------------------------------------

    def parts(self) -> Sequence[Any]:
        """The spans this component is made of, in field declaration order."""
        private = self.__pydantic_private__
        assert private is not None
        parts: tuple[Any, ...] | None = private["_parts"]
        if parts is None:
            out: list[Any] = []
            for name in self._sg_part_fields:
                value = getattr(self, name)
                if value is None:
                    continue
                if name in self._sg_list_fields:
                    out.extend(value)
                else:
                    out.append(value)
            parts = private["_parts"] = tuple(out)
        return parts

    def render(self) -> Prompt:
        """The prompt: a pure function of ``parts()`` and the parameters."""
        return render_span(self)

    def parse_output(self, text: str) -> T:
        """Parse model text into ``T`` (see ``output_type``)."""
        info = Component._sg_output.get(type(self))  # the cache _sg_output_info keeps
        output = (info or self._sg_output_info())[0]
        parsed: T = cast(T, text) if output is str else parse_as(output, text)
        return parsed

    @classmethod
    def output_type(cls) -> Any:
        """``T`` from the generic parameter (``str`` when none was given)."""
        return cls._sg_output_info()[0]

    @classmethod
    def _sg_output_info(cls) -> tuple[Any, dict[str, Any] | None]:
        info = Component._sg_output.get(cls)
        if info is None:
            tp = cls._sg_find_output_type()
            info = Component._sg_output[cls] = (tp, output_schema(tp))
        return info

    @classmethod
    def _sg_find_output_type(cls) -> Any:
        for klass in cls.__mro__:
            meta = getattr(klass, "__pydantic_generic_metadata__", None)
            if meta and meta.get("origin") is not None and meta.get("args"):
                origin = meta["origin"]
                if isinstance(origin, type) and issubclass(origin, Component):
                    arg = meta["args"][0]
                    return str if isinstance(arg, TypeVar) else arg
        return str

    @classmethod
    def output_schema(cls) -> dict[str, Any] | None:
        """The JSON schema of ``T`` (closed objects), or ``None`` for plain text."""
        info = Component._sg_output.get(cls)  # the cache _sg_output_info keeps
        schema = (info or cls._sg_output_info())[1]
        return copy.deepcopy(schema) if schema is not None else None

    @property
    def id(self) -> str:
        return span_id(self)

    # -- rendering -------------------------------------------------------------------

    def _sg_render_items(self) -> list[Any]:
        """Literal ``Text`` and parts, in prompt order. Override to arrange them in code."""
        items: list[Any] = []
        if self._sg_template_steps is None:
            for i, part in enumerate(self.parts()):
                if i:
                    items.append(_BLANK_LINE)
                items.append(part)
            return items
        for literal, field, what, spec in self._sg_template_steps:
            if literal:
                items.append(Text(literal))
            if field is None:  # STEP_NONE
                continue
            value = getattr(self, field)
            if what == STEP_LIST:
                for i, part in enumerate(value or ()):
                    if i:
                        items.append(_NEWLINE)
                    items.append(part)
            elif what == STEP_PART:
                if value is not None:
                    items.append(value)
            else:
                items.append(Text(self.format_param(field, value, spec)))
        return items

    def _sg_message_role(self) -> str | None:
        """The chat role of everything this component renders (``None``: inherit)."""
        return None

    def format_param(self, name: str, value: Any, spec: str) -> str:
        """How a parameter appears in the prompt (lists become bullet lines)."""
        if isinstance(value, list | tuple):
            return "\n".join(f"- {item}" for item in value)
        return format(value, spec) if spec else str(value)

    def _sg_params_json(self) -> str:
        if not self._sg_param_fields:
            return ""
        values = self.__dict__
        fast: list[str] = []
        for name in self._sg_param_fields:
            value = values[name]
            if type(value) not in _PLAIN:
                break
            if type(value) is str and not value.isascii():
                check_text(value, f"parameter {name!r}")
            fast.append(f"{name}={value!r}")
        else:
            # Plain scalars: their repr is canonical, and far cheaper than JSON.
            return "\x02".join(fast)
        try:
            data = self.model_dump(include=set(self._sg_param_fields), mode="json")
            return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        except Exception as exc:
            raise DigestError(
                f"a parameter of {type(self).__name__} is not serialisable, so it cannot be "
                f"part of a content id: {exc}"
            ) from None

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy (pydantic's), with ``update`` applied; the copy's id and parts are made
        afresh, since ``update`` may change what they were made from."""
        copied = super().model_copy(update=update, deep=deep)
        private = copied.__pydantic_private__
        if update and private is not None:
            private.update(_id=None, _parts=None)
        return copied

    # -- identity --------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Component):
            return NotImplemented
        return type(self) is type(other) and self.id == other.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        params = ", ".join(
            f"{name}={_short(getattr(self, name))}" for name in self._sg_param_fields[:3]
        )
        return f"{type(self).__name__}({params}{', ' if params else ''}parts={len(self.parts())})"

    def __str__(self) -> str:
        return self.__repr__()


_RESERVED = frozenset(
    {
        "parts",
        "render",
        "parse_output",
        "output_type",
        "output_schema",
        "id",
        "template",
        "format_param",
    }
)
_BRACES = "A literal brace in a template is written twice: {{ for {, }} for }"
_NEWLINE = Text("\n")
_BLANK_LINE = Text("\n\n")
_PLAIN = frozenset({str, int, float, bool, type(None)})


def _span_given_to_parameter(
    cls: type[Component[Any]], error: ValidationError, given: Mapping[str, Any]
) -> ParameterError | None:
    """A clearer error when a span (a thunk, usually) was given for a parameter field:
    a parameter is plain data, and a thunk's text does not exist before it has run."""
    from ._span import is_span

    for problem in error.errors():
        loc = problem.get("loc") or ()
        name = loc[0] if loc else None
        if not isinstance(name, str) or name in cls._sg_part_fields:
            continue
        value = given.get(name)
        if is_span(value):
            annotation = cls.model_fields[name].annotation if name in cls.model_fields else None
            return ParameterError(
                f"a parameter (annotated {getattr(annotation, '__name__', annotation)}) "
                f"was given a {type(value).__name__}; a span's text may not exist yet "
                "(a thunk's exists once it has run). Declare the field as a part, "
                f"'{name}: Span', and the prompt gets the span's text when it is rendered",
                path=f"{cls.__name__}.{name}",
            )
    return None


def _overrides(cls: type, *names: str) -> bool:
    """Whether ``cls`` defines any of ``names`` below ``Component``."""
    below = cls.__mro__[: cls.__mro__.index(Component)]
    return any(name in vars(klass) for klass in below for name in names)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


#: Annotation for span-typed fields: accepts any span, and ``str`` as a ``CBlock``.
Span = Annotated[
    Union[CBlock, ModelOutputThunk[Any], Component[Any]],  # noqa: UP007
    PlainValidator(_coerce_span),
]


def _strip(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            meta = annotation.__metadata__
            if any(isinstance(m, PlainValidator) and m.func is _coerce_span for m in meta):
                return Span
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _is_span_type(annotation: Any) -> bool:
    annotation = _strip(annotation)
    if annotation is Span:
        return True
    origin = typing.get_origin(annotation) or annotation
    if origin in (Union, types.UnionType):
        return all(_is_span_type(a) for a in typing.get_args(annotation))
    return isinstance(origin, type) and (
        issubclass(origin, CBlock | ModelOutputThunk | Component) or origin is ComponentLike
    )


def _span_annotation(annotation: Any) -> str | None:
    """``"one"`` for a span field, ``"many"`` for a sequence of spans, else ``None``."""
    if _is_span_type(annotation):
        return "one"
    stripped = _strip(annotation)
    origin = typing.get_origin(stripped)
    if origin in (list, tuple, collections.abc.Sequence):
        args = [a for a in typing.get_args(stripped) if a is not Ellipsis]
        if args and all(_is_span_type(a) for a in args):
            return "many"
    return None


def _parse_template(
    cls: type[Component[Any]],
) -> tuple[tuple[str, str | None, int, str], ...]:
    """The template's render steps (see ``Component._sg_template_steps``), checked."""
    template = cls.template
    assert template is not None
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(
            f"{cls.__name__}.template is not a valid format string: {exc}. {_BRACES}"
        ) from None
    known = set(cls.model_fields)
    used: set[str] = set()
    steps: list[tuple[str, str | None, int, str]] = []
    for literal, field, spec, conversion in parsed:
        if field is not None:
            if not field.isidentifier():
                raise TemplateError(
                    f"{cls.__name__}.template: field {{{field}}} must be a plain field name. "
                    f"{_BRACES}"
                )
            if field not in known:
                raise TemplateError(
                    f"{cls.__name__}.template names {{{field}}}, which is not a field of "
                    f"{cls.__name__}; fields: {', '.join(sorted(known)) or '(none)'}"
                )
            if conversion:
                raise TemplateError(
                    f"{cls.__name__}.template: conversions (!{conversion}) are not supported"
                )
            used.add(field)
        if field is None:
            what = STEP_NONE
        elif field in cls._sg_list_fields:
            what = STEP_LIST
        elif field in cls._sg_part_fields:
            what = STEP_PART
        else:
            what = STEP_PARAM
        steps.append((literal or "", field, what, spec or ""))
    missing = [name for name in cls._sg_part_fields if name not in used]
    if missing:
        raise TemplateError(
            f"{cls.__name__}.template leaves out the part field(s) {', '.join(missing)}; every "
            "part must appear in the prompt, since parts() is what the graph is built from"
        )
    return tuple(steps)
