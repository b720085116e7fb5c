"""What spangraph's other packages may use of ``engines`` beyond its public names.
For spangraph's own packages; not public: no name here is kept stable for users,
and nothing here is in ``spangraph.engines``.

Another package imports a public name from ``spangraph.engines`` and anything
else from here, never from a private module of ``engines`` (a test checks it).
"""

from ._base import declare as declare
from ._default import default_spec as default_spec
from ._handoff import InlineDriver as InlineDriver
from ._options import check_options as check_options

__all__ = [
    "InlineDriver",
    "check_options",
    "declare",
    "default_spec",
]
