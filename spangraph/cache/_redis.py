"""``RedisStore``: one output memo shared by several drivers, in a Redis server.

Memo keys are content digests and an entry never changes once written, so
a write is ``SET NX`` (the first writer wins; a second writer of the same
key wrote the same entry). Each store works in a namespace: its entries
are ``<namespace>:memo:<key>`` and its leases ``<namespace>:lease:<key>``,
so one server holds several memos side by side.

**Values and bad rows** (the rules of ``SQLiteStore``). A value is
``<checksum> <json>``: the JSON object of the entry after a blake2b
checksum of the key and the JSON together. A value whose checksum is not
its bytes' (damaged, or copied under another key), whose JSON is not an
object, or that is not UTF-8 is a bad row: ``get`` skips it (a miss, so the
generation recomputes it), counts it in ``stats.bad_rows`` and deletes it.
Its bytes never appear in a message.

**Expiry and budgets** are the server's: an entry with a ``ttl`` is written
with one (Redis drops it when it expires), and the server's ``maxmemory``
policy keeps its size. ``evict`` has nothing to do.

**In-flight leases** (``lease_timeout``, seconds; ``None``: none). A
generation that misses takes the key's lease (``SET NX PX``: a key that
expires by itself, so a driver that dies holding one blocks others for at
most ``lease_timeout``; one whose owner process is gone on this host is
taken over at once, as in ``SQLiteStore``). Another driver that misses
meanwhile waits for the entry and serves it as a hit. ``put`` gives the
lease back in the same server-side step as the write.

**Failures.** A server that cannot be reached makes ``get``/``put`` raise
redis' own ``ConnectionError``: the generate protocol keeps the
generation's output, the run warns once and counts it, and goes on without
the memo (``spangraph.cache``'s rule). ``claim`` never raises: a lease it
cannot take is counted in ``stats.lease_errors`` and the key is computed.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Mapping
from hashlib import blake2b
from typing import TYPE_CHECKING, Any

from ._lease import Claim, Owner, owner_alive, this_process
from ._stores import CacheStats

if TYPE_CHECKING:
    import redis

#: Writes the entry unless one is there (values never change), and gives back the
#: caller's lease (``ARGV[3]``: its token; empty: none) in the same step.
_PUT = """
local written = 0
if ARGV[2] == '' then
  written = redis.call('SET', KEYS[1], ARGV[1], 'NX') and 1 or 0
else
  written = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
