"""The ``store`` source: a message processor that forwards what ``store`` steps accepted.

It leases due messages of its queue (engine/store/store.py: two processors, in one process or in
two replicas sharing PostgreSQL, never hold the same message at once), runs the flow on each
with ``${vars.message_id}`` (the idempotency key to pass on) and ``${vars.attempt}`` set, and then:

- the flow succeeded: the message is deleted;
- it failed and the policy retries it: its next attempt is scheduled in the store, after the
  backoff (the attempts survive a restart);
- its attempts are used up, or the failure is not retried: it moves to the dead-letter store.

The outcomes are written in batches: one store transaction per round deletes what was
delivered, reschedules what failed, renews the leases of the flows still running (once half the
lease has passed, so a flow that runs longer than ``lease`` keeps its message) and claims the
next messages.  A poison message costs one slot for one attempt at a time and never stops the others.
Without ``on_error.redelivery`` a processor tries 10 times, 1 s doubling to 60 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from engine.message import Message
from engine.sources.base import Redelivery, Source, SourceContext, source_kind
from engine.sources.policy import DURATION
from engine.store import StoreError, current_store
from engine.units import parse_duration

if TYPE_CHECKING:
    from engine.compiler import CompileContext
    from engine.store.store import StoredMessage

log = logging.getLogger("interlace.sources.store")

DEFAULT_POLICY = Redelivery(max_attempts=10, initial=1.0, multiplier=2.0, maximum=60.0, jitter=0.2)


class StoreSource(Source):
    kind = "store"
    brings_data = False  # a body a flow stored: whose it was (the caller's or the flow's) is not kept
    needs_store = True

    def __init__(self, queue: str, concurrency: int, ordered: bool, lease: float, poll: float) -> None:
        self.queue = queue
        self.concurrency = concurrency
        self.ordered = ordered
        self.lease = lease
        self.poll = poll

    def describe(self) -> dict[str, Any]:
        return {"queue": self.queue, "concurrency": self.concurrency, "ordered": self.ordered,
                "lease_seconds": self.lease}

    async def run(self, ctx: SourceContext) -> None:
        await _Processor(self, ctx).run()


class _Processor:
    """One running processor.  Its flows run as tasks; their outcomes are collected and written,
    together with the renewal of the leases still running and the next claim, in one store
    transaction per round (``Store.cycle``).  While a round's transaction runs, the outcomes of
    the flows finishing meanwhile pile up for the next: the busier it is, the bigger the batch."""

    def __init__(self, source: StoreSource, ctx: SourceContext) -> None:
        from engine.store.store import Settlement

        self.source = source
        self.ctx = ctx
        self.store = current_store()
        self.policy = ctx.policy if ctx.policy != Redelivery() else DEFAULT_POLICY
        self.target = self.policy.dead_letter or {}
        self.dead_store = str(self.target.get("store") or f"{source.queue}.dead")
        self.pending = Settlement()  # outcomes not written yet
        self.leases: dict[int, float] = {}  # seq -> until when this process holds it (in flight)
        self.tasks: set[asyncio.Task[None]] = set()
        self.settled = asyncio.Event()  # an outcome is waiting to be written
        # each message's ctx.working() from its flow's start until its outcome is committed, so that
        # a source retired by a reload is cancelled only once what it began is recorded
        self.holds: list[contextlib.ExitStack] = []

    def _renewal_due(self, now: float) -> list[int]:
        """The in-flight messages whose lease is past its half: renewed in the next round, so that
        a flow running longer than the lease is not taken by another processor meanwhile."""
        half = self.source.lease / 2
        return [seq for seq, until in self.leases.items() if until - now <= half]

    def _next_renewal(self) -> float | None:
        if not self.leases:
            return None
        return min(self.leases.values()) - self.source.lease / 2

    async def run(self) -> None:
        from engine.store.store import Settlement

        source, ctx, store = self.source, self.ctx, self.store
        wake = store.waker(source.queue)
        ctx.running()
        try:
            while True:
                now = time.time()
                # paused, or retired by a reload (it finishes what it began, takes nothing new)
                free = 0 if ctx.paused or ctx.retiring else source.concurrency - len(self.tasks)
                renew = self._renewal_due(now)
                if not self.pending and not renew and free <= 0:
                    await self._wait(None)  # busy or paused: for an outcome, a renewal, a resume
                    continue
                settle, self.pending = self.pending, Settlement()
                holds, self.holds = self.holds, []
                settle.renew = renew
                self.settled.clear()
                started = time.time()
                try:
                    claimed = await store.cycle(source.queue, settle, claim=free, lease=source.lease,
                                                ordered=source.ordered)
                except StoreError as exc:
                    # the outcomes are kept for the next round; a lease that ran out meanwhile sends
                    # the message again (at-least-once)
                    self.pending.delivered[:0] = settle.delivered
                    self.pending.retries[:0] = settle.retries
                    self.holds[:0] = holds
                    ctx.failing(str(exc))
                    log.warning("processor %s: %s; trying again in %.1fs", ctx.name, exc, source.poll)
                    await asyncio.sleep(source.poll)
                    continue
                for hold in holds:
                    hold.close()
                for seq in settle.renew:
                    if seq in self.leases:
                        self.leases[seq] = started + source.lease
                ctx.running()
                if claimed:
                    ctx.lag(max(0.0, time.time() - min(m.created for m in claimed)))
                    for stored in claimed:
                        self.leases[stored.seq] = started + source.lease
                        task = asyncio.create_task(self._one(stored))
                        self.tasks.add(task)
                        task.add_done_callback(self.tasks.discard)
                elif free > 0 and not self.pending:
                    ctx.lag(0.0)
                    await self._idle(wake)
        finally:
            for task in self.tasks:
                task.cancel()
            if self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)
            if self.pending.delivered or self.pending.retries:
                # stopping (a reload, a shutdown): what finished is written if the store lets us
                with contextlib.suppress(StoreError, asyncio.CancelledError):
                    await asyncio.shield(store.cycle(source.queue, self.pending, claim=0, lease=source.lease))
            for hold in self.holds:
                hold.close()

    async def _wait(self, longest: float | None, wake: asyncio.Event | None = None) -> None:
        """Until an outcome is waiting, the next renewal falls due, the source is resumed (when
        paused), ``wake`` is set, or ``longest`` seconds pass."""
        deadline = self._next_renewal()
        if deadline is not None:
            until_renewal = max(0.0, deadline - time.time())
            longest = until_renewal if longest is None else min(longest, until_renewal)
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(self.settled.wait())]
        if self.ctx.paused:
            waiters.append(asyncio.ensure_future(self.ctx.admit()))
        if wake is not None:
            waiters.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=longest, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in waiters:
                future.cancel()

    async def _idle(self, wake: asyncio.Event) -> None:
        """Nothing to claim: wait for a new message here, a retry falling due, an outcome, or a poll."""
        wait = self.source.poll
        with contextlib.suppress(StoreError):
            due = await self.store.next_due(self.source.queue)
            if due is not None:
                wait = min(wait, max(0.005, due - time.time()))
        wake.clear()
        await self._wait(wait, wake)

    def _report(self, stored: StoredMessage, hold: contextlib.ExitStack, *, delivered: bool = False,
                retry: tuple[float, dict[str, Any]] | None = None) -> None:
        """An outcome for the next round; ``hold`` is released once that round committed it."""
        self.leases.pop(stored.seq, None)
        if delivered:
            self.pending.delivered.append(stored.seq)
        elif retry is not None:
            self.pending.retries.append((stored.seq, *retry))
        self.holds.append(hold.pop_all())
        self.settled.set()

    async def _one(self, stored: StoredMessage) -> None:
        with contextlib.ExitStack() as hold:  # released here unless _report hands it to the round
            hold.enter_context(self.ctx.working())
            await self._handle(stored, hold)

    async def _handle(self, stored: StoredMessage, hold: contextlib.ExitStack) -> None:
        ctx, policy, store = self.ctx, self.policy, self.store
        msg = Message(body=stored.body, content_type=stored.content_type, headers=dict(stored.headers),
                      correlation_id=stored.id)
        msg.vars.update(stored.vars)
        msg.vars["message_id"] = stored.id
        msg.vars["attempt"] = stored.attempts
        error = await ctx.run_once(msg)
        if error is None:
            self._report(stored, hold, delivered=True)
            return
        error["attempts"] = stored.attempts
        if stored.attempts < policy.max_attempts and policy.retries(error):
            self._report(stored, hold, retry=(policy.delay(stored.attempts), error))
            return
        try:
            if "folder" in self.target or "steps" in self.target:
                dead = Message(body=stored.body, content_type=stored.content_type, headers=dict(stored.headers),
                               correlation_id=stored.id)
                dead.vars.update(msg.vars)
                if await ctx.dead_letter(dead, error, self.source.queue):
                    self._report(stored, hold, delivered=True)
                    return
                # the dead-letter steps failed: the message is kept in the dead-letter store instead
            await store.bury(stored.seq, self.dead_store, ctx.name, error)
        except StoreError as exc:
            # the lease runs out and the message comes back: at-least-once, never lost
            log.warning("processor %s: could not record the outcome of %s: %s", ctx.name, stored.id, exc)
            self.leases.pop(stored.seq, None)
            return
        self.leases.pop(stored.seq, None)
        self.settled.set()  # a slot is free: the loop may claim again
        ctx.dead_lettered()
        log.warning("processor %s: message %s dead-lettered to %s after %d attempts: %s", ctx.name,
                    stored.id, self.dead_store, stored.attempts, error.get("message"))


@source_kind(
    "store",
    summary="Process the messages a store step accepted (a message processor): forward each, retry with "
            "backoff, dead-letter what keeps failing.",
    schema={
        "type": "object", "additionalProperties": False, "required": ["queue"],
        "properties": {
            "queue": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$", "description": "The queue the store "
                                                                                        "steps write to."},
            "concurrency": {"type": "integer", "minimum": 1, "maximum": 1000,
                            "description": "Messages in flight at once in this process (default 8)."},
            "ordered": {"type": "boolean", "description": "Keep the order per order_key: a message waits while an "
                                                          "older one with its key is not delivered (default false)."},
            "lease": {**DURATION, "description": "How long a message is held by one processor before another "
                                                 "may take it (it crashed); renewed while its flow runs "
                                                 "(default 60s)."},
            "poll": {**DURATION, "description": "How often an idle processor looks for messages other processes "
                                                "stored (default 1s; this process's own wake it at once)."},
        },
    },
    examples=[{"queue": "shipments", "concurrency": 4}, {"queue": "orders", "ordered": True}],
)
def build_store_source(config: dict[str, Any], ctx: CompileContext) -> Source:
    return StoreSource(str(config["queue"]), int(config.get("concurrency", 8)), bool(config.get("ordered", False)),
                       parse_duration(config.get("lease", 60)), parse_duration(config.get("poll", 1)))
