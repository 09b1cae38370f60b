"""The state of a resequence step in a ``redis`` endpoint (``store:``; the steps around it in
``engine/steps/_resequence_durable.py``).

Every key of one step starts with ``{prefix}resequence:{<flow>/<step>}:`` (a Redis Cluster hash
tag: one slot).  Per step: ``state`` (a hash: ``next``, ``waiting_for``, ``waiting_since``,
``batch_since``), ``held`` (a hash, number -> the message) and ``order`` (a sorted set of the
numbers held), ``out`` (a list: the released messages in the order they are to be sent), ``seq``
(a counter naming each released message) and ``sender`` (the lease of the one replica that
sends).  Each decision is one Lua script, which Redis runs alone, on Redis' clock.
"""

from __future__ import annotations

from typing import Any

from engine.steps.resequence import Resequencer

# KEYS: state, held, order, out, seq.  Helpers shared by every script below.
_LIBRARY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local released = {}
local function fmt(number) return string.format('%.0f', number) end
local function lowest()
  local first = redis.call('ZRANGE', KEYS[3], 0, 0)
  if #first == 0 then return nil end
  return tonumber(first[1])
end
local function release(field, outcome)
  local copy = redis.call('HGET', KEYS[2], field)
  redis.call('HDEL', KEYS[2], field)
  redis.call('ZREM', KEYS[3], field)
  redis.call('RPUSH', KEYS[4], redis.call('INCR', KEYS[5]) .. ':' .. copy)
  released[#released + 1] = outcome
end
local nxt = tonumber(redis.call('HGET', KEYS[1], 'next'))
local function release_in_turn(outcome)
  local low = lowest()
  while low ~= nil and low == nxt do
    release(fmt(low), outcome)
    outcome = 'in_order'
    nxt = low + 1
    low = lowest()
  end
  redis.call('HSET', KEYS[1], 'next', fmt(nxt))
end
local function skip_gap(outcome)
  local low = lowest()
  if low ~= nil then
    nxt = low
    release_in_turn(outcome)
  end
end
local function note_gap()
  if redis.call('ZCARD', KEYS[3]) > 0 and redis.call('HGET', KEYS[1], 'waiting_for') ~= fmt(nxt) then
    redis.call('HSET', KEYS[1], 'waiting_for', fmt(nxt), 'waiting_since', string.format('%.6f', now))
  end
end
local function release_all(outcome)
  for _, field in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    release(field, outcome)
  end
end
"""

# the message at the head of out is the one being sent while a sender holds its lease: as in
# memory, max_pending counts the ones waiting behind it (KEYS[6]: the sender's lease)
_FULL = """
local function full(bound)
  return redis.call('LLEN', KEYS[4]) - redis.call('EXISTS', KEYS[6]) >= bound
end
"""

# ARGV: number, message, start ('' = the first seen), capacity, send late ('1'/'0'), max_pending
_HOLD_IN_STREAM = _LIBRARY + _FULL + """
if full(tonumber(ARGV[6])) then return {'refused'} end
local n = tonumber(ARGV[1])
if nxt == nil then
  nxt = tonumber(ARGV[3]) or n
  redis.call('HSET', KEYS[1], 'next', fmt(nxt))
end
if n < nxt then
  if ARGV[5] == '1' then redis.call('RPUSH', KEYS[4], redis.call('INCR', KEYS[5]) .. ':' .. ARGV[2]) end
  return {'late'}
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return {'duplicate'} end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], n, ARGV[1])
release_in_turn('in_order')
if redis.call('ZCARD', KEYS[3]) > tonumber(ARGV[4]) then skip_gap('after_capacity') end
note_gap()
return released
"""

# ARGV: the gap's timeout
_SWEEP_STREAM = _LIBRARY + """
if redis.call('ZCARD', KEYS[3]) == 0 then return {} end
local since = tonumber(redis.call('HGET', KEYS[1], 'waiting_since')) or now
if now - since >= tonumber(ARGV[1]) then
  skip_gap('after_gap_timeout')
  note_gap()
