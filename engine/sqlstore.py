"""Records of the cache and idempotent steps in a table of a ``sql`` endpoint's database.

A SQLite file beside the flows (``endpoints: {records: {sql: {url: sqlite:///records.db}}}``)
keeps idempotency records across a restart of the engine, and several engines on one machine
(or every replica on PostgreSQL) share them.  One table, ``interlace_records`` (created when the
store is first used): the key, the value and when it expires, in wall-clock seconds so that an
entry written before a restart expires on time after it.  ``claim`` is one
``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired`` statement: of two engines racing, the
database lets one win.  Expired rows are deleted as later ones are written.

Rate limits and concurrency slots are not kept here (a database round trip per request is what
Redis is for): a throttle or concurrency step naming a sql endpoint is a load error.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import text

from engine.kvstore import Decision

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


class SqlStore:
    """The ``get``/``put``/``claim``/``delete`` of ``engine.kvstore`` on a sql endpoint."""

    def __init__(self, connector: Any) -> None:
        self._connector = connector
        self._ready = False
        self._lock = asyncio.Lock()
        self._writes = 0

    async def _engine(self) -> Any:
        if self._connector.engine is None:
            await self._connector.open()
        engine = self._connector.engine
        if not self._ready:
            async with self._lock:
                if not self._ready:
                    blob = "BYTEA" if self._connector.dialect == "postgresql" else "BLOB"
                    async with engine.begin() as conn:
                        if self._connector.dialect == "postgresql":
                            # two engines starting at once: PostgreSQL's CREATE TABLE IF NOT EXISTS is not
                            # safe against itself (a duplicate pg_type row), so one creates at a time
                            await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock(hashtext('{TABLE}'))")
                        await conn.exec_driver_sql(
                            f"CREATE TABLE IF NOT EXISTS {TABLE} (key TEXT PRIMARY KEY, value {blob} NOT NULL, "
                            f"expires DOUBLE PRECISION NOT NULL)")
                    self._ready = True
        return engine

    async def get(self, key: str) -> bytes | None:
        engine = await self._engine()
        async with engine.connect() as conn:
            row = (await conn.execute(_GET, {"key": key, "now": time.time()})).first()
        return None if row is None else bytes(row[0])

    async def _write(self, statement: Any, params: dict[str, Any]) -> int:
        engine = await self._engine()
        self._writes += 1
        async with engine.begin() as conn:
            if self._writes % _SWEEP_EVERY == 0:
                await conn.execute(_SWEEP, {"now": time.time()})
            result = await conn.execute(statement, params)
        return int(result.rowcount)

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._write(_PUT, {"key": key, "value": value, "expires": time.time() + ttl})

    async def claim(self, key: str, value: bytes, ttl: float) -> bool:
        now = time.time()
        return await self._write(_CLAIM, {"key": key, "value": value, "expires": now + ttl, "now": now}) == 1

    async def delete(self, key: str) -> None:
        await self._write(_DELETE, {"key": key})

    async def take(self, key: str, limit: int, window: float, algorithm: str) -> Decision:
        raise TypeError("a sql store holds no rate limits (refused when the flows load)")
