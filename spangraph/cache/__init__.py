"""The span cache: the output memo (keys, policies, stores) and the KV-prefix store."""

from ._context import run_cache, split_cache_setting, use_run_cache
from ._key import memo_key, prefix_key
from ._kv import KVPrefixStore
from ._policy import AUTO, CachePolicy
from ._stores import CacheStats, LayeredStore, MemoryStore, SQLiteStore, Store

__all__ = [
    "AUTO",
    "CachePolicy",
    "CacheStats",
    "KVPrefixStore",
    "LayeredStore",
    "MemoryStore",
    "SQLiteStore",
    "Store",
    "memo_key",
    "prefix_key",
    "run_cache",
    "split_cache_setting",
    "use_run_cache",
]
