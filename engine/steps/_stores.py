"""Finding the store a cache, throttle or idempotency step keeps its state in: its own memory
by default, or a declared ``redis`` endpoint shared by the replicas."""

from __future__ import annotations

from typing import Any

from engine.compiler import CompileContext, StepConfigError
from engine.kvstore import Decision, KeyValueStore, MemoryStore

STORE_FIELD: dict[str, Any] = {
    "type": "string",
    "description": "A redis endpoint (declared under endpoints:) holding the state, shared by every replica; "
                   "default: this process's memory.",
}
RECORDS_STORE_FIELD: dict[str, Any] = {
    "type": "string",
    "description": "An endpoint holding the records: redis (shared by every replica) or sql (a SQLite file "
                   "that survives a restart, or PostgreSQL; table interlace_records); default: this "
                   "process's memory.",
}


class _EndpointStore:
    """A redis endpoint's store, looked up per use: its client is made inside the serving loop."""

    def __init__(self, endpoint: Any) -> None:
        self._endpoint = endpoint

    async def get(self, key: str) -> bytes | None:
        return await self._endpoint.store.get(key)  # type: ignore[no-any-return]

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._endpoint.store.put(key, value, ttl)

    async def claim(self, key: str, value: bytes, ttl: float) -> bool:
        return await self._endpoint.store.claim(key, value, ttl)  # type: ignore[no-any-return]

    async def delete(self, key: str) -> None:
        await self._endpoint.store.delete(key)

    async def take(self, key: str, limit: int, window: float, algorithm: str) -> Decision:
        return await self._endpoint.store.take(key, limit, window, algorithm)  # type: ignore[no-any-return]

    # concurrency slots (engine/steps/concurrency.py)
    def slot_member(self) -> str:
        return self._endpoint.store.slot_member()  # type: ignore[no-any-return]

    async def acquire_slot(self, key: str, member: str, limit: int, lease: float) -> bool:
        return await self._endpoint.store.acquire_slot(key, member, limit, lease)  # type: ignore[no-any-return]

    async def renew_slot(self, key: str, member: str, lease: float) -> None:
        await self._endpoint.store.renew_slot(key, member, lease)

    async def release_slot(self, key: str, member: str) -> None:
        await self._endpoint.store.release_slot(key, member)

    def watch_slots(self, key: str) -> Any:
        return self._endpoint.store.watch_slots(key)

    def unwatch_slots(self, key: str, freed: Any) -> None:
        self._endpoint.store.unwatch_slots(key, freed)


def store_for(config: Any, ctx: CompileContext, max_entries: int = 10_000, *,
              records_only: bool = True) -> KeyValueStore:
    """The store a step's ``store`` names.  ``records_only=False``: the step keeps counters
    (rate limits, concurrency slots), which only memory and Redis hold."""
    name = config.get("store")
    if name is None:
        return MemoryStore(max_entries)
    endpoint = ctx.endpoint(name, "store")
    connector = getattr(endpoint, "connector", endpoint)  # the resilience wrapper, when there is one
    if getattr(connector, "name", None) == "broken":
        return MemoryStore(max_entries)  # its own error is reported already
    from connectors.sql import SqlConnector

    if isinstance(connector, SqlConnector):
        if not records_only:
            raise StepConfigError(f"endpoint {name!r} is a sql database, which keeps the records of cache and "
                                  "idempotent steps; limits and counters need a redis endpoint (or no store, "
                                  "for this process's memory)", "store")
        if ctx.stores_in_memory:
            return MemoryStore(max_entries)
        from engine.sqlstore import SqlStore

        return SqlStore(endpoint, connector)
    if not hasattr(connector, "store"):
        raise StepConfigError(f"endpoint {name!r} cannot hold state; declare a redis endpoint "
                              f"(endpoints: {name}: redis: {{url: ...}}), a sql one (cache and idempotent) or "
                              "leave store out for memory", "store")
    return MemoryStore(max_entries) if ctx.stores_in_memory else _EndpointStore(connector)
