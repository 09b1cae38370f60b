"""A resequence step whose state lives in a ``redis`` endpoint (``store:``): the messages it
holds, the number whose turn it is, the gap's timer and the messages released but not yet sent.
A restart loses none of them and goes on from the right number; several replicas on one Redis
order one stream together.

Every key of one step starts with ``{prefix}resequence:{<flow>/<step>}:`` (a Redis Cluster hash
tag: one slot).  Per step: ``state`` (a hash: ``next``, ``waiting_for``, ``waiting_since``,
``batch_since``), ``held`` (a hash, number -> the message) and ``order`` (a sorted set of the
numbers held), ``out`` (a list: the released messages in the order they are to be sent), ``seq``
(a counter naming each released message) and ``sender`` (the lease of the one replica that
sends).

The decisions of the memory resequencer (``engine/steps/resequence.py``) are made here by Lua
scripts, which Redis runs one at a time, on Redis' clock: a message held, a gap filled or timed
out, a batch full or timed out.  Whatever a script releases is appended to ``out`` in that same
script, so the order of ``out`` is the order of release, whichever replica released it.  Sending
is one replica's: the one holding the ``sender`` lease (renewed before each message, and
lasting ``send_timeout`` + 2 s) sends ``out`` from its head, one message at a time, and removes
each once it was sent (or failed, as in memory).  A replica that dies holding it is replaced by
another once the lease runs out.  A message sent but not yet removed when its engine died is
sent again by the next sender: delivery is at least once, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from engine import jsonfast
from engine.errors import FlowError, ServiceUnavailable
from engine.message import Message
from engine.steps._fork import cancel_swallowed
from engine.steps.resequence import BadSequenceNumber, Resequencer, ResequencerFull

log = logging.getLogger("interlace.resequence")

LARGEST = 2**53  # Lua's numbers are doubles: integers are exact up to here
LEASE_MARGIN = 2.0  # the sender's lease outlasts one send by this much
POLL = 0.25  # how often an idle sender looks at out (messages another replica released)

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


def encode(msg: Message) -> bytes:
    """A held message as Redis keeps it: its envelope (JSON, one line) and its body."""
    envelope = {"content_type": msg.content_type, "headers": msg.headers, "method": msg.method,
                "path_params": msg.path_params, "query": msg.query, "query_string": msg.query_string,
                "correlation_id": msg.correlation_id, "headers_are_request": msg.headers_are_request,
                "headers_explicit": sorted(msg.headers_explicit), "vars": msg.vars, "attributes": msg.attributes,
                "status": msg.status}
    return jsonfast.dumps(envelope) + b"\n" + msg.body  # JSON escapes its newlines: the first one ends it


def decode(data: bytes) -> Message:
    head, _, body = data.partition(b"\n")
    envelope = jsonfast.loads(head)
    msg = Message(body=body, content_type=envelope["content_type"], headers=envelope["headers"],
                  method=envelope["method"], path_params=envelope["path_params"], query=envelope["query"],
                  query_string=envelope["query_string"], correlation_id=envelope["correlation_id"])
    msg.headers_are_request = envelope["headers_are_request"]
    msg.headers_explicit = set(envelope["headers_explicit"])
    msg.vars, msg.attributes, msg.status = envelope["vars"], envelope["attributes"], envelope["status"]
    return msg


class RedisResequencer(Resequencer):
    """A resequence step keeping its state in a redis endpoint (see the module notes)."""

    def __init__(self, *args: Any, connector: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connector = connector  # its store is made inside the serving loop, again after a reload
        self._base = f"resequence:{{{self.step}}}:"
        self._me = os.urandom(8).hex()
        self._lease_ms = int((self.send_timeout + LEASE_MARGIN) * 1000)
        self._scripts: dict[str, Any] = {}
        self._client: Any = None
        self._trouble_said = 0.0

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

    def _state_keys(self) -> list[str]:
        return [self._key(name) for name in ("state", "held", "order", "out", "seq")]

    def _trouble(self, doing: str, exc: Exception) -> None:
        if cancel_swallowed():
            raise asyncio.CancelledError from None
        now = time.monotonic()
        if now - self._trouble_said >= 10.0:  # a Redis that is down: said once in a while, not each tick
            self._trouble_said = now
            log.warning("resequence %s: could not %s in its redis store (%s); trying again", self.step, doing,
                        type(exc).__name__)

    # -- a message arrives --

    async def arrive(self, msg: Message) -> None:
        if self._sender is None:
            self.start()
        number = self._number_of(msg)
        if not -LARGEST <= number <= LARGEST:
            raise BadSequenceNumber(f"resequence {self.step}: a sequence number kept in redis is at most 2^53 "
                                    f"in size, got {number}", status=422 if msg.headers_are_request else 500)
        keys = [*self._state_keys(), self._key("sender")]
        copy = encode(msg)
        try:
            if self.batch:
                outcomes = await self._script("hold_batch", _HOLD_IN_BATCH)(
                    keys=keys, args=[str(number), copy, self.size, self.max_pending])
            else:
                start = "" if self.next is None else self.next  # the configured start: Redis keeps the next one
                outcomes = await self._script("hold_stream", _HOLD_IN_STREAM)(
                    keys=keys, args=[str(number), copy, start, self.capacity, "1" if self.send_late else "0",
                                     self.max_pending])
        except Exception as exc:
            log.warning("resequence %s: its redis store is unavailable (%s)", self.step, type(exc).__name__)
            raise ServiceUnavailable("the resequencer's store cannot be reached right now; try again shortly",
                                     headers={"Retry-After": "1"}) from None
        if outcomes and outcomes[0] == b"refused":
            self._count("refused")
            raise ResequencerFull(f"resequence {self.step}: {self.max_pending} messages are waiting to be sent; try "
                                  "again shortly", headers={"Retry-After": "1"})
        self._counted(outcomes)

    def _counted(self, outcomes: list[bytes]) -> None:
        for outcome in outcomes:
            self._count(outcome.decode())
        if outcomes:
            self._wake.set()

    # -- time, the sender, and the lifetime --

    async def _sweep(self) -> None:
        tick = min(max(self.wait / 10, 0.02), 1.0)
        name, source = ("sweep_batch", _SWEEP_BATCH) if self.batch else ("sweep_stream", _SWEEP_STREAM)
        while True:
            await asyncio.sleep(tick)
            if cancel_swallowed():
                raise asyncio.CancelledError
            try:
                self._counted(await self._script(name, source)(keys=self._state_keys(), args=[self.wait]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._trouble("release messages by time", exc)

    async def _send_all(self) -> None:
        keys = [self._key("sender"), self._key("out")]
        while True:
            if cancel_swallowed():
                raise asyncio.CancelledError
            try:
                entry = await self._script("lease", _LEASE)(keys=keys, args=[self._me, self._lease_ms])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._trouble("send", exc)
                entry = None
            if entry is None:  # nothing to send, or another replica sends
                if self._stopping:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL):
                        await self._wake.wait()
                continue
            try:
                copy = decode(bytes(entry).partition(b":")[2])
            except (FlowError, KeyError, TypeError):  # not a message of ours: dropped, not retried forever
                log.warning("resequence %s: a released message in its redis store cannot be read; dropped",
                            self.step)
                self._count("failed")
            else:
                await self._deliver(copy)
            try:
                await self._script("sent", _SENT)(keys=keys, args=[self._me, entry])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # it stays at the head: sent again once Redis answers (at least once)
                self._trouble("remove a sent message", exc)

    async def stop(self) -> None:
        """Held messages stay in Redis for the next engine; what was released is sent now, each within
        its send_timeout, if this replica is the sender (else the sender sends it)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        self._stopping = True
        self._wake.set()
        if self._sender is None:
            return
        try:
            waiting = int(await self._connector.store.client.llen(self._key("out")))
        except Exception:
            waiting = 0
        _done, late = await asyncio.wait({self._sender}, timeout=self.send_timeout * (waiting + 1) + 1.0)
        for task in late:
            task.cancel()
        await asyncio.gather(self._sender, return_exceptions=True)
        with contextlib.suppress(Exception):  # the next replica need not wait for the lease to run out
            await self._script("give_back", _GIVE_BACK)(keys=[self._key("sender")], args=[self._me])
        self._sender = None
        self._stopping = False
