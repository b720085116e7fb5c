"""Shared by the memo fault tests: a small graph, read-only files and folders, scripts."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from spangraph import Component, Span, generate, options
from spangraph.cache import SQLiteStore
from spangraph.engines import Request, ScriptedEngine

ROOT = pathlib.Path(__file__).resolve().parents[2]


class Step(Component[str]):
    template = "{label}: {inputs}"
    inputs: list[Span]
    label: str


def answer(request: Request) -> str:
    return f"<{request.text}>"


def expected(label: str, leaf: str = "x") -> str:
    """What ``answer`` makes of ``Step(inputs=[leaf], label=label)``."""
    return f"<{label}: {leaf}>"


def fan(count: int, leaf: str = "x", first: int = 0) -> list[Any]:
    """``count`` independent deterministic generations ``g<first>``, ``g<first+1>``, …"""
    with options(temperature=0):
        return [generate(Step(inputs=[leaf], label=f"g{i}")) for i in range(first, first + count)]


def values(thunks: list[Any]) -> list[str]:
    return [t.value for t in thunks]


def filled_memo(path: pathlib.Path, count: int) -> list[str]:
    """A memo at ``path`` holding ``fan(count)``'s entries (closed: no -wal, no -shm)."""
    from spangraph import run

    store = SQLiteStore(path)
    thunks = fan(count)
    run(*thunks, engine=ScriptedEngine(answer), cache=store, progress=False)
    store.close()
    return values(thunks)


def digest(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def modes(folder: pathlib.Path) -> dict[str, int]:
    """The permission bits of everything under ``folder`` (itself excluded), by relative path."""
    return {str(p.relative_to(folder)): p.stat().st_mode & 0o777 for p in sorted(folder.rglob("*"))}


@contextlib.contextmanager
def read_only(path: pathlib.Path) -> Iterator[None]:
    """Make a file or folder really read-only for this process: ``chmod`` for a
    user, the immutable attribute for root (whom modes do not stop)."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode & 0o777
        path.chmod(0o500 if path.is_dir() else 0o400)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode:
        pytest.skip("running as root, and this filesystem has no immutable attribute")
    try:
        if os.access(path, os.W_OK):
            pytest.skip("the immutable attribute does not stop writes here")
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


def can_unshare_mounts() -> bool:
    """Whether a child may mount filesystems in a mount namespace of its own."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(
        [unshare, "-m", "sh", "-c", "mount -t tmpfs -o size=8k tmpfs /mnt"], capture_output=True
    )
    return probe.returncode == 0


def run_python(
    script: str, *args: str, mounts: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter; with ``mounts`` (shell commands), in a
    mount namespace of its own where those commands ran first."""
    command = [sys.executable, "-c", script, *args]
    if mounts is not None:
        quoted = " ".join(f"'{part}'" for part in command)
        command = ["unshare", "-m", "sh", "-ec", f"{mounts}\nexec {quoted}"]
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
