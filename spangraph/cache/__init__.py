"""The span cache: the output memo (keys, policies, stores) and the KV-prefix store.

The output memo never fails or loses a generation: whatever a store does
(a failed write, a read-only or full disk, a corrupt row, another
process's lease), the generation keeps its output, and the run warns once
and counts (``Run.cache_write_errors``, ``Run.cache_read_errors``,
``Run.cache_bad_entries``). ``MemoStoreError`` is what a ``SQLiteStore``
raises when it is given a file it will not use (another program's
database, a newer spangraph's memo, an unreadable path): see its docstring
for what to do. ``RedisStore`` shares one memo among several drivers through a
Redis server (the ``redis`` extra). ``MemoEntry`` is the one shape of an entry.

A store of one's own implements ``Store``; its optional lease step returns a
``spangraph.lowlevel.Claim``. The memo and prefix keys (``memo_key``,
``prefix_key``) are in ``spangraph.lowlevel`` too.
"""

from ._context import CacheSetting as CacheSetting
from ._entry import MemoEntry as MemoEntry
from ._errors import MemoStoreError as MemoStoreError
from ._kv import KVPrefixStore as KVPrefixStore
from ._policy import AUTO as AUTO
from ._policy import CachePolicy as CachePolicy
from ._redis import RedisStore as RedisStore
from ._stores import CacheStats as CacheStats
from ._stores import LayeredStore as LayeredStore
from ._stores import MemoryStore as MemoryStore
from ._stores import SQLiteStore as SQLiteStore
from ._stores import Store as Store

__all__ = [
    "AUTO",
    "CachePolicy",
    "CacheSetting",
    "CacheStats",
    "KVPrefixStore",
    "LayeredStore",
    "MemoEntry",
    "MemoStoreError",
    "MemoryStore",
    "RedisStore",
    "SQLiteStore",
    "Store",
]
