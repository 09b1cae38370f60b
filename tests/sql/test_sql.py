"""The sql connector kind through flows, on a SQLite file and on a real PostgreSQL: queries and
writes with bound parameters, rows as JSON or XML, keys and counts, batches and transactions,
and every failure a user meets (constraint, bad value, bad SQL, injection attempts)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from engine.loader import LoadErrors, load_project
from tests.support.engine import facade_client, write_flows

pytestmark = pytest.mark.anyio

FLOWS = """
endpoints:
  db:
    sql:
      url: ${env.DB_URL}
      init:
        - CREATE TABLE IF NOT EXISTS items (sku TEXT PRIMARY KEY, name TEXT NOT NULL,
            qty INTEGER NOT NULL CHECK (qty >= 0), price NUMERIC(10, 2))
        - INSERT INTO items VALUES ('A-1', 'anvil', 3, 9.50), ('B-2', 'bucket', 0, 2.25) ON CONFLICT DO NOTHING
        - CREATE TABLE IF NOT EXISTS moves (${env.ID_COLUMN}, sku TEXT NOT NULL REFERENCES items (sku),
            n INTEGER NOT NULL)
flows:
  one:
    source: {http: {method: GET, path: "/items/{sku}"}}
    steps:
      - call:
          endpoint: db
          operation: query
          sql: SELECT sku, name, qty, price FROM items WHERE sku = :sku
          params: {sku: "${path.sku}"}
          expect: one
          not_found: "no item ${path.sku}"
  many:
    source: {http: {method: GET, path: /items}}
    steps:
      - call:
          endpoint: db
          operation: query
          sql: SELECT sku, qty FROM items WHERE qty >= :min ORDER BY sku
          params: {min: "${query.min || '0'}"}
          types: {min: integer}
  as-xml:
    source: {http: {method: GET, path: /items.xml}}
    steps:
      - call: {endpoint: db, operation: query, sql: "SELECT sku, name, price FROM items ORDER BY sku", as: xml,
               root: items, row: item}
  add:
    source: {http: {method: POST, path: /items}}
    steps:
      - call:
          endpoint: db
          operation: execute
          sql: INSERT INTO items (sku, name, qty, price) VALUES (:sku, :name, :qty, :price)
          params: {sku: "${payload.sku}", name: "${payload.name}", qty: "${payload.qty}", price: "${payload.price}"}
  move:
    source: {http: {method: POST, path: /moves}}
    steps:
      - call:
          endpoint: db
          operation: execute
          sql: INSERT INTO moves (sku, n) VALUES (:sku, :n) RETURNING id
          params: {sku: "${payload.sku}", n: "${payload.n}"}
  load:
    source: {http: {method: POST, path: /items/batch}}
    steps:
      - call:
          endpoint: db
          operation: batch
          sql: INSERT INTO items (sku, name, qty, price) VALUES (:sku, :name, :qty, :price)
          rows: ${payload.items}
  take:
    source: {http: {method: POST, path: "/items/{sku}/take"}}
    steps:
      - transaction:
          endpoint: db
          steps:
            - call:
                endpoint: db
                operation: execute
                sql: UPDATE items SET qty = qty - :n WHERE sku = :sku
                params: {sku: "${path.sku}", n: "${payload.n}"}
                into: updated
            - call:
                endpoint: db
                operation: execute
                sql: INSERT INTO moves (sku, n) VALUES (:sku, :n)
                params: {sku: "${path.sku}", n: "${payload.n}"}
                into: logged
            - call:
                endpoint: db
                operation: execute
                sql: UPDATE items SET qty = qty - :n WHERE sku = :other
                params: {other: "${payload.also}", n: "${payload.n}"}
      - call: {endpoint: db, operation: query, sql: "SELECT qty FROM items WHERE sku = :sku",
               params: {sku: "${path.sku}"}, expect: one}
  peek:
    source: {http: {method: POST, path: /peek}}
    steps:
      - transaction:
          endpoint: db
          read_only: true
          isolation: serializable
          steps:
            - call: {endpoint: db, operation: execute, sql: "${payload.ignored || 'x'}", params: {}}
