"""A real PostgreSQL going away and coming back: at start, mid-flow, and a statement that runs
too long; readiness follows a required database."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from engine.management import build_management_app
from engine.runtime import Runtime
from tests.support.engine import write_flows
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.anyio

FLOWS = """
endpoints:
  db:
    sql:
      url: ${env.DB_URL}
      required: true
      retry: {attempts: 2, backoff: 50ms}
      timeout: {connect: 1s, statement: 300ms}
      init:
        - CREATE TABLE IF NOT EXISTS items (sku TEXT PRIMARY KEY, qty INTEGER NOT NULL)
        - INSERT INTO items VALUES ('A-1', 3) ON CONFLICT DO NOTHING
flows:
  one:
    source: {http: {method: GET, path: "/items/{sku}"}}
    steps:
      - call: {endpoint: db, operation: query, sql: "SELECT sku, qty FROM items WHERE sku = :sku",
               params: {sku: "${path.sku}"}, expect: one}
  slow:
    source: {http: {method: GET, path: /slow}}
    steps:
      - call: {endpoint: db, operation: query, sql: "SELECT pg_sleep(:s)", params: {s: 2}}
    on_error:
      - respond: {status: 503, json: {code: "${error.code}", category: "${error.category}"}}
"""


async def serve(folder: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> tuple[Runtime, httpx.AsyncClient,
                                                                                    httpx.AsyncClient]:
    monkeypatch.setenv("DB_URL", url)
    runtime = Runtime(write_flows(folder, FLOWS))
    await runtime.start()
    assert runtime.facade is not None
    facade = httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime.facade), base_url="http://f")  # type: ignore[arg-type]
    management = httpx.AsyncClient(transport=httpx.ASGITransport(app=build_management_app(runtime, token="")),
                                   base_url="http://m")
    return runtime, facade, management


async def ready(management: httpx.AsyncClient) -> int:
    await asyncio.sleep(1.05)  # readiness checks an endpoint at most once a second
    return (await management.get("/health/ready")).status_code


async def test_down_at_start_then_up_then_down_mid_flow_then_back(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    server = PostgresServer()  # its port is chosen, nothing listens there yet
    runtime, facade, management = await serve(tmp_path, monkeypatch, server.url)
    try:
        down = await facade.get("/items/A-1")
        assert down.status_code == 502 and down.json()["type"].endswith("/backend-unreachable")
        assert down.json()["detail"] == "endpoint 'db': the database is unreachable"
        assert (await management.get("/health/ready")).json() == {
            "status": "unready", "endpoints": {"db": "endpoint 'db': the database is unreachable"}}
        with server:
            assert await ready(management) == 200
            assert (await facade.get("/items/A-1")).json() == {"sku": "A-1", "qty": 3}  # init ran once it could
            server.stop()
            gone = await facade.get("/items/A-1")
            assert gone.status_code == 502 and gone.json()["type"].endswith("/backend-unreachable")
            assert await ready(management) == 503
            server.start()
            assert (await facade.get("/items/A-1")).status_code == 200  # a stale pooled connection is retried
            assert await ready(management) == 200
    finally:
        await facade.aclose()
        await management.aclose()
        await runtime.stop()


async def test_a_statement_over_its_timeout_is_cancelled_and_504(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 pg_url: str, postgres: PostgresServer) -> None:
    runtime, facade, management = await serve(tmp_path, monkeypatch, pg_url)
    try:
        answer = await facade.get("/slow")
        assert answer.status_code == 503 and answer.json() == {"code": "backend-timeout", "category": "timeout"}
        # cancelled on the server, not left running
        running = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'SELECT pg_sleep%'"
        assert postgres.psql(running) == "0"
        assert (await facade.get("/items/A-1")).status_code == 200  # the connection is usable again
    finally:
        await facade.aclose()
        await management.aclose()
        await runtime.stop()


SQLITE_FLOWS = """
endpoints:
  db:
    sql:
      url: sqlite:///slow.db
      pool: {max_connections: 1, acquire_timeout: 2s}
      timeout: {statement: 300ms}
      init: ["CREATE TABLE IF NOT EXISTS items (sku TEXT PRIMARY KEY, qty INTEGER NOT NULL)",
             "INSERT OR IGNORE INTO items VALUES ('A-1', 3)"]
flows:
  one:
    source: {http: {method: GET, path: /one}}
    steps:
      - call: {endpoint: db, operation: query, sql: "SELECT sku, qty FROM items", expect: one}
  slow:
    source: {http: {method: GET, path: /slow}}
    steps:
      # minutes of work for SQLite: a billion rows counted
      - call: {endpoint: db, operation: query, expect: one,
               sql: "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000)
                     SELECT count(*) AS n FROM c"}
"""


async def test_an_sqlite_statement_over_its_timeout_is_stopped_in_the_database(tmp_path: Path) -> None:
    """SQLite has no server to cancel a statement: the engine interrupts it, so the endpoint's one
    pooled connection is free for the next call (without that it would stay busy for minutes)."""
    runtime = Runtime(write_flows(tmp_path, SQLITE_FLOWS))
    await runtime.start()
    assert runtime.facade is not None
    facade = httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime.facade), base_url="http://f")  # type: ignore[arg-type]
    try:
        for _ in range(2):
            slow = await facade.get("/slow")
            assert slow.status_code == 504 and slow.json()["type"].endswith("/backend-timeout"), slow.text
            assert slow.json()["detail"] == "endpoint 'db': the statement did not finish in time"
            answer = await facade.get("/one")
            assert answer.status_code == 200 and answer.json() == {"sku": "A-1", "qty": 3}, answer.text
    finally:
        await facade.aclose()
        await runtime.stop()
