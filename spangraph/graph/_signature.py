"""Entry points that name themselves, and the nearest valid name, for an unknown keyword."""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

P = ParamSpec("P")
R = TypeVar("R")


def keywords_checked(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn``, refusing an unknown keyword with a ``TypeError`` that names ``fn`` (not a
    function it hands the call to) and suggests the nearest valid keyword."""
    known = frozenset(
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    )
    name = fn.__name__

    def check(kwargs: dict[str, Any]) -> None:
        if kwargs.keys() <= known:
            return
        unknown = sorted(kwargs.keys() - known)[0]
        near = difflib.get_close_matches(unknown, sorted(known), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else f"; it takes {', '.join(sorted(known))}"
        raise TypeError(f"{name}() got an unexpected keyword argument {unknown!r}{hint}")

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def checked_async(*args: Any, **kwargs: Any) -> Any:
            check(kwargs)
            return await fn(*args, **kwargs)

        return cast(Callable[P, R], checked_async)

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> Any:
        check(kwargs)
        return fn(*args, **kwargs)

    return cast(Callable[P, R], checked)
