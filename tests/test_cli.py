"""The ``spangraph`` command as a whole: help, usage errors, and what it never starts."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from spangraph import CBlock, generate, run
from spangraph.cli import main
from spangraph.engines import ScriptedEngine
from tests.cli_helpers import Result, assert_usage_error, cli_env, spangraph, write

COMMANDS = ("run", "log", "export", "cache", "models")


@pytest.fixture
def home(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "home"


@pytest.fixture
def program(tmp_path: pathlib.Path) -> pathlib.Path:
    return write(
        tmp_path / "prog.py",
        """
        from spangraph import CBlock, generate

        first = generate(CBlock("one"))
        second = generate(CBlock("two"))
        """,
    )


@pytest.fixture
def trace(tmp_path: pathlib.Path) -> pathlib.Path:
    result = run(generate(CBlock("hello")), engine=ScriptedEngine("hi"), progress=False)
    assert result.log is not None
    return result.log.write_otlp_json(tmp_path / "trace.otlp.jsonl")


def test_help_lists_every_command(home: pathlib.Path) -> None:
    result = spangraph("--help", home=home)
    assert result.code == 0, result
    for command in COMMANDS:
        assert f"  {command} " in result.out
    version = spangraph("--version", home=home)
    assert version.code == 0 and version.out.startswith("spangraph "), version


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (*COMMANDS, "cache info", "cache prune", "cache clear"):
        assert main([*command.split(), "-h"]) == 0
        assert f"Usage: spangraph {command}" in capsys.readouterr().out


def usage_errors(tmp: pathlib.Path, program: pathlib.Path, trace: pathlib.Path) -> list[list[str]]:
    not_otlp = tmp / "notes.txt"
    not_otlp.write_text("these are notes, not spans\n")
    return [
        ["bogus"],
        ["run"],
        ["run", str(tmp / "missing.py")],
        ["run", str(tmp)],
        ["run", f"{program}:nothere", "--engine", "scripted"],
        ["run", str(program), "--engine", "scripted"],  # two generations: ambiguous
        ["run", f"{program}:CBlock", "--engine", "scripted"],  # a class, not a span
        ["run", f"{program}:first", "--engine", "bogus"],
        ["run", f"{program}:first", "--engine", "openai:localhost"],
        ["run", f"{program}:first", "--max-concurrency", "0"],
        ["run", f"{program}:first", "--on-error", "sometimes"],
        ["run", f"{program}:first", "--otlp-endpoint", "localhost:4318"],
        ["run", f"{program}:first", "--bogus"],
        ["log"],
        ["log", str(tmp / "missing.jsonl")],
        ["log", str(not_otlp)],
        ["log", str(trace), "--format", "svg"],  # no -o
        ["log", str(trace), "-o", str(tmp / "drawing.txt")],  # no format from the name
        ["log", str(trace), "--format", "gif", "-o", str(tmp / "x.gif")],
        ["log", str(trace), "--node", "no-such-node"],
        ["export", str(trace)],  # no --endpoint
        ["export", str(trace), "--endpoint", "ftp://127.0.0.1/v1/traces"],
        ["export", str(trace), "--endpoint", "http://127.0.0.1:9", "--header", "novalue"],
        ["export", str(not_otlp), "--endpoint", "http://127.0.0.1:9"],
        ["cache", "bogus"],
        ["cache", "prune"],  # nothing to prune by
        ["cache", "prune", "--older-than", "soon"],
        ["cache", "prune", "--max-bytes", "lots"],
        ["cache", "clear", "--only", "everything"],
        ["models", "--bogus"],
    ]


def test_usage_errors_exit_2_with_a_usage_line_and_no_traceback(
    tmp_path: pathlib.Path,
    home: pathlib.Path,
    program: pathlib.Path,
    trace: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every usage error, through ``main()`` in this process (the console script's
    function: a subprocess each would take minutes); the next test runs some of them
    through the script itself."""
    monkeypatch.setenv("SPANGRAPH_HOME", str(home))
    monkeypatch.delenv("SPANGRAPH_ENGINE", raising=False)
    for args in usage_errors(tmp_path, program, trace):
        code = main(args)
        out, err = capsys.readouterr()
        result = Result(code, out, err)
        try:
            assert_usage_error(result)
        except AssertionError:
            raise AssertionError(f"spangraph {' '.join(args)}\n{result}") from None
    assert "SPANGRAPH_ENGINE" not in os.environ  # a refused --engine leaves no trace


def test_usage_errors_through_the_console_script(
    tmp_path: pathlib.Path, home: pathlib.Path, program: pathlib.Path, trace: pathlib.Path
) -> None:
    cases = usage_errors(tmp_path, program, trace)
    for command in ("bogus", "run", "log", "export", "cache", "models"):
        args = next(a for a in cases if (a[0] == command and len(a) > 1) or a == [command])
        result = spangraph(*args, home=home)
        try:
            assert_usage_error(result)
        except AssertionError:
            raise AssertionError(f"spangraph {' '.join(args)}\n{result}") from None


def test_usage_errors_say_what_to_do(home: pathlib.Path, program: pathlib.Path) -> None:
    ambiguous = spangraph("run", program, "--engine", "scripted", home=home)
    assert "first, second" in ambiguous.err and f"{program}:first" in ambiguous.err
    engine = spangraph("run", f"{program}:first", "--engine", "bogus", home=home)
    assert "llamacpp" in engine.err and "scripted[:REPLY]" in engine.err


def test_a_bad_spangraph_home_is_a_usage_error(tmp_path: pathlib.Path) -> None:
    file = tmp_path / "a-file"
    file.write_text("")
    for args in (["models"], ["cache", "info"]):
        result = spangraph(*args, home=file)
        assert_usage_error(result)
        assert "SPANGRAPH_HOME" in result.err


def test_log_cache_and_models_start_no_engine(
    tmp_path: pathlib.Path, home: pathlib.Path, trace: pathlib.Path
) -> None:
    """Nothing hidden: only ``run`` may load an engine. The commands are run in one
    interpreter that then says which engine modules were imported (llama.cpp's and
    the openai client's are imported only by an engine being made)."""
    script = f"""
import sys
from spangraph.cli import main
codes = [
    main(["log", {str(trace)!r}, "--nodes", "--failed", "-o", {str(tmp_path / "t.dot")!r}]),
    main(["cache", "info"]),
    main(["cache", "prune", "--older-than", "1d"]),
    main(["cache", "clear", "--yes"]),
    main(["models"]),
]
loaded = [m for m in ("xllamacpp", "openai", "spangraph.engines._openai") if m in sys.modules]
print(codes, loaded)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=cli_env(home),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[0, 0, 0, 0, 0] []", done.stdout
