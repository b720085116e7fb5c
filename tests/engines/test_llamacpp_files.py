"""The embedded engine's files: ``SPANGRAPH_HOME``, and model files that are not GGUF.

Making a ``LlamaCppEngine`` loads no model, so all but the last test run
without llama.cpp; the last loads a truncated real GGUF.
"""

from __future__ import annotations

import os
import pathlib
import stat
from collections.abc import Iterator

import pytest

from spangraph import CBlock, generate, run
from spangraph.engines import LlamaCppEngine, ModelFileError, SpangraphHomeError
from spangraph.engines import _default as default_module
from spangraph.engines._default import set_default
from spangraph.engines._llamacpp import spangraph_home


def _mode(path: pathlib.Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


# -- SPANGRAPH_HOME --------------------------------------------------------------------


def test_home_expands_the_user_s_home_and_variables(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, umask_022: None
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    monkeypatch.setenv("PROJECT", str(tmp_path / "project"))
    monkeypatch.chdir(tmp_path)
    for setting, expected in (
        ("~/x", tmp_path / "me" / "x"),
        ("$PROJECT/cache", tmp_path / "project" / "cache"),
        ("${PROJECT}/a/b/c", tmp_path / "project" / "a" / "b" / "c"),
        ("relative/home", tmp_path / "relative" / "home"),
    ):
        monkeypatch.setenv("SPANGRAPH_HOME", setting)
        home = spangraph_home()
        assert home == expected and home.is_dir()
        assert not (tmp_path / "~").exists() and not list(tmp_path.glob("$*"))
        # it and every folder it had to make are the user's alone, despite umask 022
        folder = home
        while folder != tmp_path:
            assert _mode(folder) == 0o700, folder
            folder = folder.parent


def test_home_default_and_empty_setting(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for setting in ("", "  "):
        monkeypatch.setenv("SPANGRAPH_HOME", setting)
        assert spangraph_home() == tmp_path / ".cache" / "spangraph"
    monkeypatch.delenv("SPANGRAPH_HOME")
    assert spangraph_home() == tmp_path / ".cache" / "spangraph"


def test_an_existing_home_keeps_its_mode(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "shared"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    monkeypatch.setenv("SPANGRAPH_HOME", str(home))
    assert spangraph_home() == home and _mode(home) == 0o755


def test_a_bad_home_is_refused_naming_the_variable_and_the_path(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    monkeypatch.delenv("NO_SUCH_VARIABLE_HERE", raising=False)
    cases = {
        str(a_file): "is a file",
        f"{a_file}/below": "is a file",
        "$NO_SUCH_VARIABLE_HERE/x": "names the variable $NO_SUCH_VARIABLE_HERE, which is not set",
        "${NO_SUCH_VARIABLE_HERE}": "which is not set",
        "~no-such-user-spangraph/x": "unknown user",
        str(tmp_path / ("n" * 300)): "cannot be created",
    }
    for setting, problem in cases.items():
        monkeypatch.setenv("SPANGRAPH_HOME", setting)
        with pytest.raises(SpangraphHomeError) as caught:
            spangraph_home()
        message = str(caught.value)
        assert message.startswith(f"SPANGRAPH_HOME={setting!r}"), message
        assert problem in message and isinstance(caught.value, ValueError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing was made


def test_a_bad_home_argument_is_refused_naming_the_argument(tmp_path: pathlib.Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    with pytest.raises(SpangraphHomeError, match=r"^LlamaCppEngine\(home=\.\.\.\)=.*is a file"):
        LlamaCppEngine(home=a_file)


def test_a_bad_home_fails_the_run_before_it_starts(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    monkeypatch.setenv("SPANGRAPH_HOME", str(a_file))
    monkeypatch.setenv("SPANGRAPH_ENGINE", "llamacpp")
    monkeypatch.setattr(default_module, "_engines", {})
    previous = set_default(None)
    events: list[object] = []
    try:
        with pytest.raises(SpangraphHomeError, match="SPANGRAPH_HOME"):
            run(generate(CBlock("q")), progress=False, listeners=[events.append])
    finally:
        set_default(previous)
    assert events == []


# -- model files -----------------------------------------------------------------------


def test_a_file_that_is_not_gguf_is_refused_when_the_engine_is_made(
    tmp_path: pathlib.Path,
) -> None:
    html = tmp_path / "model.gguf"
    html.write_text("<html><body>404 Not Found</body></html>")
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    short = tmp_path / "short.gguf"
    short.write_bytes(b"GGUF\x03\x00\x00\x00")
    folder = tmp_path / "folder.gguf"
    folder.mkdir()
    cases = {
        html: "is not a GGUF file: it starts with b'<htm'",
        empty: "is not a GGUF file: it starts with b''",
        short: "shorter than a GGUF header: it is truncated",
        folder: "is a folder, not a GGUF file",
        tmp_path / "missing.gguf": "does not exist",
    }
    for path, problem in cases.items():
        with pytest.raises(ModelFileError) as caught:
            LlamaCppEngine(path, home=tmp_path / "home")
        assert f"model file {path} " in str(caught.value) and problem in str(caught.value)
    assert not list(tmp_path.glob("*.sha256"))  # refused before it was hashed


@pytest.mark.real
def test_a_gguf_llama_cpp_cannot_load_is_a_model_file_error_naming_it(
    tmp_path: pathlib.Path, llama: LlamaCppEngine
) -> None:
    truncated = tmp_path / "truncated.gguf"
    with llama.model_path.open("rb") as f:
        truncated.write_bytes(f.read(4_000_000))
    with pytest.raises(ModelFileError, match="has sha256"):
        LlamaCppEngine(truncated, sha256=llama.model_sha256, home=tmp_path)
    engine = LlamaCppEngine(truncated, home=tmp_path, n_ctx=1024, n_parallel=1)
    thunk = generate(CBlock("Hello"), options={"max_tokens": 2})
    run(thunk, engine=engine, on_error="continue", progress=False)
    assert isinstance(thunk.error, ModelFileError)
    assert f"could not load the model file {truncated}" in str(thunk.error)
    engine.close()
    again = generate(CBlock("Hello"), options={"max_tokens": 2})
    run(again, engine=llama, progress=False)  # the process and its other server are fine
    assert again.value
