"""The aggregate step's open groups in a ``redis`` endpoint (the third aggregation repository,
beside memory and sql in ``engine/steps/_groups.py``).

Every key of one step starts with ``{prefix}aggregate:{<flow>/<step>}:``; the braces are a Redis
Cluster hash tag, so all the keys a script touches live in one slot.  Per step:

- ``seq``: a counter, the id of every group opened (a group is named by it);
- ``open``: a sorted set of the open groups' keys, scored by their first message's id (oldest
  first: ``count``, ``oldest``, ``keys``);
- ``first`` and ``last``: sorted sets of the same keys, scored by when their first and latest
  message arrived (what ``due`` reads);
- ``g:<key>``: the group's values (a list, JSON each, in arrival order: its length is the
  group's size) and ``m:<key>``: a hash of the group's id.

Adding a message and taking a group are each one Lua script, which Redis runs alone: an add
sees every message added before it, and a take removes the whole group or nothing.  A take
names the group it saw complete by its first message's id and takes nothing when that group is
gone (another replica, the sweeper or another message took it), as the sql repository does:
so no message is sent twice and a group is never sent in parts.  The groups outlive an engine
as long as Redis keeps its data (its persistence, ``appendonly``, is the server's setting).
"""

from __future__ import annotations

from typing import Any

from engine import jsonfast
from engine.steps._groups import Group

# KEYS: values, meta, open, first, last, seq; ARGV: value, now, the group's key, '1' for its values.
# Returns {opened_by, size, value...}: the size is what RPUSH answers, and the values (LRANGE) are
# read only when asked for (a ``when`` predicate), so an add costs the same whatever the group's size.
_ADD = """
local opened = redis.call('HGET', KEYS[2], 'id')
if not opened then
  opened = tostring(redis.call('INCR', KEYS[6]))
  redis.call('HSET', KEYS[2], 'id', opened)
  redis.call('ZADD', KEYS[3], opened, ARGV[3])
  redis.call('ZADD', KEYS[4], ARGV[2], ARGV[3])
end
redis.call('ZADD', KEYS[5], 'GT', ARGV[2], ARGV[3])  -- replicas' clocks differ: the latest is the greatest
local reply = {opened, redis.call('RPUSH', KEYS[1], ARGV[1])}
if ARGV[4] == '1' then
  for _, value in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
    reply[#reply + 1] = value
  end
end
return reply
"""

# KEYS: values, meta, open, first, last; ARGV: the group's key, the id of the group seen ('' = any).
_TAKE = """
local opened = redis.call('HGET', KEYS[2], 'id')
if not opened or (ARGV[2] ~= '' and opened ~= ARGV[2]) then
  return {}
end
local values = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
return values
"""

# KEYS: open, first, last; ARGV: first_before, last_before.  Returns {key, reason, opened_by, ...}.
_DUE = """
local reply = {}
local seen = {}
for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])) do
  seen[key] = true
  reply[#reply + 1] = key
  reply[#reply + 1] = 'timeout'
  reply[#reply + 1] = redis.call('ZSCORE', KEYS[1], key)
end
for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[2])) do
  if not seen[key] then
    reply[#reply + 1] = key
    reply[#reply + 1] = 'idle'
    reply[#reply + 1] = redis.call('ZSCORE', KEYS[1], key)
  end
end
return reply
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bound(value: float) -> str:
    return "-inf" if value == float("-inf") else repr(value)


class RedisGroups:
    """The open groups of one step in a redis endpoint, shared by every engine using it."""

    def __init__(self, connector: Any, step: str) -> None:
        # the connector's store is made inside the serving loop, and again after a reload: looked up per use
        self._connector = connector
        self._base = f"aggregate:{{{step}}}:"
        self._scripts: tuple[Any, Any, Any, Any] | None = None  # (its client, add, take, due)

    def _client(self) -> tuple[Any, Any, Any, Any]:
        store = self._connector.store
        client = store.client
        if self._scripts is None or self._scripts[0] is not client:
            self._scripts = (client, client.register_script(_ADD), client.register_script(_TAKE),
                             client.register_script(_DUE))
        return self._scripts

    def _key(self, name: str) -> str:
        return str(self._connector.store.prefix) + self._base + name

    def _group_keys(self, key: str) -> list[str]:
        return [self._key("g:" + key), self._key("m:" + key), self._key("open"), self._key("first"),
                self._key("last")]

    async def add(self, key: str, value: Any, now: float, *, with_values: bool = False) -> Group:
        _client, add, _take, _due = self._client()
        reply = await add(keys=[*self._group_keys(key), self._key("seq")],
                          args=[jsonfast.dumps(value), repr(now), key, "1" if with_values else "0"])
        values = [jsonfast.loads(bytes(item)) for item in reply[2:]] if with_values else None
        return Group(int(reply[1]), int(reply[0]), values)

    async def has(self, key: str) -> bool:
        client = self._client()[0]
        return bool(await client.exists(self._key("m:" + key)))

    async def count(self) -> int:
        client = self._client()[0]
        return int(await client.zcard(self._key("open")))

    async def oldest(self) -> str | None:
        client = self._client()[0]
        first = await client.zrange(self._key("open"), 0, 0)
        return _text(first[0]) if first else None

    async def due(self, first_before: float, last_before: float) -> list[tuple[str, str, int | None]]:
        _client, _add, _take, due = self._client()
        reply = await due(keys=[self._key("open"), self._key("first"), self._key("last")],
                          args=[_bound(first_before), _bound(last_before)])
        return [(_text(reply[i]), _text(reply[i + 1]), int(float(reply[i + 2])))
                for i in range(0, len(reply), 3) if reply[i + 2] is not None]

    async def take(self, key: str, opened_by: int | None = None) -> list[Any]:
        _client, _add, take, _due = self._client()
        values = await take(keys=self._group_keys(key), args=[key, "" if opened_by is None else str(opened_by)])
        return [jsonfast.loads(bytes(item)) for item in values]

    async def keys(self) -> list[str]:
        client = self._client()[0]
        return [_text(key) for key in await client.zrange(self._key("open"), 0, -1)]
