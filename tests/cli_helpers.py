"""Running the installed ``spangraph`` console script in a subprocess, as a user would."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass

#: The console script pip installed beside the interpreter running the tests.
SCRIPT = pathlib.Path(sys.executable).parent / "spangraph"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def cli_env(home: pathlib.Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the script: its own SPANGRAPH_HOME, no engine setting, no
    content capture, unless ``extra`` says otherwise."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPANGRAPH_", "OTEL_"))}
    env["SPANGRAPH_HOME"] = str(home)
    env.update(extra or {})
    return env


def spangraph(
    *args: str | os.PathLike[str],
    home: pathlib.Path,
    env: Mapping[str, str] | None = None,
    stdin: str = "",
    cwd: pathlib.Path | None = None,
    timeout: float = 120,
) -> Result:
    """Run ``spangraph ARGS...`` and wait for it."""
    assert SCRIPT.is_file(), f"the console script is not installed at {SCRIPT}"
    done = subprocess.run(
        [str(SCRIPT), *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        env=cli_env(home, env),
        cwd=cwd,
        timeout=timeout,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def start(
    *args: str | os.PathLike[str], home: pathlib.Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ``spangraph ARGS...``; SIGINT is made to act as in a terminal (a shell that
    started the tests in the background would have the child inherit it ignored)."""
    return subprocess.Popen(
        [str(SCRIPT), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(home, env),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def write(path: pathlib.Path, source: str) -> pathlib.Path:
    path.write_text(textwrap.dedent(source).lstrip())
    return path


def assert_usage_error(result: Result) -> None:
    """Exit status 2, a usage line, an error, and no traceback."""
    assert result.code == 2, result
    assert "Usage: spangraph" in result.err, result
    assert "Error:" in result.err, result
    assert "Traceback" not in result.err + result.out, result