end
return released
"""

# ARGV: number, message, size, max_pending
_HOLD_IN_BATCH = _LIBRARY + _FULL + """
if full(tonumber(ARGV[4])) then return {'refused'} end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return {'duplicate'} end
if redis.call('ZCARD', KEYS[3]) == 0 then
  redis.call('HSET', KEYS[1], 'batch_since', string.format('%.6f', now))
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], tonumber(ARGV[1]), ARGV[1])
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[3]) then release_all('batch_size') end
return released
"""

# ARGV: the batch's timeout
_SWEEP_BATCH = _LIBRARY + """
if redis.call('ZCARD', KEYS[3]) == 0 then return {} end
local since = tonumber(redis.call('HGET', KEYS[1], 'batch_since')) or now
if now - since >= tonumber(ARGV[1]) then release_all('batch_timeout') end
return released
"""

# KEYS: sender, out; ARGV: this replica, the lease in ms.  The head of out, if this replica holds the lease.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('LINDEX', KEYS[2], 0)
"""

# KEYS: sender, out; ARGV: this replica, the entry sent.  Removed only if still the head and ours to send.
_SENT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('LINDEX', KEYS[2], 0) ~= ARGV[2] then return 0 end
redis.call('LPOP', KEYS[2])
return 1
"""

# KEYS: sender; ARGV: this replica
_GIVE_BACK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisKept:
    """A resequence step's state in a redis endpoint (see the module notes)."""

    kind = "redis"

    def __init__(self, connector: Any, step: str) -> None:
        self._connector = connector  # its store is made inside the serving loop, again after a reload
        self._base = f"resequence:{{{step}}}:"
        self._scripts: dict[str, Any] = {}
        self._client: Any = None

    def _script(self, name: str, source: str) -> Any:
        client = self._connector.store.client
        if client is not self._client:
            self._client, self._scripts = client, {}
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = client.register_script(source)
        return script

    def _key(self, name: str) -> str:
        return str(self._connector.store.prefix) + self._base + name

    def _keys(self) -> list[str]:
        return [self._key(name) for name in ("state", "held", "order", "out", "seq", "sender")]

    async def hold(self, step: Resequencer, number: int, copy: bytes) -> list[str]:
        if step.batch:
            outcomes = await self._script("hold_batch", _HOLD_IN_BATCH)(
                keys=self._keys(), args=[str(number), copy, step.size, step.max_pending])
        else:
            start = "" if step.next is None else step.next  # the configured start: Redis keeps the next one
            outcomes = await self._script("hold_stream", _HOLD_IN_STREAM)(
                keys=self._keys(), args=[str(number), copy, start, step.capacity, "1" if step.send_late else "0",
                                         step.max_pending])
        return [outcome.decode() for outcome in outcomes]

    async def sweep(self, step: Resequencer) -> list[str]:
        name, source = ("sweep_batch", _SWEEP_BATCH) if step.batch else ("sweep_stream", _SWEEP_STREAM)
        return [outcome.decode() for outcome in await self._script(name, source)(keys=self._keys(), args=[step.wait])]

    async def head(self, me: str, lease: float) -> bytes | None:
        entry = await self._script("lease", _LEASE)(keys=[self._key("sender"), self._key("out")],
                                                    args=[me, int(lease * 1000)])
        return None if entry is None else bytes(entry)

    async def sent(self, me: str, entry: bytes) -> None:
        await self._script("sent", _SENT)(keys=[self._key("sender"), self._key("out")], args=[me, entry])

    async def give_back(self, me: str) -> None:
        await self._script("give_back", _GIVE_BACK)(keys=[self._key("sender")], args=[me])

    async def waiting(self) -> int:
        return int(await self._connector.store.client.llen(self._key("out")))
