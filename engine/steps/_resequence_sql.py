"""The state of a resequence step in a ``sql`` endpoint's database (``store:``; the steps around
it in ``engine/steps/_resequence_durable.py``): a SQLite file keeps it across a restart, and every
replica on one PostgreSQL (or every engine on one SQLite file) shares it.

Three tables, created before the endpoint's first use: ``interlace_resequence_state`` (a row per
step: the number whose turn it is, the gap's timer, the batch's start, the sender's lease),
``interlace_resequence_held`` (the messages held, by step and number) and
``interlace_resequence_out`` (the released messages, in the order of their ids).  Each decision
is one transaction that first locks the step's row (``SELECT ... FOR UPDATE`` on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite, which lets one writer in at a time), so the replicas' decisions
follow one another as Redis' scripts do.  On PostgreSQL a hold and the sender's turn are each
one call of a function of the database (``interlace_resequence_state_hold`` and ``_head``,
created at start), so a decision is one round trip; SQLite (no server to round-trip to) and the
rarer sweep run ``_Turn``'s statements from here.  Times are the engines' wall clocks
(``time.time()``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from connectors.base import Reply, TransactionOptions
from connectors.sql import SqlConnector, SqlRequest
from engine.steps.resequence import Resequencer

if TYPE_CHECKING:
    from sqlalchemy.engine import CursorResult

    from connectors.resilience import Endpoint

STATE, HELD, OUT = "interlace_resequence_state", "interlace_resequence_held", "interlace_resequence_out"


def _rows(result: CursorResult[Any], dialect: str, request: SqlRequest) -> Reply:
    return Reply(payload=[tuple(row) for row in result.fetchall()] if result.returns_rows else [])


_IMMEDIATE = text("BEGIN IMMEDIATE")
_ENSURE = text(f"INSERT INTO {STATE} (step) VALUES (:step) ON CONFLICT (step) DO NOTHING")
_STATE = f"SELECT next, waiting_for, waiting_since, batch_since, sender, sender_until FROM {STATE} WHERE step = :step"
_LOCK_PG = text(_STATE + " FOR UPDATE")
_LOCK_SQLITE = text(_STATE)
_SAVE = text(f"UPDATE {STATE} SET next = :next, waiting_for = :waiting_for, waiting_since = :waiting_since, "
             f"batch_since = :batch_since WHERE step = :step")
_HELD_COUNT = text(f"SELECT COUNT(*) FROM {HELD} WHERE step = :step")
_HELD_LOWEST = text(f"SELECT MIN(number) FROM {HELD} WHERE step = :step")
_HELD_ALL = text(f"SELECT number FROM {HELD} WHERE step = :step ORDER BY number")
_IS_HELD = text(f"SELECT 1 FROM {HELD} WHERE step = :step AND number = :number")
_HOLD = text(f"INSERT INTO {HELD} (step, number, message) VALUES (:step, :number, :message)")
_RELEASE = text(f"INSERT INTO {OUT} (step, message) SELECT step, message FROM {HELD} "
                f"WHERE step = :step AND number = :number")
_UNHOLD = text(f"DELETE FROM {HELD} WHERE step = :step AND number = :number")
_PUSH = text(f"INSERT INTO {OUT} (step, message) VALUES (:step, :message)")
_OUT_COUNT = text(f"SELECT COUNT(*) FROM {OUT} WHERE step = :step")
_OUT_ANY = text(f"SELECT 1 FROM {OUT} WHERE step = :step LIMIT 1")
_OUT_HEAD = text(f"SELECT id, message FROM {OUT} WHERE step = :step ORDER BY id LIMIT 1")
_LEASE = text(f"UPDATE {STATE} SET sender = :me, sender_until = :until WHERE step = :step")
_SENT = text(f"DELETE FROM {OUT} WHERE id = :id AND step = :step AND EXISTS "
             f"(SELECT 1 FROM {STATE} WHERE step = :step AND sender = :me)")
_GIVE_BACK = text(f"UPDATE {STATE} SET sender = NULL, sender_until = NULL WHERE step = :step AND sender = :me")

Run = Callable[[Any, dict[str, Any]], Awaitable[list[tuple[Any, ...]]]]

# PostgreSQL: a hold and a sender's turn are each one call of a function of the database (one
# round trip, not 8 to 10 statements): the same decisions as _Turn below makes for SQLite, in the
# same order, under the same lock of the step's row.  A message released gets its outbox id in
# the order of release (the row lock orders the decisions, the loop the messages of one).
_PG_RELEASE_IN_TURN = (
    f"LOOP SELECT MIN(number) INTO v_low FROM {HELD} WHERE step = p_step; "
    f"EXIT WHEN v_low IS NULL OR v_low <> v_next; "
    f"INSERT INTO {OUT} (step, message) SELECT step, message FROM {HELD} WHERE step = p_step AND number = v_low; "
    f"DELETE FROM {HELD} WHERE step = p_step AND number = v_low; "
    f"v_released := v_released || v_outcome; v_outcome := 'in_order'; v_next := v_low + 1; END LOOP; ")
_PG_FUNCTIONS = (
    f"CREATE OR REPLACE FUNCTION {STATE}_hold(p_step TEXT, p_number BIGINT, p_message BYTEA, "
    f"p_now DOUBLE PRECISION, p_start BIGINT, p_batch BOOLEAN, p_size INTEGER, p_capacity INTEGER, "
    f"p_send_late BOOLEAN, p_max_pending INTEGER) RETURNS TEXT[] LANGUAGE plpgsql AS $f$ "
    f"DECLARE v_next BIGINT; v_waiting_for BIGINT; v_waiting_since DOUBLE PRECISION; "
    f"v_batch_since DOUBLE PRECISION; v_sender TEXT; v_sender_until DOUBLE PRECISION; v_low BIGINT; "
    f"v_released TEXT[] := '{{}}'; v_outcome TEXT := 'in_order'; v_number BIGINT; v_waiting BIGINT; "
    f"BEGIN "
    f"INSERT INTO {STATE} (step) VALUES (p_step) ON CONFLICT (step) DO NOTHING; "
    f"SELECT next, waiting_for, waiting_since, batch_since, sender, sender_until "
    f"INTO v_next, v_waiting_for, v_waiting_since, v_batch_since, v_sender, v_sender_until "
    f"FROM {STATE} WHERE step = p_step FOR UPDATE; "
    f"<<decide>> BEGIN "
    # the head of the outbox is the one being sent while a sender holds the lease: as in memory,
    # max_pending counts the ones waiting behind it
    f"v_waiting := (SELECT COUNT(*) FROM {OUT} WHERE step = p_step); "
    f"IF v_sender IS NOT NULL AND COALESCE(v_sender_until, 0) > p_now THEN v_waiting := v_waiting - 1; END IF; "
    f"IF v_waiting >= p_max_pending THEN v_released := ARRAY['refused']; EXIT decide; END IF; "
    f"IF NOT p_batch THEN "
    f"IF v_next IS NULL THEN v_next := COALESCE(p_start, p_number); END IF; "
    f"IF p_number < v_next THEN "
    f"IF p_send_late THEN INSERT INTO {OUT} (step, message) VALUES (p_step, p_message); END IF; "
    f"v_released := ARRAY['late']; EXIT decide; END IF; END IF; "
    f"IF EXISTS (SELECT 1 FROM {HELD} WHERE step = p_step AND number = p_number) THEN "
    f"v_released := ARRAY['duplicate']; EXIT decide; END IF; "
    f"IF p_batch AND NOT EXISTS (SELECT 1 FROM {HELD} WHERE step = p_step) THEN v_batch_since := p_now; END IF; "
    f"INSERT INTO {HELD} (step, number, message) VALUES (p_step, p_number, p_message); "
    f"IF p_batch THEN "
    f"IF (SELECT COUNT(*) FROM {HELD} WHERE step = p_step) >= p_size THEN "
    f"FOR v_number IN SELECT number FROM {HELD} WHERE step = p_step ORDER BY number LOOP "
    f"INSERT INTO {OUT} (step, message) SELECT step, message FROM {HELD} WHERE step = p_step AND number = v_number; "
    f"DELETE FROM {HELD} WHERE step = p_step AND number = v_number; "
    f"v_released := v_released || 'batch_size'::TEXT; END LOOP; END IF; "
    f"EXIT decide; END IF; "
    f"{_PG_RELEASE_IN_TURN}"
    f"IF (SELECT COUNT(*) FROM {HELD} WHERE step = p_step) > p_capacity THEN "
    f"SELECT MIN(number) INTO v_low FROM {HELD} WHERE step = p_step; "
    f"IF v_low IS NOT NULL THEN v_next := v_low; v_outcome := 'after_capacity'; {_PG_RELEASE_IN_TURN} END IF; "
    f"END IF; "
    f"IF EXISTS (SELECT 1 FROM {HELD} WHERE step = p_step) AND v_waiting_for IS DISTINCT FROM v_next THEN "
    f"v_waiting_for := v_next; v_waiting_since := p_now; END IF; "
    f"END decide; "
    f"UPDATE {STATE} SET next = v_next, waiting_for = v_waiting_for, waiting_since = v_waiting_since, "
    f"batch_since = v_batch_since WHERE step = p_step; "
    f"RETURN v_released; END $f$; "
    # the sender's turn: nothing (another replica holds the lease, or nothing is released), or
    # the outbox's head, with the lease taken or renewed
    f"CREATE OR REPLACE FUNCTION {STATE}_head(p_step TEXT, p_me TEXT, p_now DOUBLE PRECISION, "
    f"p_lease DOUBLE PRECISION) RETURNS TABLE (out_id BIGINT, out_message BYTEA) LANGUAGE plpgsql AS $f$ "
    f"DECLARE v_sender TEXT; v_sender_until DOUBLE PRECISION; "
    f"BEGIN "
    f"IF NOT EXISTS (SELECT 1 FROM {OUT} WHERE step = p_step) THEN RETURN; END IF; "
    f"INSERT INTO {STATE} (step) VALUES (p_step) ON CONFLICT (step) DO NOTHING; "
    f"SELECT sender, sender_until INTO v_sender, v_sender_until FROM {STATE} WHERE step = p_step FOR UPDATE; "
    f"IF v_sender IS NOT NULL AND v_sender <> p_me AND COALESCE(v_sender_until, 0) > p_now THEN RETURN; END IF; "
    f"UPDATE {STATE} SET sender = p_me, sender_until = p_now + p_lease WHERE step = p_step; "
    f"RETURN QUERY SELECT o.id, o.message FROM {OUT} o WHERE o.step = p_step ORDER BY o.id LIMIT 1; "
    f"END $f$;")
_PG_HOLD = text(f"SELECT {STATE}_hold(:step, :number, :message, :now, :start, :batch, :size, :capacity, "
                f":send_late, :max_pending)")
_PG_HEAD = text(f"SELECT out_id, out_message FROM {STATE}_head(:step, :me, :now, :lease)")


class _Turn:
    """A step's state row as one transaction reads and changes it, and what it released."""

    def __init__(self, run: Run, row: tuple[Any, ...], now: float) -> None:
        self.run, self.now = run, now
        self.next: int | None = None if row[0] is None else int(row[0])
        self.waiting_for: int | None = None if row[1] is None else int(row[1])
        self.waiting_since = float(row[2]) if row[2] is not None else None
        self.batch_since = float(row[3]) if row[3] is not None else None
        self.sender, self.sender_until = row[4], float(row[5]) if row[5] is not None else 0.0
        self.released: list[str] = []

    async def count(self, statement: Any) -> int:
        return int((await self.run(statement, {}))[0][0])

    async def lowest(self) -> int | None:
        low = (await self.run(_HELD_LOWEST, {}))[0][0]
        return None if low is None else int(low)

    async def release(self, number: int, outcome: str) -> None:
        await self.run(_RELEASE, {"number": number})
        await self.run(_UNHOLD, {"number": number})
        self.released.append(outcome)

    async def release_in_turn(self, outcome: str) -> None:
        low = await self.lowest()
        while low is not None and low == self.next:
            await self.release(low, outcome)
            outcome = "in_order"
            self.next = low + 1
            low = await self.lowest()

    async def skip_gap(self, outcome: str) -> None:
        low = await self.lowest()
        if low is not None:
            self.next = low
            await self.release_in_turn(outcome)

    async def note_gap(self) -> None:
        if await self.count(_HELD_COUNT) > 0 and self.waiting_for != self.next:
            self.waiting_for, self.waiting_since = self.next, self.now

    async def release_all(self, outcome: str) -> None:
        for (number,) in await self.run(_HELD_ALL, {}):
            await self.release(int(number), outcome)

    async def full(self, bound: int) -> bool:
        # the head of the outbox is the one being sent while a sender holds the lease: as in memory,
        # max_pending counts the ones waiting behind it
        sending = 1 if self.sender is not None and self.sender_until > self.now else 0
        return await self.count(_OUT_COUNT) - sending >= bound

    async def save(self) -> None:
        await self.run(_SAVE, {"next": self.next, "waiting_for": self.waiting_for,
                               "waiting_since": self.waiting_since, "batch_since": self.batch_since})