end
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
return written
"""

#: Deletes a key only while it holds the given value (a lease that is still ours,
#: a bad row that nobody has replaced meanwhile).
_DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

#: Replaces a lease that is no longer live (its owner is gone) by ours, unless
#: another driver took it over first.
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


class RedisStore:
    """A memo in a Redis server, shared by every driver that uses the same server
    and ``namespace`` (see the module's docstring for the rules).

    ``server`` is a ``redis://`` URL (``redis://:KEY@127.0.0.1:6379/0``; the
    store then owns the connection and ``close`` closes it) or a
    ``redis.Redis`` client of one's own (bytes responses: leave
    ``decode_responses`` off). ``namespace`` keeps this memo's keys apart from
    others' on the server. ``lease_timeout``: seconds an in-flight lease is
    trusted (``None``: no leases). ``timeout``: seconds a connection or a
    command may take before it fails (URL only).
    """

    name = "redis"

    def __init__(
        self,
        server: str | redis.Redis,
        *,
        namespace: str = "spangraph",
        lease_timeout: float | None = 300.0,
        timeout: float = 5.0,
    ) -> None:
        import redis

        if not namespace or any(c.isspace() for c in namespace):
            raise ValueError(
                f"namespace must be a non-empty word without spaces, got {namespace!r}"
            )
        if lease_timeout is not None and lease_timeout <= 0:
            raise ValueError(f"lease_timeout must be > 0 seconds or None, got {lease_timeout}")
        if isinstance(server, str):
            self._client: redis.Redis = redis.Redis.from_url(
                server, socket_timeout=timeout, socket_connect_timeout=timeout
            )
            self._owned = True
            self._where = _safe_url(server)
        else:
            self._client = server
            self._owned = False
            kwargs = server.connection_pool.connection_kwargs
            self._where = f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
        self.namespace = namespace
        self.lease_timeout = lease_timeout
        self.stats = CacheStats()
        self._memo_prefix = f"{namespace}:memo:"
        self._lease_prefix = f"{namespace}:lease:"
        self._put_script = self._client.register_script(_PUT)
        self._delete_if = self._client.register_script(_DELETE_IF)
        self._take_over = self._client.register_script(_TAKE_OVER)
        self._lock = threading.Lock()
        #: Keys this store holds a lease on, and the lease's value (token and owner).
        self._leases: dict[str, bytes] = {}

    # -- the store -----------------------------------------------------------------------

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry under ``key``, or ``None`` (absent, expired, or a bad row)."""
        raw = self._client.get(self._memo_prefix + key)
        if raw is None:
            with self._lock:
                self.stats.misses += 1
            return None
        value = _read_value(key, raw)
        if value is None:
            self._bad_row(key, raw)
            return None
        with self._lock:
            self.stats.hits += 1
        return value

    def _bad_row(self, key: str, raw: Any) -> None:
        with self._lock:
            self.stats.bad_rows += 1
            self.stats.misses += 1
        self._delete_if(keys=[self._memo_prefix + key], args=[raw])

    def reject(self, key: str) -> None:
        """The value under ``key`` is not a memo entry: count a bad row, delete it."""
        with self._lock:
            self.stats.bad_rows += 1
        self._client.delete(self._memo_prefix + key)

    def put(self, key: str, value: Mapping[str, Any], ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` unless an entry is there (and give back this
        store's lease on ``key``)."""
        text = json.dumps(value, separators=(",", ":"))
        raw = _checksum(key, text.encode()) + b" " + text.encode()
        expires = "" if ttl is None else str(max(1, round(ttl * 1000)))
        with self._lock:
            lease = self._leases.get(key, b"")
        written = self._put_script(
            keys=[self._memo_prefix + key, self._lease_prefix + key], args=[raw, expires, lease]
        )
        with self._lock:
            if lease:
                self._leases.pop(key, None)
            if written:
                self.stats.writes += 1
                self.stats.entries += 1
                self.stats.bytes += len(text)

    def evict(self) -> None:
        """Nothing: expiry and budgets are the server's (entries carry their TTL, and
        the server's ``maxmemory`` policy keeps its size)."""

    # -- in-flight leases ----------------------------------------------------------------

    def claim(self, key: str) -> Claim:
        """Take an in-flight lease on ``key`` unless its entry is there (then it is
        returned) or another live lease holds it (then: ``wait``). Without leases, or
        when the server refuses, ``Claim()``: compute, unleased."""
        if self.lease_timeout is None:
            return Claim()
        import redis

        try:
            return self._claim(key)
        except redis.RedisError:
            with self._lock:
                self.stats.lease_errors += 1
            return Claim()

    def _claim(self, key: str) -> Claim:
        assert self.lease_timeout is not None
        found = self._entry(key)
        if found is not None:
            return Claim(found)
        me = this_process()
        mine = f"{secrets.token_hex(16)} {me.pid} {me.started} {me.host}".encode()
        lease_key = self._lease_prefix + key
        ttl = max(1, round(self.lease_timeout * 1000))
        taken = bool(self._client.set(lease_key, mine, nx=True, px=ttl))
        stale = False
        if not taken:
            holder = self._client.get(lease_key)
            if holder is not None and not _live(holder):
                taken = stale = bool(self._take_over(keys=[lease_key], args=[holder, mine, ttl]))
        if not taken:
            found = self._entry(key)  # written meanwhile, by the lease's holder
            return Claim(found) if found is not None else Claim(wait=True)
        found = self._entry(key)
        if found is not None:  # written between our look and our lease: give it back
            self._delete_if(keys=[lease_key], args=[mine])
            return Claim(found)
        with self._lock:
            self._leases[key] = mine
            self.stats.leases += 1
            self.stats.lease_takeovers += stale
        return Claim(leased=True)

    def _entry(self, key: str) -> dict[str, Any] | None:
        raw = self._client.get(self._memo_prefix + key)
        return None if raw is None else _read_value(key, raw)

    def release(self, key: str) -> None:
        """Give back this store's lease on ``key`` (nothing if it holds none)."""
        with self._lock:
            lease = self._leases.pop(key, None)
        if lease is not None:
            self._delete_if(keys=[self._lease_prefix + key], args=[lease])

    # -- looking after the memo ----------------------------------------------------------

    def keys(self) -> list[str]:
        """The keys of this namespace's entries (in no particular order)."""
        cut = len(self._memo_prefix)
        out = []
        for raw in self._client.scan_iter(match=_glob(self._memo_prefix) + "*", count=1000):
            name = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            out.append(name[cut:])
        return out

    def __len__(self) -> int:
        return len(self.keys())

    def clear(self) -> int:
        """Delete every entry of this namespace (leases are left to their owners);
        the number deleted."""
        gone = 0
        names = list(self._client.scan_iter(match=_glob(self._memo_prefix) + "*", count=1000))
        for start in range(0, len(names), 500):
            gone += int(self._client.delete(*names[start : start + 500]))
        return gone

    def close(self) -> None:
        """Give back the leases this store holds (best effort), and close the
        connection if the store opened it."""
        import redis

        with self._lock:
            leases, self._leases = self._leases, {}
        for key, lease in leases.items():
            try:
                self._delete_if(keys=[self._lease_prefix + key], args=[lease])
            except redis.RedisError:
                break  # the server is gone: the leases expire there by themselves
        if self._owned:
            self._client.close()

    def __repr__(self) -> str:
        return f"RedisStore({self._where!r}, namespace={self.namespace!r})"


def _checksum(key: str, data: bytes) -> bytes:
    return blake2b(key.encode() + b"\0" + data, digest_size=16).hexdigest().encode()


def _read_value(key: str, raw: Any) -> dict[str, Any] | None:
    """A value's JSON object, or ``None`` for a bad row."""
    if not isinstance(raw, bytes):
        return None
    checksum, space, data = raw.partition(b" ")
    if not space or checksum != _checksum(key, data):
        return None
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return value if isinstance(value, dict) else None


def _live(holder: Any) -> bool:
    """Whether a lease's owner may still be computing (an unreadable lease is not)."""
    try:
        text = holder.decode() if isinstance(holder, bytes) else str(holder)
        _token, pid, started, host = text.split(" ", 3)
        return owner_alive(Owner(host, int(pid), int(started)))
    except (UnicodeDecodeError, ValueError):
        return False


def _glob(prefix: str) -> str:
    """``prefix`` with Redis' glob characters escaped."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in prefix)


def _safe_url(url: str) -> str:
    """The URL without its password (a store's repr is in warnings and spans)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    path = parts.path if parts.path not in ("", "/") else ""
    return f"{parts.scheme}://{host}{port}{path}"
