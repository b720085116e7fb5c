"""The span cache: the output memo (keys, policies, stores) and the KV-prefix store.

The output memo never fails or loses a generation: whatever a store does
(a failed write, a read-only or full disk, a corrupt row, another
process's lease), the generation keeps its output, and the run warns once
and counts (``Run.cache_write_errors``, ``Run.cache_read_errors``,
``Run.cache_bad_entries``). ``MemoStoreError`` is what a ``SQLiteStore``
raises when it is given a file it will not use (another program's
database, a newer spangraph's memo, an unreadable path): see its docstring
for what to do. ``MemoEntry`` is the one shape of an entry.
"""

from ._context import CacheSetting, run_cache, split_cache_setting, use_run_cache
from ._entry import MemoEntry
from ._errors import MemoStoreError
from ._key import memo_key, prefix_key
from ._kv import KVPrefixStore
from ._lease import Claim
from ._policy import AUTO, CachePolicy
from ._stores import CacheStats, LayeredStore, MemoryStore, SQLiteStore, Store

__all__ = [
    "AUTO",
    "CachePolicy",
    "CacheSetting",
    "CacheStats",
    "Claim",
    "KVPrefixStore",
    "LayeredStore",
    "MemoEntry",
    "MemoStoreError",
    "MemoryStore",
    "SQLiteStore",
    "Store",
    "memo_key",
    "prefix_key",
    "run_cache",
    "split_cache_setting",
    "use_run_cache",
]
