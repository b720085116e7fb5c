"""What ``spangraph.lowlevel`` takes from ``graph`` beyond its public names.
For spangraph's own modules; not public: no name here is kept stable for users,
and nothing here is in ``spangraph.graph``.

A module outside ``graph`` imports a public name from ``spangraph.graph`` and
anything else from here, never from a private module of ``graph`` (a test
checks it).
"""

from ._task import TaskProducer as TaskProducer

__all__ = ["TaskProducer"]
