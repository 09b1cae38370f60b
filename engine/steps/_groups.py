"""Where the aggregate step keeps its open groups (Camel's aggregation repository).

``MemoryGroups``: this process's memory (the default).  Lost when the process dies; on a clean
stop the step completes its open groups first (``completed_by="stopped"``).

``SqlGroups``: two tables of a ``sql`` endpoint's database: ``interlace_aggregation``, one row
per gathered message (the step, the correlation key, the value as JSON, when it arrived), and
``interlace_aggregation_groups``, one row per open group (its size, its first message's id, when
its first and latest message arrived).  An add inserts its message and updates its group's row
in one transaction, and learns the group's size from that row: it reads no value back (unless a
``when`` predicate needs them), so a group of n messages costs n rows written, not n²/2 read.
A message is kept once its row is committed, so a group survives the engine being killed; the
next engine (or any replica on the same PostgreSQL) completes it.  Taking a group deletes its
row, then its messages, in one transaction: the database hands each row to one taker only, so
no message is sent in two groups.  On PostgreSQL, adding a message and taking a group are each
one call of a function of the database that first takes a lock of that group
(``pg_advisory_xact_lock``), so replicas see a group's messages in one order: a take gets every
message added before it, and one added after starts a new group.  A completion names the group
it saw complete by its first message's id, and takes nothing when that group is gone (another
replica, the sweeper or another message took it): so a group opened after it under the same key
is never taken as a part of it, too small or too early.  SQLite runs each add and take in a
``BEGIN IMMEDIATE`` transaction (one writer at a time, across processes); the same check keeps
its takes to the group seen.

The reads, and every PostgreSQL call, go through the endpoint as a flow's call does (its
breaker, retries, deadline and metrics), as ``engine/sqlstore.py`` does for the records of cache
steps; SQLite's add and take transactions go to its first database, as the resequence step's do.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy import text

from connectors.base import Reply, TransactionOptions
from connectors.sql import SqlConnector, SqlRequest
from engine import jsonfast

if TYPE_CHECKING:
    from sqlalchemy.engine import CursorResult

    from connectors.resilience import Endpoint

TABLE = "interlace_aggregation"  # a row per value gathered
GROUPS = "interlace_aggregation_groups"  # a row per open group: its size, first id and times
T = TypeVar("T")
Run = Callable[[Any, dict[str, Any]], Awaitable[list[tuple[Any, ...]]]]


@dataclass
class Group:
    """One open group as the step sees it after adding a message: never its values unless asked."""

    size: int  # values it holds, this message's included
    # which group this is: the database id of its first message (None in memory), so that a
    # completion takes this group and not one opened under the same key after it was taken
    opened_by: int | None = None
    values: list[Any] | None = None  # only when the add asked for them (a ``when`` predicate reads them)


class Groups(Protocol):
    async def add(self, key: str, value: Any, now: float, *, with_values: bool = False) -> Group:
        """Append ``value`` to the group of ``key`` (opening it); the store reads the group's values
        back only ``with_values``: an add costs the same whatever the group's size."""

    async def has(self, key: str) -> bool: ...

    async def count(self) -> int: ...

    async def oldest(self) -> str | None: ...

    async def due(self, first_before: float, last_before: float) -> list[tuple[str, str, int | None]]:
        """The groups to complete by time, each with why: ``timeout`` (its first message is as old
        as ``first_before``) or ``idle`` (its latest is as old as ``last_before``), and which
        group it is (``Group.opened_by``)."""

    async def take(self, key: str, opened_by: int | None = None) -> list[Any]:
        """The group's messages, taken out; with ``opened_by``, only while that group is the open
        one (else nothing: another taker had it)."""

    async def keys(self) -> list[str]: ...


@dataclass
class _Open:
    values: list[Any] = field(default_factory=list)
    first: float = 0.0
    last: float = 0.0


