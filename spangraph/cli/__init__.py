"""The ``spangraph`` command: run programs, and look at their logs, cache and models.

Built with click (a small, typed and long-kept library; the commands are
few and plain, so typer's layer over it and its rich output would bring
more dependencies than help). ``main`` is the console script; every
command returns its exit status.

==========================  ==================================================
``spangraph run FILE[:NAME]``  run the spans or graph a Python file defines
``spangraph log FILE``         a run's log: summary, critical path, nodes, drawing
``spangraph export FILE``      a run's log to an OTLP/HTTP collector (protobuf)
``spangraph cache info``       the output memo and the KV-prefix store (``prune``, ``clear``)
``spangraph models``           model files and packages, sizes and checksums
==========================  ==================================================

Exit statuses: 0 done; 1 failed (a failed or partial run, a refused
export...); 2 a usage error (with a usage line, never a traceback); 130
interrupted. No command starts an engine, a server or a model that its
arguments do not ask for: only ``run`` runs anything.
"""

from ._main import cli as cli
from ._main import main as main

__all__ = ["cli", "main"]
