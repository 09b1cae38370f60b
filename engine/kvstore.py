"""Short-lived shared state for the cache, throttle and idempotency steps: in this process by
default, in Redis when several replicas must see the same entries and counters.

Both stores give the same four operations: ``get``, ``put`` (with a time to live), ``claim``
(put only if absent: the first of several replicas wins) and ``take`` (one permit of a rate
limit).  Rate limits in Redis run as one Lua script per decision, on Redis' own clock, so
replicas with drifting clocks still hold one limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("interlace.store")


@dataclass(frozen=True, slots=True)
class Decision:
    """One rate-limit decision: allowed or not, how long until a permit frees, what is left."""

    allowed: bool
    retry_after: float
    remaining: int


LONGEST_STORED_KEY = 200
_DIGEST = "sha256:"


def stored_key(key: str, *, text: bool = False) -> str:
    """The name an entry is kept under: the key itself when short, else its SHA-256.

    Keys come from requests (an idempotency key, a cache key of a body's field): kept whole,
    10,000 callers' 1 MB keys were 10 GB of one step's entries, and PostgreSQL refuses a key past
    its index row's ~2.7 kB.  ``text``: the store keeps text (SQL), which cannot hold U+0000
    either.  A key that looks like a digest is hashed too, so no short key meets a long one's."""
    if len(key) <= LONGEST_STORED_KEY and not key.startswith(_DIGEST) and not (text and "\x00" in key):
        return key
    return _DIGEST + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class KeyValueStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: float) -> None: ...

    async def claim(self, key: str, value: bytes, ttl: float) -> bool:
        """Store ``value`` under ``key`` only if nothing is there; True when this call did."""
        ...

    async def delete(self, key: str) -> None: ...

    async def take(self, key: str, limit: int, window: float, algorithm: str) -> Decision:
        """One permit of ``limit`` per ``window`` seconds (token_bucket or sliding_window)."""
        ...


class MemoryStore:
    """Entries in this process, least recently used first out past ``max_entries``.

    ``get``/``put`` hold bytes, as every store does; ``recall``/``keep`` (no await) hold any
    object, for a step that keeps its entries here ready to use (the cache keeps decoded answers)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def recall(self, key: str) -> Any:
        if len(key) > LONGEST_STORED_KEY or key.startswith(_DIGEST):
            key = stored_key(key)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def keep(self, key: str, value: Any, ttl: float) -> None:
        key = stored_key(key)
        self._entries[key] = (time.monotonic() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def get(self, key: str) -> bytes | None:
        return self.recall(key)  # type: ignore[no-any-return]

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        self.keep(key, value, ttl)

    async def claim(self, key: str, value: bytes, ttl: float) -> bool:
        if await self.get(key) is not None:
            return False
        await self.put(key, value, ttl)
        return True

    async def delete(self, key: str) -> None:
        self._entries.pop(stored_key(key), None)

    async def take(self, key: str, limit: int, window: float, algorithm: str) -> Decision:
        key = stored_key(key)
        now = time.monotonic()
        state = self._buckets.get(key)
        if algorithm == "sliding_window":
            stamps = state if state is not None else []
            cutoff = now - window
            while stamps and stamps[0] <= cutoff:
                stamps.pop(0)
            if len(stamps) < limit:
                stamps.append(now)
                decision = Decision(True, 0.0, limit - len(stamps))
            else:
                decision = Decision(False, stamps[0] + window - now, 0)
            self._remember(key, stamps)
            return decision
        rate = limit / window
        tokens, stamp = (float(limit), now) if state is None else (state[0], state[1])
        tokens = min(float(limit), tokens + (now - stamp) * rate)
        if tokens >= 1.0:
            self._remember(key, [tokens - 1.0, now])
            return Decision(True, 0.0, int(tokens - 1.0))
        self._remember(key, [tokens, now])
        return Decision(False, (1.0 - tokens) / rate, 0)

    def _remember(self, key: str, state: list[float]) -> None:
        self._buckets[key] = state
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_entries:
            self._buckets.popitem(last=False)


# KEYS[1] = bucket; ARGV = limit, window seconds.  State: tokens and the time they were counted.
_TOKEN_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local rate = limit / window
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or limit
local at = tonumber(state[2]) or now
tokens = math.min(limit, tokens + math.max(0, now - at) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 2000))
return {allowed, tostring(wait), math.floor(tokens)}
"""

# KEYS[1] = sorted set of admitted times; ARGV = limit, window seconds, a unique member.
_SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
  return {1, '0', limit - count - 1}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tostring(tonumber(oldest[2]) + window - now), 0}
"""


# KEYS[1] = sorted set of the slots held, scored by when each lease ends; ARGV = limit, lease seconds,
# the slot's unique member.  Leases past their end belong to a replica that died: freed first.
_ACQUIRE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000))
  return 1
end
return 0
"""