class SqlKept:
    """A resequence step's state in a sql endpoint's tables (see the module notes)."""

    kind = "sql"

    def __init__(self, endpoint: Endpoint, connector: SqlConnector, step: str) -> None:
        self._endpoint, self._connector, self._step = endpoint, connector, step
        self._postgres = connector.dialect == "postgresql"
        blob, serial = ("BYTEA", "BIGSERIAL PRIMARY KEY") if self._postgres else \
            ("BLOB", "INTEGER PRIMARY KEY AUTOINCREMENT")
        real = "DOUBLE PRECISION" if self._postgres else "REAL"
        for create in (
                f"CREATE TABLE IF NOT EXISTS {STATE} (step TEXT PRIMARY KEY, next BIGINT, waiting_for BIGINT, "
                f"waiting_since {real}, batch_since {real}, sender TEXT, sender_until {real})",
                f"CREATE TABLE IF NOT EXISTS {HELD} (step TEXT NOT NULL, number BIGINT NOT NULL, "
                f"message {blob} NOT NULL, PRIMARY KEY (step, number))",
                f"CREATE TABLE IF NOT EXISTS {OUT} (id {serial}, step TEXT NOT NULL, message {blob} NOT NULL)",
                f"CREATE INDEX IF NOT EXISTS {OUT}_step ON {OUT} (step, id)"):
            if self._postgres:  # two engines starting at once: one creates at a time (as engine/sqlstore.py does)
                create = f"DO $$ BEGIN PERFORM pg_advisory_xact_lock(hashtext('{STATE}')); {create}; END $$"
            connector.prepare_table(create)
        if self._postgres:
            connector.prepare_table(f"DO $$ BEGIN PERFORM pg_advisory_xact_lock(hashtext('{STATE}')); "
                                    f"{_PG_FUNCTIONS} END $$")
        # the connector's own attempt: a flow test's mocks answer the flows' calls, not these
        self._attempt = functools.partial(type(connector).attempt, connector)

    async def _once(self, statement: Any, params: dict[str, Any], *, writes: bool = False) -> list[tuple[Any, ...]]:
        """One statement outside a transaction, through the endpoint (its breaker, retries, deadline)."""
        request = SqlRequest("execute" if writes else "query", statement, {"step": self._step, **params}, _rows,
                             None, writes=writes)
        return (await self._endpoint.invoke(request, self._attempt)).payload  # type: ignore[no-any-return]

    async def _locked(self, work: Callable[[_Turn], Awaitable[list[str]]]) -> list[str]:
        """``work`` in one transaction holding the step's row, then the state it leaves saved."""
        transaction = await self._connector.begin(TransactionOptions())
        try:
            async def run(statement: Any, params: dict[str, Any]) -> list[tuple[Any, ...]]:
                request = SqlRequest("execute", statement, {"step": self._step, **params}, _rows, transaction,
                                     writes=True)
                return (await self._attempt(request, 0)).payload  # type: ignore[no-any-return]

            if not self._postgres:
                await run(_IMMEDIATE, {})  # the write lock first: no upgrade from a read lock to fail later
            await run(_ENSURE, {})
            row = (await run(_LOCK_PG if self._postgres else _LOCK_SQLITE, {}))[0]
            turn = _Turn(run, row, time.time())
            outcomes = await work(turn)
            await turn.save()
        except BaseException:
            await transaction.rollback()
            raise
        await transaction.commit()
        return outcomes

    async def hold(self, step: Resequencer, number: int, copy: bytes) -> list[str]:
        if self._postgres:
            rows = await self._once(_PG_HOLD, {
                "number": number, "message": copy, "now": time.time(), "start": step.next, "batch": step.batch,
                "size": step.size, "capacity": step.capacity, "send_late": step.send_late,
                "max_pending": step.max_pending}, writes=True)
            return list(rows[0][0] or [])

        async def work(turn: _Turn) -> list[str]:
            if await turn.full(step.max_pending):
                return ["refused"]
            if not step.batch:
                if turn.next is None:
                    turn.next = step.next if step.next is not None else number  # the configured start, or this
                if number < turn.next:
                    if step.send_late:
                        await turn.run(_PUSH, {"message": copy})
                    return ["late"]
            if await turn.run(_IS_HELD, {"number": number}):
                return ["duplicate"]
            if step.batch and await turn.count(_HELD_COUNT) == 0:
                turn.batch_since = turn.now
            await turn.run(_HOLD, {"number": number, "message": copy})
            if step.batch:
                if await turn.count(_HELD_COUNT) >= step.size:
                    await turn.release_all("batch_size")
                return turn.released
            await turn.release_in_turn("in_order")
            if await turn.count(_HELD_COUNT) > step.capacity:
                await turn.skip_gap("after_capacity")
            await turn.note_gap()
            return turn.released

        return await self._locked(work)

    async def sweep(self, step: Resequencer) -> list[str]:
        if not int((await self._once(_HELD_COUNT, {}))[0][0]):
            return []  # nothing held: no lock taken each tick

        async def work(turn: _Turn) -> list[str]:
            if await turn.count(_HELD_COUNT) == 0:
                return []
            if step.batch:
                if turn.now - (turn.batch_since or turn.now) >= step.wait:
                    await turn.release_all("batch_timeout")
            elif turn.now - (turn.waiting_since or turn.now) >= step.wait:
                await turn.skip_gap("after_gap_timeout")
                await turn.note_gap()
            return turn.released

        return await self._locked(work)

    async def head(self, me: str, lease: float) -> bytes | None:
        if self._postgres:
            rows = await self._once(_PG_HEAD, {"me": me, "now": time.time(), "lease": lease}, writes=True)
            return b"%d:" % int(rows[0][0]) + bytes(rows[0][1]) if rows else None
        if not await self._once(_OUT_ANY, {}):
            return None  # nothing to send: no lock taken each poll
        entry: list[bytes] = []

        async def work(turn: _Turn) -> list[str]:
            if turn.sender not in (None, me) and turn.sender_until > turn.now:
                return []  # another replica sends
            await turn.run(_LEASE, {"me": me, "until": turn.now + lease})
            head = await turn.run(_OUT_HEAD, {})
            if head:
                entry.append(b"%d:" % int(head[0][0]) + bytes(head[0][1]))
            return []

        await self._locked(work)
        return entry[0] if entry else None

    async def sent(self, me: str, entry: bytes) -> None:
        await self._once(_SENT, {"id": int(entry.partition(b":")[0]), "me": me}, writes=True)

    async def give_back(self, me: str) -> None:
        await self._once(_GIVE_BACK, {"me": me}, writes=True)

    async def waiting(self) -> int:
        return int((await self._once(_OUT_COUNT, {}))[0][0])