"""


def env(db_url: str) -> dict[str, str]:
    # a generated key is spelled differently: SQLite's rowid alias, PostgreSQL's serial
    return {"DB_URL": db_url, "ID_COLUMN": "id SERIAL PRIMARY KEY" if db_url.startswith("postgresql")
            else "id INTEGER PRIMARY KEY"}


def flows(tmp_path: Path) -> Path:
    # the read-only flow writes its statement as a plain string (no ${...}): see the injection test
    text = FLOWS.replace('sql: "${payload.ignored || \'x\'}", params: {}', "sql: DELETE FROM moves")
    return write_flows(tmp_path / "flows", text)


async def test_queries_bind_parameters_and_shape_rows(tmp_path: Path, db_url: str) -> None:
    async with facade_client(flows(tmp_path), env=env(db_url)) as client:
        one = await client.get("/items/A-1")
        assert one.status_code == 200 and one.headers["content-type"] == "application/json"
        assert one.json() == {"sku": "A-1", "name": "anvil", "qty": 3, "price": 9.5}
        missing = await client.get("/items/Z-9")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["detail"] == "no item Z-9"
        assert (await client.get("/items", params={"min": "1"})).json() == [{"sku": "A-1", "qty": 3}]
        assert len((await client.get("/items")).json()) == 2
        bad = await client.get("/items", params={"min": "lots"})
        assert bad.status_code == 422 and bad.json()["type"].endswith("/invalid-parameter")
        assert "'lots' is not an integer" in bad.json()["detail"]
        xml = await client.get("/items.xml")
        document = etree.fromstring(xml.content)
        assert xml.headers["content-type"] == "application/xml"
        assert document.tag == "items" and [i.findtext("sku") for i in document] == ["A-1", "B-2"]
        assert document[1].findtext("price") == "2.25"


async def test_writes_answer_counts_and_keys_and_constraints_are_409(tmp_path: Path, db_url: str) -> None:
    async with facade_client(flows(tmp_path), env=env(db_url)) as client:
        added = await client.post("/items", json={"sku": "C-3", "name": "chisel", "qty": 5, "price": 4})
        assert added.status_code == 200 and added.json()["row_count"] == 1
        moved = await client.post("/moves", json={"sku": "C-3", "n": 2})
        assert moved.json()["row_count"] == 1 and moved.json()["key"] == 1
        assert moved.json()["rows"] == [{"id": 1}]
        again = await client.post("/items", json={"sku": "C-3", "name": "chisel", "qty": 5, "price": 4})
        assert again.status_code == 409 and again.json()["type"].endswith("/constraint-violation")
        assert again.json()["endpoint"] == "db"
        assert "UNIQUE" not in again.text and "duplicate key" not in again.text  # the database's words stay in logs
        orphan = await client.post("/moves", json={"sku": "nope", "n": 1})
        assert orphan.status_code == 409
        negative = await client.post("/items", json={"sku": "D-4", "name": "drill", "qty": -1, "price": 1})
        assert negative.status_code == 409  # the CHECK constraint


async def test_a_batch_is_all_rows_or_none(tmp_path: Path, db_url: str) -> None:
    async with facade_client(flows(tmp_path), env=env(db_url)) as client:
        rows = [{"sku": f"N-{i}", "name": f"nail {i}", "qty": i, "price": 0.1} for i in range(5)]
        loaded = await client.post("/items/batch", json={"items": rows})
        assert loaded.status_code == 200 and loaded.json()["row_count"] in (5, -1)
        assert len((await client.get("/items")).json()) == 7
        clash = [{"sku": "M-1", "name": "mallet", "qty": 1, "price": 1}, {"sku": "A-1", "name": "x", "qty": 1,
                                                                           "price": 1}]
        assert (await client.post("/items/batch", json={"items": clash})).status_code == 409
        assert (await client.get("/items/M-1")).status_code == 404  # the first row was rolled back too


async def test_a_transaction_failing_in_its_third_statement_leaves_nothing(tmp_path: Path, db_url: str) -> None:
    async with facade_client(flows(tmp_path), env=env(db_url)) as client:
        done = await client.post("/items/A-1/take", json={"n": 1, "also": "B-2x"})
        assert done.status_code == 200 and done.json() == {"qty": 2}
        failed = await client.post("/items/A-1/take", json={"n": 1, "also": "B-2"})  # B-2 would go below 0
        assert failed.status_code == 409
        assert (await client.get("/items/A-1")).json()["qty"] == 2  # the first UPDATE was undone
        assert (await client.get("/items/B-2")).json()["qty"] == 0
        read_only = await client.post("/peek", json={})
        assert read_only.status_code == 502 and read_only.json()["type"].endswith("/backend-rejected")


INJECTION = "'; DROP TABLE items; --"


async def test_injection_through_every_bound_parameter_stays_data(tmp_path: Path, db_url: str) -> None:
    async with facade_client(flows(tmp_path), env=env(db_url)) as client:
        assert (await client.get(f"/items/{INJECTION}")).status_code == 404
        added = await client.post("/items", json={"sku": INJECTION, "name": INJECTION, "qty": 1, "price": 1})
        assert added.status_code == 200
        assert (await client.get(f"/items/{INJECTION}")).json()["name"] == INJECTION
        assert (await client.post("/moves", json={"sku": INJECTION, "n": 1})).status_code == 200
        taken = await client.post(f"/items/{INJECTION}/take", json={"n": 1, "also": INJECTION})
        assert taken.status_code == 409  # qty 1 - 1 - 1 < 0: a real failure, not an injection
        batch = [{"sku": INJECTION + "2", "name": INJECTION, "qty": 1, "price": 1}]
        assert (await client.post("/items/batch", json={"items": batch})).status_code == 200
        assert (await client.get("/items", params={"min": INJECTION})).status_code == 422
        assert len((await client.get("/items")).json()) == 4  # the table is still there, with its rows


@pytest.mark.parametrize(("sql", "message"), [
    ("SELECT * FROM items WHERE sku = '${path.sku}'",
     "flows.yaml:9:50: call: ${...} cannot be pasted into SQL text (that is how SQL injection happens): write "
     ":name in the statement and bind it"),
    ("SELECT * FROM items WHERE sku = :sku AND qty > :min",
     "call: the statement binds :min but params gives no 'min'"),
])
def test_sql_that_would_be_built_from_strings_is_a_load_error(tmp_path: Path, sql: str, message: str) -> None:
    write_flows(tmp_path, f"""
        endpoints:
          db: {{sql: {{url: "sqlite:///x.db"}}}}
        flows:
          one:
            source: {{http: {{method: GET, path: "/items/{{sku}}"}}}}
            steps:
              - call:
                  endpoint: db
                  sql: "{sql}"
                  operation: query
                  params: {{sku: "${{path.sku}}"}}
        """)
    with pytest.raises(LoadErrors) as raised:
        load_project(tmp_path)
    assert message in str(raised.value)
