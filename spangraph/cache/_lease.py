"""In-flight leases: which process is computing a memo key, and whether it still can.

A process that misses a key in a shared memo takes a lease on it (a row:
the key, a token of its own, its host, pid and start time, an expiry)
before it calls the engine; another process that misses the same key while
the lease is live waits for the entry instead of computing it again.

A lease is live while it has not expired and, when its owner runs on this
host, while the owner is alive. So a process killed while it held a lease
(``SIGKILL``, a crash, a power cut of a container) holds nothing: the next
process to look finds the owner gone and takes the lease over at once. An
owner on another host is trusted until the lease expires.

"This host" is the host name and the pid namespace (``/proc/self/ns/pid``):
two containers that share a memo and a host name but not a pid namespace
cannot check each other's pids, and wait for expiry instead. "Alive" reads
``/proc/<pid>/stat`` where it exists: a zombie is gone, and a pid now used
by another process (its start time differs) is gone.
"""

from __future__ import annotations

import os
import socket
from typing import Any, NamedTuple


class Claim(NamedTuple):
    """What ``claim(key)`` found (a store's optional in-flight lease step).

    - ``value`` is not ``None``: the entry is there now; serve it.
    - ``wait``: another generation (in this process or another one) holds
      a live lease on the key; wait a little and claim again.
    - neither: compute the key. With ``leased``, the store took the key's
      lease for it: its ``put(key, ...)`` or ``release(key)`` gives it back.
    """

    value: dict[str, Any] | None = None
    wait: bool = False
    leased: bool = False


class Owner(NamedTuple):
    """Who holds a lease: the host (name and pid namespace), pid and start time."""

    host: str
    pid: int
    started: int


_me: Owner | None = None


def this_process() -> Owner:
    """This process as a lease owner (worked out again after a fork)."""
    global _me
    pid = os.getpid()
    if _me is None or _me.pid != pid:
        _me = Owner(_host(), pid, _start_time(pid) or 0)
    return _me


def owner_alive(owner: Owner) -> bool:
    """Whether a lease's owner may still be computing (see the module's docstring)."""
    if owner.host != this_process().host:
        return True  # another host: only the lease's expiry can tell
    if owner.pid <= 0:
        return False
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user
    stat = _stat(owner.pid)
    if stat is None:
        return not os.path.isdir("/proc")  # no /proc: trust kill(); with /proc it just ended
    state, started = stat
    if state in ("Z", "X"):
        return False  # a zombie computes nothing
    return not (owner.started and started != owner.started)  # a reused pid is another process


def _host() -> str:
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    name = socket.gethostname()
    return f"{name} {namespace}" if namespace else name


def _stat(pid: int) -> tuple[str, int] | None:
    """``(state, start time in clock ticks)`` from ``/proc/<pid>/stat``, or ``None``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return fields[0].decode(), int(fields[19])
    except (IndexError, ValueError):
        return None


def _start_time(pid: int) -> int | None:
    stat = _stat(pid)
    return stat[1] if stat is not None else None
