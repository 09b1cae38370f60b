"""SQL failover through the shared resilience layer: two real PostgreSQL servers on loopback;
the first is killed and the flow keeps answering from the second, the health and the metrics
say which one is in use; a transaction begins on the database that can be reached and never
continues on another; the records of an idempotent step naming the endpoint fail over with it."""

from __future__ import annotations

import asyncio
import re
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
      urls: ["${env.PRIMARY_URL}", "${env.STANDBY_URL}"]
      required: true
      timeout: {connect: 1s, statement: 5s}
      init:
        - CREATE TABLE IF NOT EXISTS items (sku TEXT PRIMARY KEY, qty INTEGER NOT NULL)
        - INSERT INTO items VALUES ('A-1', 3) ON CONFLICT DO NOTHING
flows:
  one:
    source: {http: {method: GET, path: "/items/{sku}"}}
    steps:
      - call: {endpoint: db, operation: query, expect: one, params: {sku: "${path.sku}"},
               sql: "SELECT sku, qty, current_setting('port') AS port FROM items WHERE sku = :sku"}
  pay:
    source: {http: {method: POST, path: /payments}}
    steps:
      - idempotent:
          key: ${headers."idempotency-key"}
          store: db
          steps:
            - respond: {status: 201, json: {paid: '${headers."idempotency-key"}'}}
  restock:
    source: {http: {method: POST, path: "/items/{sku}/restock"}}
    steps:
      - transaction:
          endpoint: db
          steps:
            - call: {endpoint: db, operation: execute, params: {sku: "${path.sku}"},
                     sql: "UPDATE items SET qty = qty + 1 WHERE sku = :sku"}
            - call: {endpoint: db, operation: execute, params: {sku: "${path.sku}"},
                     sql: "UPDATE items SET qty = qty + 10 WHERE sku = :sku"}
            - call: {endpoint: db, operation: query, sql: "SELECT current_setting('port') AS port", expect: one}
  broken-restock:
    source: {http: {method: POST, path: "/items/{sku}/broken-restock"}}
    steps:
      - transaction:
          endpoint: db
          steps:
            - call: {endpoint: db, operation: execute, params: {sku: "${path.sku}"},
                     sql: "UPDATE items SET qty = qty + 100 WHERE sku = :sku"}
            # the connection dies in the middle of the transaction (as when its server goes)
            - call: {endpoint: db, operation: query, sql: "SELECT pg_terminate_backend(pg_backend_pid())"}
            - call: {endpoint: db, operation: execute, params: {sku: "${path.sku}"},
                     sql: "UPDATE items SET qty = qty + 1000 WHERE sku = :sku"}
