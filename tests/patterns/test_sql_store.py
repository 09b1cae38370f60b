"""The idempotency (and cache) records in a SQLite file or a PostgreSQL database: a real engine
restarted between a request and its retry still answers the retry from the record; two engines on
one file (or one database) run a raced key once and share cached answers; a limit naming a sql
endpoint is a load error."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.backends import BackendServer
from tests.support.engine import run_engine, write_flows
from tests.support.postgres import PostgresServer


@pytest.fixture
def backend() -> Iterator[BackendServer]:
    with BackendServer() as server:
        yield server


def _flows(backend: BackendServer, database: Path | str) -> str:
    url = database if isinstance(database, str) else f"sqlite:///{database}"
    return f"""
endpoints:
  payments: {{http: {{url: "{backend.url}"}}}}
  records: {{sql: {{url: "{url}"}}}}
flows:
  pay:
    source: {{http: {{method: POST, path: /payments}}}}
    steps:
      - idempotent:
          key: ${{headers."idempotency-key"}}
          store: records
          steps:
            - call: {{endpoint: payments, method: POST, path: /charge}}
            - respond: {{status: 201, json: {{charged: "${{payload.amount}}"}}}}
  quote:
    source: {{http: {{method: GET, path: "/quotes/{{id}}"}}}}
    steps:
      - cache:
          key: quote:${{path.id}}
          ttl: 1h
          store: records
          header: X-Cache
          steps:
            - call: {{endpoint: payments, method: GET, path: "/quote/${{path.id}}"}}
"""


def _race_one_key(first: str, second: str) -> list[int]:
    """Four POSTs with one Idempotency-Key at once, alternating between the two engines; their statuses."""
    statuses: list[int] = []

    def post(engine_url: str) -> None:
        answer = httpx.post(f"{engine_url}/payments", headers={"Idempotency-Key": "raced"},
                            content=b'{"amount": 5}', timeout=20)
        statuses.append(answer.status_code)

    threads = [threading.Thread(target=post, args=(url,)) for url in (first, second, first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_a_record_survives_a_restart_of_the_engine(tmp_path: Path, backend: BackendServer) -> None:
    database = tmp_path / "state" / "records.db"
    database.parent.mkdir()
    folder = write_flows(tmp_path / "flows", _flows(backend, database))
    headers = {"Idempotency-Key": "pay-7", "Content-Type": "application/json"}
    with run_engine(folder) as engine:
        first = httpx.post(f"{engine.url}/payments", headers=headers, content=b'{"amount": 12}')
        quote = httpx.get(f"{engine.url}/quotes/q1")
        assert engine.terminate() == 0
    assert (first.status_code, first.json()) == (201, {"charged": 12})
    assert quote.headers["x-cache"] == "miss"
    with run_engine(folder) as engine:  # a new process: nothing in memory
        retried = httpx.post(f"{engine.url}/payments", headers=headers, content=b'{"amount": 12}')
        reused = httpx.post(f"{engine.url}/payments", headers=headers, content=b'{"amount": 99}')
        cached = httpx.get(f"{engine.url}/quotes/q1")
    assert (retried.status_code, retried.json()) == (201, {"charged": 12})
    assert retried.headers["idempotent-replayed"] == "true"
    assert reused.status_code == 422 and reused.json()["type"].endswith("/idempotency-key-reused")
    assert cached.headers["x-cache"] == "hit"
    assert [r.path for r in backend.requests] == ["/charge", "/quote/q1"]  # each ran once


def test_two_engines_on_one_file_run_a_raced_key_once(tmp_path: Path, backend: BackendServer) -> None:
    backend.set_behaviour(delay=0.5)
    database = tmp_path / "records.db"
    one = write_flows(tmp_path / "one", _flows(backend, database))
    two = write_flows(tmp_path / "two", _flows(backend, database))
    with run_engine(one) as first, run_engine(two) as second:
        statuses = _race_one_key(first.url, second.url)
    assert sorted(statuses) == [201, 409, 409, 409]  # the others find it in progress
    assert [r.path for r in backend.requests] == ["/charge"]


def test_two_engines_on_one_postgresql_database_share_records(tmp_path: Path, backend: BackendServer) -> None:
    backend.set_behaviour(delay=0.5)
    with PostgresServer() as postgres:
        postgres.psql("CREATE DATABASE records")
        url = postgres.url.rsplit("/", 1)[0] + "/records"
        one = write_flows(tmp_path / "one", _flows(backend, url))
        two = write_flows(tmp_path / "two", _flows(backend, url))
        with run_engine(one) as first, run_engine(two) as second:
            statuses = _race_one_key(first.url, second.url)
            retried = httpx.post(f"{second.url}/payments", headers={"Idempotency-Key": "raced"},
                                 content=b'{"amount": 5}', timeout=20)
            missed = httpx.get(f"{first.url}/quotes/q1", timeout=20)
            hit = httpx.get(f"{second.url}/quotes/q1", timeout=20)
        rows = postgres.psql_in("records", "SELECT count(*) FROM interlace_records")
    assert sorted(statuses) == [201, 409, 409, 409]  # the others find it in progress
    assert (retried.status_code, retried.headers["idempotent-replayed"]) == (201, "true")
    assert (missed.headers["x-cache"], hit.headers["x-cache"]) == ("miss", "hit")
    assert hit.content == missed.content
    assert [r.path for r in backend.requests] == ["/charge", "/quote/q1"]  # each ran once, on one engine
    assert rows == "2"  # the idempotency record and the cached answer, in PostgreSQL's table


def test_a_limit_in_a_sql_store_is_a_load_error(tmp_path: Path) -> None:
    from engine.loader import LoadErrors, load_project

    write_flows(tmp_path, """
        endpoints:
          records: {sql: {url: "sqlite:///records.db"}}
        flows:
          f:
            source: {http: {path: /f}}
            steps:
              - throttle: {limit: 5, per: 1s, store: records}
              - respond: {json: {}}
    """)
    with pytest.raises(LoadErrors) as caught:
        load_project(tmp_path)
    assert "flows.yaml:7:46: throttle: endpoint 'records' is a sql database, which keeps the records of cache " \
           "and idempotent steps; limits and counters need a redis endpoint" in str(caught.value)
