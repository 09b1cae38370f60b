"""Records of the cache and idempotent steps in a table of a ``sql`` endpoint's database.

A SQLite file beside the flows (``endpoints: {records: {sql: {url: sqlite:///records.db}}}``)
keeps idempotency records across a restart of the engine, and several engines on one machine
(or every replica on PostgreSQL) share them.  One table, ``interlace_records`` (created on each
of the endpoint's databases before its first use, after its ``init``): the key, the value and
when it expires, in wall-clock seconds so that an entry written before a restart expires on
time after it.  ``claim`` is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired``
statement: of two engines racing, the database lets one win.  Expired rows are deleted as later
ones are written.

Every statement goes through the endpoint like a flow's call: with ``urls`` (copies of one
database) a record is read and written on the database the endpoint fails over to, under its
breakers, retries and deadline, counted in its metrics.  Keeping the copies in step is the
databases' job (replication): a record written on a standby while the primary was down is on
the primary only when they replicate.

Rate limits and concurrency slots are not kept here (a database round trip per request is what
Redis is for): a throttle or concurrency step naming a sql endpoint is a load error.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from connectors.base import Reply
from connectors.sql import SqlConnector, SqlRequest
from engine.kvstore import Decision, stored_key

if TYPE_CHECKING:
    from sqlalchemy.engine import CursorResult

    from connectors.resilience import Endpoint

TABLE = "interlace_records"
_SWEEP_EVERY = 500  # writes between deletions of expired rows

_GET = text(f"SELECT value FROM {TABLE} WHERE key = :key AND expires > :now")
_PUT = text(f"INSERT INTO {TABLE} (key, value, expires) VALUES (:key, :value, :expires) "
            f"ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires")
_CLAIM = text(f"INSERT INTO {TABLE} (key, value, expires) VALUES (:key, :value, :expires) "
              f"ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires "
              f"WHERE {TABLE}.expires <= :now")
_DELETE = text(f"DELETE FROM {TABLE} WHERE key = :key")
_SWEEP = text(f"DELETE FROM {TABLE} WHERE expires <= :now")


def _value(result: CursorResult[Any], dialect: str, request: SqlRequest) -> Reply:
    row = result.first()
    return Reply(payload=None if row is None else bytes(row[0]))


def _changed(result: CursorResult[Any], dialect: str, request: SqlRequest) -> Reply:
    return Reply(payload=int(result.rowcount))


class SqlStore:
    """The ``get``/``put``/``claim``/``delete`` of ``engine.kvstore`` on a sql endpoint."""

    def __init__(self, endpoint: Endpoint, connector: SqlConnector) -> None:
        self._endpoint = endpoint
        blob = "BYTEA" if connector.dialect == "postgresql" else "BLOB"
        create = (f"CREATE TABLE IF NOT EXISTS {TABLE} (key TEXT PRIMARY KEY, value {blob} NOT NULL, "
                  f"expires DOUBLE PRECISION NOT NULL)")
        if connector.dialect == "postgresql":
            # two engines starting at once: PostgreSQL's CREATE TABLE IF NOT EXISTS is not safe against
            # itself (a duplicate pg_type row), so one creates at a time; one statement (the endpoint's
            # connections autocommit), the lock held to its end
            create = (f"DO $$ BEGIN PERFORM pg_advisory_xact_lock(hashtext('{TABLE}')); {create}; END $$")
        connector.prepare_table(create)
        # the connector's own attempt, not the instance's: a flow test's mocks answer the flows' calls
        self._attempt = functools.partial(type(connector).attempt, connector)
        self._writes = 0

    async def _run(self, operation: str, statement: Any, params: dict[str, Any], shape: Any) -> Any:
        request = SqlRequest(operation, statement, params, shape, None, writes=operation == "execute")
        reply = await self._endpoint.invoke(request, self._attempt)
        return reply.payload

    async def get(self, key: str) -> bytes | None:
        params = {"key": stored_key(key, text=True), "now": time.time()}
        value: bytes | None = await self._run("query", _GET, params, _value)
        return value

    async def _write(self, statement: Any, params: dict[str, Any]) -> int:
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            await self._run("execute", _SWEEP, {"now": time.time()}, _changed)
        return int(await self._run("execute", statement, params, _changed))

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._write(_PUT, {"key": stored_key(key, text=True), "value": value,
                                 "expires": time.time() + ttl})

    async def claim(self, key: str, value: bytes, ttl: float) -> bool:
        now = time.time()
        params = {"key": stored_key(key, text=True), "value": value, "expires": now + ttl, "now": now}
        return await self._write(_CLAIM, params) == 1

    async def delete(self, key: str) -> None:
        await self._write(_DELETE, {"key": stored_key(key, text=True)})

    async def take(self, key: str, limit: int, window: float, algorithm: str) -> Decision:
        raise TypeError("a sql store holds no rate limits (refused when the flows load)")
