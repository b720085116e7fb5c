from __future__ import annotations

import dataclasses
import pickle

import pytest

from spangraph.engines import Completion
from spangraph.nodes import Timings, Usage
from spangraph.nodes._values import fast_init


def test_fast_init_keeps_the_dataclass_behaviour() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Plain:
        a: int
        b: str = "b"
        c: list[int] = dataclasses.field(default_factory=list)

    @fast_init
    @dataclasses.dataclass(frozen=True, slots=True)
    class Fast:
        a: int
        b: str = "b"
        c: list[int] = dataclasses.field(default_factory=list)

    for args, kwargs in [((1,), {}), ((1, "x"), {}), ((), {"a": 2, "c": [3]})]:
        plain, fast = Plain(*args, **kwargs), Fast(*args, **kwargs)  # type: ignore[arg-type]
        assert dataclasses.astuple(plain) == dataclasses.astuple(fast)
    assert Fast(1).c is not Fast(1).c  # the factory runs per instance
    assert Fast(1, "x") == Fast(a=1, b="x") and hash(Fast(1, "x", ())) == hash(Fast(1, "x", ()))  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Fast(1).a = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        Fast()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Fast(1, "x", [], 4)  # type: ignore[call-arg]


def test_fast_init_refuses_what_it_cannot_copy() -> None:
    @dataclasses.dataclass(slots=True)
    class Mutable:
        a: int = 0

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        a: int = 0

        def __post_init__(self) -> None:
            pass

    for cls in (Mutable, Checked):
        with pytest.raises(TypeError, match="fast_init"):
            fast_init(cls)


def test_value_types_built_by_fast_init() -> None:
    usage = Usage(3, 2)
    assert usage == Usage(input_tokens=3, output_tokens=2, cached_input_tokens=0)
    assert usage + Usage(1, 1, 1) == Usage(4, 3, 1)
    assert pickle.loads(pickle.dumps(usage)) == usage
    assert Timings(total_ms=5.0).total_ms == 5.0 and Timings().queue_ms == 0.0
    completion = Completion("text")
    assert completion.usage == Usage() and completion.timings == Timings()
    assert dataclasses.replace(completion, text="other").text == "other"
