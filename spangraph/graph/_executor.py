"""Where a run's generations execute: the executor interface.

The scheduler, pure nodes, the memo and the prefix-aware ordering always
run on the driver (the process that called ``run()``). An executor only
decides where an engine's primitive runs: ``engine(e)`` returns the engine
the scheduler calls in place of ``e`` (an engine proxy, ``RemoteEngine``,
whose primitive sends the request to a worker), and ``start()`` gets the
workers ready before the first node (it raises, before anything ran, when
they cannot be). That is the whole interface: ``DaskExecutor`` implements
it on Dask distributed, and a Ray executor would be one more class of the
same methods and a ``Dispatch`` (``engines/_remote.py``). The third method,
``call``, runs a ``@task(where="cluster")`` function on a worker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from ..engines import InferenceEngine


@runtime_checkable
class Executor(Protocol):
    """What ``run(executor=...)`` takes (see the module's docstring)."""

    async def start(self) -> None:
        """Get the workers ready (engines built); raise ``ExecutorError`` if they
        cannot be. Called once per run, before the first node; idempotent."""
        ...

    def engine(self, engine: InferenceEngine) -> InferenceEngine:
        """The engine the scheduler calls for ``engine`` (the same one, or its proxy)."""
        ...

    async def call(
        self, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Any:
        """``fn(*args, **kwargs)`` on a worker (a ``@task(where="cluster")``); what it
        returned. Cancelling the coroutine cancels the remote call."""
        ...
