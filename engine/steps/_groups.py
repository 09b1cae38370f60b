"""Where the aggregate step keeps its open groups (Camel's aggregation repository).

``MemoryGroups``: this process's memory (the default).  Lost when the process dies; on a clean
stop the step completes its open groups first (``completed_by="stopped"``).

``SqlGroups``: a table of a ``sql`` endpoint's database, ``interlace_aggregation``, one row
per gathered message (the step, the correlation key, the value as JSON, when it arrived).  A
message is kept once its row is inserted, so a group survives the engine being killed; the
next engine (or any replica on the same PostgreSQL) completes it.  Taking a group is one
``DELETE ... RETURNING``: the database hands each row to one taker only, so no message is
sent in two groups.  On PostgreSQL, adding a message (insert, then read its group) and taking a
group run in two functions of the database that first take a lock of that group
(``pg_advisory_xact_lock``), so replicas see a group's messages in one order: a take gets every
message added before it, and one added after starts a new group.  A completion names the group
it saw complete by its first message's id, and takes nothing when that group is gone (another
replica, the sweeper or another message took it): so a group opened after it under the same key
is never taken as a part of it, too small or too early.  SQLite runs one write at a time; the
same check keeps its takes to the group seen.

Every statement goes through the endpoint as a flow's call does (its breaker, retries,
deadline and metrics), as ``engine/sqlstore.py`` does for the records of cache steps.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import text

from connectors.base import Reply
from connectors.sql import SqlConnector, SqlRequest
from engine import jsonfast

if TYPE_CHECKING:
    from sqlalchemy.engine import CursorResult

    from connectors.resilience import Endpoint

TABLE = "interlace_aggregation"


@dataclass
class Group:
    """One open group as the step sees it after adding a message."""

    values: list[Any]
    first: float  # wall-clock second of its first message
    last: float  # and of its latest
    new: bool = False  # this message opened it
    # which group this is: the database id of its first message (None in memory), so that a
    # completion takes this group and not one opened under the same key after it was taken
    opened_by: int | None = None


class Groups(Protocol):
    async def add(self, key: str, value: Any, now: float) -> Group: ...

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

    async def add(self, key: str, value: Any, now: float) -> Group:
        group = self._groups.get(key)
        new = group is None
        if group is None:
            group = self._groups[key] = _Open(first=now)
        group.values.append(value)
        group.last = now
        return Group(group.values, group.first, group.last, new)

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
    return Reply(payload=[tuple(row) for row in result.fetchall()])


def _changed(result: CursorResult[Any], dialect: str, request: SqlRequest) -> Reply:
    return Reply(payload=int(result.rowcount))


_INSERT = text(f"INSERT INTO {TABLE} (step, key, value, arrived) VALUES (:step, :key, :value, :arrived)")
_GROUP = text(f"SELECT value, arrived, id FROM {TABLE} WHERE step = :step AND key = :key ORDER BY id")
_HAS = text(f"SELECT 1 FROM {TABLE} WHERE step = :step AND key = :key LIMIT 1")
_COUNT = text(f"SELECT COUNT(DISTINCT key) FROM {TABLE} WHERE step = :step")
_OLDEST = text(f"SELECT key FROM {TABLE} WHERE step = :step ORDER BY id LIMIT 1")
_DUE = text(f"SELECT key, MIN(arrived), MIN(id) FROM {TABLE} WHERE step = :step GROUP BY key "
            f"HAVING MIN(arrived) <= :first_before OR MAX(arrived) <= :last_before")
_KEYS = text(f"SELECT DISTINCT key FROM {TABLE} WHERE step = :step")
# PostgreSQL: a group's add and take under its lock (the lock held until the call's transaction
# ends).  In a function each statement reads what was committed when it starts, so the read
# after the lock sees every message added before it.
_GROUP_LOCK = f"PERFORM pg_advisory_xact_lock(hashtext('{TABLE}'), hashtext(p_step || chr(1) || p_key));"
_PG_FUNCTIONS = (
    f"CREATE OR REPLACE FUNCTION {TABLE}_add(p_step TEXT, p_key TEXT, p_value BYTEA, p_arrived DOUBLE PRECISION) "
    f"RETURNS TABLE (out_value BYTEA, out_arrived DOUBLE PRECISION, out_id BIGINT) LANGUAGE plpgsql AS $f$ "
    f"BEGIN {_GROUP_LOCK} "
    f"INSERT INTO {TABLE} (step, key, value, arrived) VALUES (p_step, p_key, p_value, p_arrived); "
    f"RETURN QUERY SELECT a.value, a.arrived, a.id FROM {TABLE} a WHERE a.step = p_step AND a.key = p_key "
    f"ORDER BY a.id; END $f$; "
    f"CREATE OR REPLACE FUNCTION {TABLE}_take(p_step TEXT, p_key TEXT, p_opened_by BIGINT) "
    f"RETURNS TABLE (out_id BIGINT, out_value BYTEA) LANGUAGE plpgsql AS $f$ BEGIN {_GROUP_LOCK} "
    f"RETURN QUERY DELETE FROM {TABLE} a WHERE a.step = p_step AND a.key = p_key AND (p_opened_by IS NULL OR "
    f"EXISTS (SELECT 1 FROM {TABLE} b WHERE b.id = p_opened_by)) RETURNING a.id, a.value; END $f$;")
_PG_ADD = text(f"SELECT out_value, out_arrived, out_id FROM {TABLE}_add(:step, :key, :value, :arrived)")
_PG_TAKE = text(f"SELECT out_id, out_value FROM {TABLE}_take(:step, :key, :opened_by)")
# the group still open is the one its first message opened (groups are only ever taken whole)
_TAKE = text(f"DELETE FROM {TABLE} WHERE step = :step AND key = :key AND (:opened_by IS NULL OR "
             f"EXISTS (SELECT 1 FROM {TABLE} b WHERE b.id = :opened_by)) RETURNING id, value")


class SqlGroups:
    """The open groups of one step in a sql endpoint's table, shared by every engine using it."""

    def __init__(self, endpoint: Endpoint, connector: SqlConnector, step: str) -> None:
        self._endpoint, self._step = endpoint, step
        self._locked = connector.dialect == "postgresql"
        if connector.dialect == "postgresql":
            create = (f"CREATE TABLE IF NOT EXISTS {TABLE} (id BIGSERIAL PRIMARY KEY, step TEXT NOT NULL, "
                      f"key TEXT NOT NULL, value BYTEA NOT NULL, arrived DOUBLE PRECISION NOT NULL)")
            # two engines starting at once: one creates at a time (as engine/sqlstore.py does)
            create = f"DO $$ BEGIN PERFORM pg_advisory_xact_lock(hashtext('{TABLE}')); {create}; {_PG_FUNCTIONS} END $$"
        else:
            create = (f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                      f"step TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, arrived REAL NOT NULL)")
        connector.prepare_table(create)
        connector.prepare_table(f"CREATE INDEX IF NOT EXISTS {TABLE}_group ON {TABLE} (step, key)")
        # the connector's own attempt: a flow test's mocks answer the flows' calls, not these
        self._attempt = functools.partial(type(connector).attempt, connector)

    async def _run(self, statement: Any, params: dict[str, Any], shape: Any, *, writes: bool) -> Any:
        request = SqlRequest("execute" if writes else "query", statement, {"step": self._step, **params}, shape,
                             None, writes=writes)
        reply = await self._endpoint.invoke(request, self._attempt)
        return reply.payload

    async def add(self, key: str, value: Any, now: float) -> Group:
        params = {"key": key, "value": jsonfast.dumps(value), "arrived": now}
        if self._locked:  # insert and read under the group's lock, as one call
            rows = await self._run(_PG_ADD, params, _rows, writes=True)
        else:
            await self._run(_INSERT, params, _changed, writes=True)
            rows = await self._run(_GROUP, {"key": key}, _rows, writes=False)
        values = [jsonfast.loads(bytes(row[0])) for row in rows]
        arrived = [float(row[1]) for row in rows] or [now]
        return Group(values, min(arrived), max(arrived), len(rows) <= 1, int(rows[0][2]) if rows else None)

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
        rows = await self._run(_PG_TAKE if self._locked else _TAKE, {"key": key, "opened_by": opened_by}, _rows,
                               writes=True)
        return [jsonfast.loads(bytes(value)) for _id, value in sorted(rows)]

    async def keys(self) -> list[str]:
        rows = await self._run(_KEYS, {}, _rows, writes=False)
        return [str(row[0]) for row in rows]

