"""What spangraph's other packages (and ``spangraph.lowlevel``) may use of ``cache``
beyond its public names. For spangraph's own packages; not public: no name here
is kept stable for users, and nothing here is in ``spangraph.cache``.

Another package imports a public name from ``spangraph.cache`` and anything
else from here, never from a private module of ``cache`` (a test checks it).
"""

from ._context import run_cache as run_cache
from ._context import split_cache_setting as split_cache_setting
from ._context import use_run_cache as use_run_cache
from ._errors import describe_bad_entries as describe_bad_entries
from ._errors import describe_failure as describe_failure
from ._key import memo_key as memo_key
from ._key import prefix_key as prefix_key
from ._kv import private_dir as private_dir
from ._lease import Claim as Claim

__all__ = [
    "Claim",
    "describe_bad_entries",
    "describe_failure",
    "memo_key",
    "prefix_key",
    "private_dir",
    "run_cache",
    "split_cache_setting",
    "use_run_cache",
]