class MemoryGroups:
    """The open groups of one step in this process's memory, oldest first."""

    def __init__(self) -> None:
        self._groups: dict[str, _Open] = {}  # insertion order: the oldest group first

    async def add(self, key: str, value: Any, now: float, *, with_values: bool = False) -> Group:
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Open(first=now)
        group.values.append(value)
        group.last = now
        return Group(len(group.values), None, group.values)  # its own list: no copy to make

    async def has(self, key: str) -> bool:
        return key in self._groups

    async def count(self) -> int:
        return len(self._groups)

    async def oldest(self) -> str | None:
        return next(iter(self._groups), None)

    async def due(self, first_before: float, last_before: float) -> list[tuple[str, str, int | None]]:
        return [(key, "timeout" if group.first <= first_before else "idle", None)
                for key, group in self._groups.items() if group.first <= first_before or group.last <= last_before]

    async def take(self, key: str, opened_by: int | None = None) -> list[Any]:
        # one process, and nothing awaits between a message's add and its take: no other taker
        group = self._groups.pop(key, None)
        return group.values if group is not None else []

    async def keys(self) -> list[str]:
        return list(self._groups)


def _rows(result: CursorResult[Any], dialect: str, request: SqlRequest) -> Reply:
    return Reply(payload=[tuple(row) for row in result.fetchall()] if result.returns_rows else [])


# the groups' own rows: a group's count, first id and times, kept by each add in its transaction,
# so that an add never reads the group's values back and count, oldest, due and keys read no values
_HAS = text(f"SELECT 1 FROM {GROUPS} WHERE step = :step AND key = :key")
_COUNT = text(f"SELECT COUNT(*) FROM {GROUPS} WHERE step = :step")
_OLDEST = text(f"SELECT key FROM {GROUPS} WHERE step = :step ORDER BY opened_by LIMIT 1")
_DUE = text(f"SELECT key, first, opened_by FROM {GROUPS} WHERE step = :step "
            f"AND (first <= :first_before OR last <= :last_before) ORDER BY opened_by")
_KEYS = text(f"SELECT key FROM {GROUPS} WHERE step = :step ORDER BY opened_by")
# a table written before the groups' rows existed (one row per value only): its open groups get
# their rows when an engine starts on it
_BACKFILL = (f"INSERT INTO {GROUPS} (step, key, opened_by, size, first, last) "
             f"SELECT a.step, a.key, MIN(a.id), COUNT(*), MIN(a.arrived), MAX(a.arrived) FROM {TABLE} a "
             f"WHERE NOT EXISTS (SELECT 1 FROM {GROUPS} g WHERE g.step = a.step AND g.key = a.key) "
             f"GROUP BY a.step, a.key")

# SQLite: each add and take is one BEGIN IMMEDIATE transaction (one writer at a time, across
# processes too); the item's insert and its group's upsert commit together
_IMMEDIATE = text("BEGIN IMMEDIATE")
_INSERT = text(f"INSERT INTO {TABLE} (step, key, value, arrived) VALUES (:step, :key, :value, :arrived) "
               f"RETURNING id")
_UPSERT = text(f"INSERT INTO {GROUPS} (step, key, opened_by, size, first, last) "
               f"VALUES (:step, :key, :id, 1, :arrived, :arrived) ON CONFLICT (step, key) DO UPDATE "
               f"SET size = size + 1, last = MAX(last, excluded.last) RETURNING opened_by, size")
_VALUES = text(f"SELECT value FROM {TABLE} WHERE step = :step AND key = :key ORDER BY id")
# the group still open is the one its first message opened (groups are only ever taken whole)
_CLOSE = text(f"DELETE FROM {GROUPS} WHERE step = :step AND key = :key "
              f"AND (:opened_by IS NULL OR opened_by = :opened_by) RETURNING opened_by")
_TAKE = text(f"DELETE FROM {TABLE} WHERE step = :step AND key = :key RETURNING id, value")