"""


def shown(url: str) -> str:
    """A target as the endpoint shows it: with the driver it runs on."""
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


def backend_calls(metrics: str, url: str, outcome: str) -> float:
    pattern = (r'^interlace_backend_request_duration_seconds_count\{endpoint="db",outcome="' + outcome +
               r'",url="' + re.escape(url) + r'"\} (\S+)$')
    found = re.search(pattern, metrics, re.M)
    return float(found.group(1)) if found else 0.0


async def test_the_flow_keeps_answering_from_the_standby_when_the_primary_is_killed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres: PostgresServer, pg_url: str) -> None:
    with PostgresServer() as primary:
        monkeypatch.setenv("PRIMARY_URL", primary.url)
        monkeypatch.setenv("STANDBY_URL", pg_url)
        runtime = Runtime(write_flows(tmp_path, FLOWS))
        await runtime.start()
        assert runtime.facade is not None
        facade = httpx.AsyncClient(transport=httpx.ASGITransport(app=runtime.facade),  # type: ignore[arg-type]
                                   base_url="http://f")
        management = httpx.AsyncClient(transport=httpx.ASGITransport(app=build_management_app(runtime, token="")),
                                       base_url="http://m")
        try:
            first = await facade.get("/items/A-1")
            assert first.json() == {"sku": "A-1", "qty": 3, "port": str(primary.port)}
            health = (await management.get("/endpoints")).json()["endpoints"]["db"]
            assert health["active"] == shown(primary.url)
            assert [t["target"] for t in health["targets"]] == [shown(primary.url), shown(pg_url)]
            assert postgres.psql("SELECT 1") == "1"  # init ran on the standby too
            database = pg_url.rsplit("/", 1)[1]
            records = "SELECT count(*) FROM interlace_records WHERE key LIKE '%{}'"
            paid = await facade.post("/payments", headers={"Idempotency-Key": "before"})
            assert paid.status_code == 201, paid.text
            assert primary.psql(records.format("before")) == "1"  # the idempotency record, on the first
            primary.stop()  # killed: its pooled connections die with it
            for _ in range(3):
                answer = await facade.get("/items/A-1")
                assert answer.status_code == 200, answer.text
                assert answer.json()["port"] == str(postgres.port)
            # the records of idempotent steps fail over with the endpoint: kept on the standby now
            paid = await facade.post("/payments", headers={"Idempotency-Key": "after"})
            assert paid.status_code == 201 and paid.json() == {"paid": "after"}, paid.text
            replayed = await facade.post("/payments", headers={"Idempotency-Key": "after"})
            assert replayed.status_code == 201 and replayed.headers["idempotent-replayed"] == "true"
            assert postgres.psql_in(database, records.format("after")) == "1"
            health = (await management.get("/endpoints")).json()["endpoints"]["db"]
            assert health["active"] == shown(pg_url)
            metrics = (await management.get("/metrics")).text
            assert backend_calls(metrics, shown(primary.url), "unreachable") >= 1
            assert backend_calls(metrics, shown(pg_url), "ok") >= 3
            await asyncio.sleep(1.05)  # readiness checks at most once a second: one database is enough
            assert (await management.get("/health/ready")).status_code == 200

            # a transaction begins on the database that can be reached, all its statements there
            restocked = await facade.post("/items/A-1/restock")
            assert restocked.status_code == 200 and restocked.json() == {"port": str(postgres.port)}
            assert postgres.psql_in(database, "SELECT qty FROM items WHERE sku = 'A-1'") == "14"

            # the primary back: calls return to it (failover keeps the order given)
            primary.start()
            back = await facade.get("/items/A-1")
            assert back.status_code == 200 and back.json()["port"] in (str(primary.port), str(postgres.port))
            again = await facade.get("/items/A-1")
            assert again.json() == {"sku": "A-1", "qty": 3, "port": str(primary.port)}

            # a transaction whose connection dies half-way is not continued on the other database
            broken = await facade.post("/items/A-1/broken-restock")
            assert broken.status_code == 502, broken.text
            assert primary.psql("SELECT qty FROM items WHERE sku = 'A-1'") == "3"  # the first change rolled back
            assert postgres.psql_in(database, "SELECT qty FROM items WHERE sku = 'A-1'") == "14"  # nothing here
        finally:
            await facade.aclose()
            await management.aclose()
            await runtime.stop()


async def test_url_or_urls_and_one_kind_of_database(tmp_path: Path) -> None:
    from engine.loader import LoadErrors, load_project

    write_flows(tmp_path, """
    endpoints:
      db:
        sql: {urls: ["sqlite:///a.db", "postgresql://app@127.0.0.1:9/app"]}
    """)
    with pytest.raises(LoadErrors) as raised:
        load_project(tmp_path)
    assert "every database of one endpoint must be of the same kind" in str(raised.value)
    write_flows(tmp_path, """
    endpoints:
      db:
        sql: {url: "sqlite:///a.db", urls: ["sqlite:///b.db"]}
    """)
    with pytest.raises(LoadErrors) as raised:
        load_project(tmp_path)
    assert "flows.yaml:3:" in str(raised.value)
