"""Hooks for code that extends spangraph beyond writing an engine.

An application needs nothing from here, and neither does an engine that
implements the primitive (``_complete``): that is all in ``spangraph.engines``.
What is here is public and documented, for library and tool authors:

- watching events outside a run, e.g. of an engine called directly:
  ``EventBus``, ``use_bus`` (inside a run, pass ``run(listeners=...)``);
- a memo store of one's own (``spangraph.cache.Store``) with in-flight
  leases: its ``claim(key)`` returns a ``Claim``;
- an engine that refines the protocol's cache steps, or a tool that reads a
  memo: the output-memo key ``memo_key`` and the KV-prefix key ``prefix_key``;
- what a thunk is made from, for code that declares nodes or reads them:
  ``thunk.producer`` is a ``Producer`` (a ``GenerationProducer``,
  ``TaskProducer`` or ``SamplerProducer``), a generation's state is
  ``StateLike``, ``current_state()`` is the state the enclosing ``with``
  blocks apply (what ``generate()`` reads), and ``span_id`` is a span's
  content id (its node id in a compiled graph);
- an executor of one's own (beside ``spangraph.graph.DaskExecutor``; see
  ``spangraph.graph.Executor``): its engines are ``RemoteEngine`` proxies
  whose primitive calls a ``Dispatch``; a worker answers with ``serve``, and
  a completion's ``raw`` says where and when it ran (``WorkerRun``).

Wiring that spangraph's packages share among themselves (span sinks, run
tracers, emission, the run's cache context, drivers, the span walk's helpers)
is in no public module: each package's ``_internal`` module lists what the
others may use of it.
"""

from .cache._internal import Claim as Claim
from .cache._internal import memo_key as memo_key
from .cache._internal import prefix_key as prefix_key
from .engines._internal import Dispatch as Dispatch
from .engines._internal import RemoteEngine as RemoteEngine
from .engines._internal import WorkerRun as WorkerRun
from .engines._internal import serve as serve
from .events import EventBus as EventBus
from .events import use_bus as use_bus
from .graph._internal import TaskProducer as TaskProducer
from .nodes._internal import GenerationProducer as GenerationProducer
from .nodes._internal import Producer as Producer
from .nodes._internal import StateLike as StateLike
from .nodes._internal import current_state as current_state
from .nodes._internal import span_id as span_id
from .sampling._internal import SamplerProducer as SamplerProducer

__all__ = [
    "Claim",
    "Dispatch",
    "EventBus",
    "GenerationProducer",
    "Producer",
    "RemoteEngine",
    "SamplerProducer",
    "StateLike",
    "TaskProducer",
    "WorkerRun",
    "current_state",
    "memo_key",
    "prefix_key",
    "serve",
    "span_id",
    "use_bus",
]
