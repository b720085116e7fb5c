"""What ``spangraph.lowlevel`` takes from ``sampling`` beyond its public names.
For spangraph's own modules; not public: no name here is kept stable for users,
and nothing here is in ``spangraph.sampling``.

A module outside ``sampling`` imports a public name from ``spangraph.sampling``
and anything else from here, never from a private module of ``sampling`` (a
test checks it).
"""

from ._node import SamplerProducer as SamplerProducer

__all__ = ["SamplerProducer"]
