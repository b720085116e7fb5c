"""Looking for a secret in files, from another process.

A test must not read the files of a live SQLite database (the KV index, a memo,
their ``-wal`` and ``-shm``) in its own process while it holds that database
open (the session's ``llama`` engine holds ``$SPANGRAPH_HOME/kv/index.db``):
closing a descriptor of a file drops every POSIX lock the process holds on it,
SQLite's included. Another process that closes the database then takes itself
for its last user and deletes the live ``-wal`` and ``-shm``, and the next
connection of this process fails with 'disk I/O error'
(https://sqlite.org/howtocorrupt.html, section 2.2). So the files are read by
a child process, whose descriptors are its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable

_SCANNER = """
import pathlib, sys
needles = [line.encode() for line in sys.stdin.read().splitlines() if line]
for name in sys.argv[1:]:
    if any(needle in pathlib.Path(name).read_bytes() for needle in needles):
        print(name)
"""


def files_containing(paths: Iterable[str | os.PathLike[str]], needles: Iterable[str]) -> list[str]:
    """The files among ``paths`` that contain any of ``needles`` (given to the child
    on its standard input, never on its command line)."""
    done = subprocess.run(
        [sys.executable, "-c", _SCANNER, *map(os.fspath, paths)],
        input="\n".join(needles),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.splitlines()
