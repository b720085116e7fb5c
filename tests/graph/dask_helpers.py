"""What the Dask workers of the executor tests build and call (importable on them).

``scripted`` is the engine of the tests: a ``ScriptedEngine`` that answers
``<prompt>``, logs each call's start to ``<log_dir>/calls.log`` (one line per
call, from every process: appends of one short line are atomic), fails for
good on prompts with ``bad`` in them and once (then succeeds) on prompts with
``flaky``, and sleeps ``latency`` seconds.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from typing import Any

import anyio

from spangraph.engines import EngineRequestError, Request, ScriptedEngine, TransientEngineError
from tests.cache.memo_helpers import answer


def scripted(log_dir: str = "", latency: float = 0.0) -> ScriptedEngine:
    async def reply(request: Request) -> str:
        text = request.text
        if log_dir:
            line = text.replace("\n", " ") + "\n"
            fd = os.open(pathlib.Path(log_dir, "calls.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        if latency:
            await anyio.sleep(latency)
        if "bad" in text:
            raise EngineRequestError("the engine refuses this prompt")
        if "flaky" in text and log_dir:
            marker = pathlib.Path(log_dir, "flaky-" + hashlib.sha1(text.encode()).hexdigest())
            if not marker.exists():
                marker.touch()
                raise TransientEngineError("overloaded, try again")
        return answer(request)

    return ScriptedEngine(reply)


def calls(log_dir: str | pathlib.Path) -> list[str]:
    """The prompts the engines were called with, in every process, in order."""
    path = pathlib.Path(log_dir, "calls.log")
    return path.read_text().splitlines() if path.exists() else []


def broken(**_: Any) -> ScriptedEngine:
    raise RuntimeError("no GPU on this worker")


def spangraph_tasks(dask_scheduler: Any) -> int:
    """How many spangraph generations the Dask scheduler still knows of."""
    return sum(1 for key in dask_scheduler.tasks if str(key).startswith("spangraph-generate"))


def loaded_servers() -> int:
    from spangraph.engines._llamacpp import loaded_servers as count

    return count()


def engine_plugin_keys(plugin_name: str, dask_worker: Any = None) -> list[str]:
    plugin = dask_worker.plugins.get(plugin_name) if dask_worker is not None else None
    return sorted(plugin.engines) if plugin is not None else []