# PostgreSQL: a group's add and take are each one call of a function of the database that first
# takes a lock of that group (held until the call's transaction ends).  In a function each
# statement reads what was committed when it starts, so the statements after the lock see every
# message added before it.  The add returns one row (its group's first id and size), or one row
# per value when asked for them.
_GROUP_LOCK = f"PERFORM pg_advisory_xact_lock(hashtext('{TABLE}'), hashtext(p_step || chr(1) || p_key));"
_PG_FUNCTIONS = (
    # the add of the version before, which read every value back: gone, so that an engine left
    # running it fails loudly instead of adding values its groups' rows do not count
    f"DROP FUNCTION IF EXISTS {TABLE}_add(TEXT, TEXT, BYTEA, DOUBLE PRECISION); "
    f"CREATE OR REPLACE FUNCTION {TABLE}_add(p_step TEXT, p_key TEXT, p_value BYTEA, p_arrived DOUBLE PRECISION, "
    f"p_values BOOLEAN) RETURNS TABLE (out_opened_by BIGINT, out_size INTEGER, out_value BYTEA) "
    f"LANGUAGE plpgsql AS $f$ DECLARE v_id BIGINT; v_opened_by BIGINT; v_size INTEGER; "
    f"BEGIN {_GROUP_LOCK} "
    f"INSERT INTO {TABLE} (step, key, value, arrived) VALUES (p_step, p_key, p_value, p_arrived) "
    f"RETURNING id INTO v_id; "
    f"INSERT INTO {GROUPS} AS g (step, key, opened_by, size, first, last) "
    f"VALUES (p_step, p_key, v_id, 1, p_arrived, p_arrived) ON CONFLICT (step, key) DO UPDATE "
    f"SET size = g.size + 1, last = GREATEST(g.last, EXCLUDED.last) RETURNING g.opened_by, g.size "
    f"INTO v_opened_by, v_size; "
    f"IF p_values THEN RETURN QUERY SELECT v_opened_by, v_size, a.value FROM {TABLE} a "
    f"WHERE a.step = p_step AND a.key = p_key ORDER BY a.id; "
    f"ELSE RETURN QUERY SELECT v_opened_by, v_size, NULL::BYTEA; END IF; END $f$; "
    f"CREATE OR REPLACE FUNCTION {TABLE}_take(p_step TEXT, p_key TEXT, p_opened_by BIGINT) "
    f"RETURNS TABLE (out_id BIGINT, out_value BYTEA) LANGUAGE plpgsql AS $f$ BEGIN {_GROUP_LOCK} "
    f"DELETE FROM {GROUPS} g WHERE g.step = p_step AND g.key = p_key "
    f"AND (p_opened_by IS NULL OR g.opened_by = p_opened_by); "
    f"IF NOT FOUND THEN RETURN; END IF; "
    f"RETURN QUERY DELETE FROM {TABLE} a WHERE a.step = p_step AND a.key = p_key RETURNING a.id, a.value; "
    f"END $f$;")
_PG_ADD = text(f"SELECT out_opened_by, out_size, out_value FROM {TABLE}_add(:step, :key, :value, :arrived, "
               f":with_values)")
_PG_TAKE = text(f"SELECT out_id, out_value FROM {TABLE}_take(:step, :key, :opened_by)")