# KEYS[1] = the slots; ARGV = lease seconds, the member: a held slot's lease starts again
_RENEW_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease = tonumber(ARGV[1])
local renewed = redis.call('ZADD', KEYS[1], 'XX', 'CH', now + lease, ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000))
return renewed
"""


# KEYS[1] = the slots; ARGV = the member, the channel, the slots' key as the replicas know it: a slot
# given back is announced, so a replica with messages waiting for that key tries again at once
_RELEASE_SLOT = """
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed == 1 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return removed
"""


class RedisStore:
    """Entries and counters in Redis, under ``prefix``; ``client`` is a redis.asyncio.Redis."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._bucket = client.register_script(_TOKEN_BUCKET)
        self._window = client.register_script(_SLIDING_WINDOW)
        self._acquire = client.register_script(_ACQUIRE_SLOT)
        self._renew = client.register_script(_RENEW_SLOT)
        self._release = client.register_script(_RELEASE_SLOT)
        self._sequence = 0
        self._origin = os.urandom(8).hex()
        # waiting for a freed slot: futures per key, woken by one subscription to the freed channel
        self.freed_channel = prefix + "slots-freed"
        self._watchers: dict[str, set[asyncio.Future[None]]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._listening = False  # from the listener's start until it stops reading (before it closes)

    @property
    def client(self) -> Any:
        """The redis.asyncio client, for a step's own scripts (the aggregate's groups)."""
        return self._client

    @property
    def prefix(self) -> str:
        return self._prefix

    async def ping(self) -> None:
        await self._client.ping()

    async def get(self, key: str) -> bytes | None:
        value = await self._client.get(self._prefix + stored_key(key))
        return value if value is None or isinstance(value, bytes) else bytes(value)

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._client.set(self._prefix + stored_key(key), value, px=max(1, math.ceil(ttl * 1000)))

    async def claim(self, key: str, value: bytes, ttl: float) -> bool:
        done = await self._client.set(self._prefix + stored_key(key), value, px=max(1, math.ceil(ttl * 1000)),
                                      nx=True)
        return bool(done)

    async def delete(self, key: str) -> None:
        await self._client.delete(self._prefix + stored_key(key))

    async def take(self, key: str, limit: int, window: float, algorithm: str) -> Decision:
        name = self._prefix + "rate:" + stored_key(key)
        if algorithm == "sliding_window":
            self._sequence += 1
            member = f"{self._origin}-{self._sequence}"  # unique across replicas and calls
            allowed, wait, remaining = await self._window(keys=[name], args=[limit, window, member])
        else:
            allowed, wait, remaining = await self._bucket(keys=[name], args=[limit, window])
        return Decision(bool(int(allowed)), float(wait), int(remaining))

    def slot_member(self) -> str:
        """A name for one held slot, unique across replicas and calls."""
        self._sequence += 1
        return f"{self._origin}-{self._sequence}"

    async def acquire_slot(self, key: str, member: str, limit: int, lease: float) -> bool:
        """Hold one of ``limit`` slots of ``key`` for ``lease`` seconds (renewed while held)."""
        done = await self._acquire(keys=[self._prefix + "slots:" + key], args=[limit, lease, member])
        return bool(int(done))

    async def renew_slot(self, key: str, member: str, lease: float) -> None:
        await self._renew(keys=[self._prefix + "slots:" + key], args=[lease, member])

    async def release_slot(self, key: str, member: str) -> None:
        await self._release(keys=[self._prefix + "slots:" + key], args=[member, self.freed_channel, key])

    def watch_slots(self, key: str) -> asyncio.Future[None]:
        """A future done when any replica next gives back a slot of ``key`` (``unwatch_slots`` it
        after).  Listening starts on first use; if it cannot, the future is simply never done and
        the waiter's own timer asks again."""
        if not self._listening:
            self._listening = True
            self._listener = asyncio.ensure_future(self._listen())
        freed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.setdefault(key, set()).add(freed)
        return freed

    def unwatch_slots(self, key: str, freed: asyncio.Future[None]) -> None:
        watchers = self._watchers.get(key)
        if watchers is not None:
            watchers.discard(freed)
            if not watchers:
                del self._watchers[key]

    async def _listen(self) -> None:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self.freed_channel)
            while self._watchers:
                message = await pubsub.get_message(timeout=1.0)
                if message is None or message.get("type") != "message":
                    continue
                data = message["data"]
                for freed in self._watchers.get(data.decode() if isinstance(data, bytes) else str(data), ()):
                    if not freed.done():
                        freed.set_result(None)
        except Exception as exc:  # the waiters' timers still ask again: slower, never stuck
            log.warning("listening for freed concurrency slots stopped (%s)", type(exc).__name__)
        finally:
            self._listening = False  # a watcher from now on starts a new listener
            with contextlib.suppress(Exception):
                await pubsub.aclose()
