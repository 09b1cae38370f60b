"""A resequence step whose state lives in a store (``store:``): the messages it holds, the number
whose turn it is, the gap's timer and the messages released but not yet sent.  A restart loses
none of them and goes on from the right number; several replicas on one store order one stream
together.

The store makes the memory resequencer's decisions (``engine/steps/resequence.py``) as one
atomic step each: a message held, a gap filled or timed out, a batch full or timed out.
Whatever one step releases is appended to the store's outbox in that same step, so the outbox's
order is the order of release, whichever replica released it.  Sending is one replica's: the one
holding the sender's lease (renewed before each message, lasting ``send_timeout`` + 2 s) sends
the outbox from its head, one message at a time, and removes each once it was sent (or failed,
as in memory).  A replica that dies holding it is replaced by another once the lease runs out; a
clean stop gives it back.  A message sent but not yet removed when its engine died is sent again
by the next sender: delivery is at least once, in order.

The stores: ``_resequence_redis.py`` (Lua scripts) and ``_resequence_sql.py`` (one transaction
per step, under a lock of the step's row).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any, Protocol

from engine import jsonfast
from engine.errors import FlowError, ServiceUnavailable
from engine.message import Message
from engine.steps._fork import cancel_swallowed
from engine.steps.resequence import BadSequenceNumber, Resequencer, ResequencerFull

log = logging.getLogger("interlace.resequence")

LARGEST = 2**53  # Lua's numbers are doubles, and SQL's BIGINT is 64 bits: one bound for both
LEASE_MARGIN = 2.0  # the sender's lease outlasts one send by this much
POLL = 0.25  # how often an idle sender looks at the outbox (messages another replica released)


class KeptState(Protocol):
    """Where a durable resequencer keeps its state; each call is atomic in the store."""

    kind: str  # "redis" or "sql", for the log lines

    async def hold(self, step: Resequencer, number: int, copy: bytes) -> list[str]:
        """Hold (or release at once, or drop) one message; the outcome of each message released,
        or ``["refused"]`` past ``max_pending``, ``["late"]``, ``["duplicate"]``."""

    async def sweep(self, step: Resequencer) -> list[str]:
        """Release what time released (a gap's or a batch's timeout); their outcomes."""

    async def head(self, me: str, lease: float) -> bytes | None:
        """Take or renew the sender's lease for ``lease`` seconds; the outbox's head if it is ours."""

    async def sent(self, me: str, entry: bytes) -> None:
        """Remove ``entry`` from the outbox, if it is still its head and the lease still ours."""

    async def give_back(self, me: str) -> None: ...

    async def waiting(self) -> int:
        """How many released messages wait in the outbox."""


def encode(msg: Message) -> bytes:
    """A held message as a store keeps it: its envelope (JSON, one line) and its body."""
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


class DurableResequencer(Resequencer):
    """A resequence step keeping its state in a store (see the module notes)."""

    def __init__(self, *args: Any, kept: KeptState, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kept = kept
        self._me = os.urandom(8).hex()
        self._lease = self.send_timeout + LEASE_MARGIN
        self._trouble_said = 0.0

    def _trouble(self, doing: str, exc: Exception) -> None:
        if cancel_swallowed():
            raise asyncio.CancelledError from None
        now = time.monotonic()
        if now - self._trouble_said >= 10.0:  # a store that is down: said once in a while, not each tick
            self._trouble_said = now
            log.warning("resequence %s: could not %s in its %s store (%s); trying again", self.step, doing,
                        self.kept.kind, type(exc).__name__)

    # -- a message arrives --

    async def arrive(self, msg: Message) -> None:
        if self._sender is None:
            self.start()
        number = self._number_of(msg)
        if not -LARGEST <= number <= LARGEST:
            raise BadSequenceNumber(f"resequence {self.step}: a sequence number kept in a store is at most 2^53 "
                                    f"in size, got {number}", status=self._refusal_status(msg))
        try:
            outcomes = await self.kept.hold(self, number, encode(msg))
        except Exception as exc:
            log.warning("resequence %s: its %s store is unavailable (%s)", self.step, self.kept.kind,
                        type(exc).__name__)
            raise ServiceUnavailable("the resequencer's store cannot be reached right now; try again shortly",
                                     headers={"Retry-After": "1"}) from None
        if outcomes and outcomes[0] == "refused":
            self._count("refused")
            raise ResequencerFull(f"resequence {self.step}: {self.max_pending} messages are waiting to be sent; try "
                                  "again shortly", headers={"Retry-After": "1"})
        self._counted(outcomes)

    def _counted(self, outcomes: list[str]) -> None:
        for outcome in outcomes:
            self._count(outcome)
        if outcomes:
            self._wake.set()

    # -- time, the sender, and the lifetime --

    async def _sweep(self) -> None:
        tick = min(max(self.wait / 10, 0.02), 1.0)
        while True:
            await asyncio.sleep(tick)
            if cancel_swallowed():  # a store's client swallowed the cancel: the stop waits for this task
                raise asyncio.CancelledError
            try:
                self._counted(await self.kept.sweep(self))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._trouble("release messages by time", exc)

    async def _send_all(self) -> None:
        while True:
            if cancel_swallowed():
                raise asyncio.CancelledError
            try:
                entry = await self.kept.head(self._me, self._lease)
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
                copy = decode(entry.partition(b":")[2])
            except (FlowError, KeyError, TypeError):  # not a message of ours: dropped, not retried forever
                log.warning("resequence %s: a released message in its store cannot be read; dropped", self.step)
                self._count("failed")
            else:
                await self._deliver(copy)
            try:
                await self.kept.sent(self._me, entry)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # it stays at the head: sent again once the store answers (at least once)
                self._trouble("remove a sent message", exc)

    async def stop(self) -> None:
        """Held messages stay in the store for the next engine; what was released is sent now, each
        within its send_timeout, if this replica is the sender (else the sender sends it)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        self._stopping = True
        self._wake.set()
        if self._sender is None:
            return
        try:
            waiting = await self.kept.waiting()
        except Exception:
            waiting = 0
        _done, late = await asyncio.wait({self._sender}, timeout=self.send_timeout * (waiting + 1) + 1.0)
        for task in late:
            task.cancel()
        await asyncio.gather(self._sender, return_exceptions=True)
        with contextlib.suppress(Exception):  # the next replica need not wait for the lease to run out
            await self.kept.give_back(self._me)
        self._sender = None
        self._stopping = False