class SqlGroups:
    """The open groups of one step in a sql endpoint's tables, shared by every engine using them."""

    def __init__(self, endpoint: Endpoint, connector: SqlConnector, step: str) -> None:
        self._endpoint, self._connector, self._step = endpoint, connector, step
        self._locked = connector.dialect == "postgresql"
        if self._locked:
            tables = (f"CREATE TABLE IF NOT EXISTS {TABLE} (id BIGSERIAL PRIMARY KEY, step TEXT NOT NULL, "
                      f"key TEXT NOT NULL, value BYTEA NOT NULL, arrived DOUBLE PRECISION NOT NULL); "
                      f"CREATE TABLE IF NOT EXISTS {GROUPS} (step TEXT NOT NULL, key TEXT NOT NULL, "
                      f"opened_by BIGINT NOT NULL, size INTEGER NOT NULL, first DOUBLE PRECISION NOT NULL, "
                      f"last DOUBLE PRECISION NOT NULL, PRIMARY KEY (step, key)); {_BACKFILL}")
            # two engines starting at once: one creates at a time (as engine/sqlstore.py does)
            connector.prepare_table(f"DO $$ BEGIN PERFORM pg_advisory_xact_lock(hashtext('{TABLE}')); {tables}; "
                                    f"{_PG_FUNCTIONS} END $$")
        else:
            connector.prepare_table(f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                                    f"step TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, "
                                    f"arrived REAL NOT NULL)")
            connector.prepare_table(f"CREATE TABLE IF NOT EXISTS {GROUPS} (step TEXT NOT NULL, key TEXT NOT NULL, "
                                    f"opened_by INTEGER NOT NULL, size INTEGER NOT NULL, first REAL NOT NULL, "
                                    f"last REAL NOT NULL, PRIMARY KEY (step, key))")
            connector.prepare_table(_BACKFILL)
        connector.prepare_table(f"CREATE INDEX IF NOT EXISTS {TABLE}_group ON {TABLE} (step, key)")
        connector.prepare_table(f"CREATE INDEX IF NOT EXISTS {GROUPS}_oldest ON {GROUPS} (step, opened_by)")
        # the connector's own attempt: a flow test's mocks answer the flows' calls, not these
        self._attempt = functools.partial(type(connector).attempt, connector)

    async def _run(self, statement: Any, params: dict[str, Any], shape: Any, *, writes: bool) -> Any:
        request = SqlRequest("execute" if writes else "query", statement, {"step": self._step, **params}, shape,
                             None, writes=writes)
        reply = await self._endpoint.invoke(request, self._attempt)
        return reply.payload

    async def _immediate(self, work: Callable[[Run], Awaitable[T]]) -> T:
        """SQLite: ``work`` in one BEGIN IMMEDIATE transaction, committed when it returns."""
        transaction = await self._connector.begin(TransactionOptions())
        try:
            async def run(statement: Any, params: dict[str, Any]) -> list[tuple[Any, ...]]:
                request = SqlRequest("execute", statement, {"step": self._step, **params}, _rows, transaction,
                                     writes=True)
                return (await self._attempt(request, 0)).payload  # type: ignore[no-any-return]

            await run(_IMMEDIATE, {})  # the write lock first: no upgrade from a read lock to fail later
            done = await work(run)
        except BaseException:
            await transaction.rollback()
            raise
        await transaction.commit()
        return done

    async def add(self, key: str, value: Any, now: float, *, with_values: bool = False) -> Group:
        params = {"key": key, "value": jsonfast.dumps(value), "arrived": now}
        if self._locked:  # insert and count under the group's lock, as one call
            rows = await self._run(_PG_ADD, {**params, "with_values": with_values}, _rows, writes=True)
            values = [jsonfast.loads(bytes(row[2])) for row in rows] if with_values else None
            return Group(int(rows[0][1]), int(rows[0][0]), values)

        async def work(run: Run) -> Group:
            ((item,),) = await run(_INSERT, params)
            ((opened_by, size),) = await run(_UPSERT, {**params, "id": item})
            values = [jsonfast.loads(bytes(row[0])) for row in await run(_VALUES, params)] if with_values else None
            return Group(int(size), int(opened_by), values)

        return await self._immediate(work)

    async def has(self, key: str) -> bool:
        return bool(await self._run(_HAS, {"key": key}, _rows, writes=False))

    async def count(self) -> int:
        rows = await self._run(_COUNT, {}, _rows, writes=False)
        return int(rows[0][0]) if rows else 0

    async def oldest(self) -> str | None:
        rows = await self._run(_OLDEST, {}, _rows, writes=False)
        return str(rows[0][0]) if rows else None

    async def due(self, first_before: float, last_before: float) -> list[tuple[str, str, int | None]]:
        rows = await self._run(_DUE, {"first_before": first_before, "last_before": last_before}, _rows,
                               writes=False)
        return [(str(row[0]), "timeout" if float(row[1]) <= first_before else "idle", int(row[2])) for row in rows]

    async def take(self, key: str, opened_by: int | None = None) -> list[Any]:
        params = {"key": key, "opened_by": opened_by}
        if self._locked:
            rows = await self._run(_PG_TAKE, params, _rows, writes=True)
        else:
            async def work(run: Run) -> list[tuple[Any, ...]]:
                return await run(_TAKE, params) if await run(_CLOSE, params) else []

            rows = await self._immediate(work)
        return [jsonfast.loads(bytes(value)) for _id, value in sorted(rows)]

    async def keys(self) -> list[str]:
        rows = await self._run(_KEYS, {}, _rows, writes=False)
        return [str(row[0]) for row in rows]
