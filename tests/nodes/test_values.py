from __future__ import annotations

import pickle

import pytest

from spangraph.engines import Completion
from spangraph.nodes import Timings, Usage


def test_usage_adds_field_by_field() -> None:
    usage = Usage(3, 2)
    assert usage == Usage(input_tokens=3, output_tokens=2, cached_input_tokens=0)
    assert usage + Usage(1, 1, 1) == Usage(4, 3, 1)  # not tuple concatenation
    assert sum([Usage(1, 0, 0), Usage(2, 1, 0)], Usage()) == Usage(3, 1, 0)
    assert pickle.loads(pickle.dumps(usage)) == usage


def test_value_types_are_immutable_with_defaults() -> None:
    assert Timings(total_ms=5.0).total_ms == 5.0 and Timings().queue_ms == 0.0
    completion = Completion("text")
    assert completion.usage == Usage() and completion.timings == Timings()
    assert completion.finish_reason is None and completion.raw is None
    assert completion._replace(text="other").text == "other"
    assert pickle.loads(pickle.dumps(completion)) == completion
    with pytest.raises(AttributeError):
        completion.text = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Usage(1, 2, 3, 4)  # type: ignore[call-arg]
    assert repr(Usage(1)) == "Usage(input_tokens=1, output_tokens=0, cached_input_tokens=0)"
