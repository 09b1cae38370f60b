"""validate (JSON Schema and XSD files compiled at load) and idempotent (memory and Redis)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.loader import LoadErrors, load_project
from tests.support.backends import BackendServer
from tests.support.engine import facade_client, write_flows
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio

XSD = """<?xml version="1.0"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:q" xmlns="urn:q"
           elementFormDefault="qualified">
  <xs:element name="quote">
    <xs:complexType><xs:sequence>
      <xs:element name="symbol" type="xs:string"/>
      <xs:element name="price" type="xs:decimal"/>
    </xs:sequence></xs:complexType>
  </xs:element>
</xs:schema>
"""


@pytest.fixture
def backend() -> Iterator[BackendServer]:
    with BackendServer() as server:
        yield server


async def test_json_and_xml_payloads_are_validated(tmp_path: Path) -> None:
    (tmp_path / "order.schema.json").write_text(json.dumps({
        "type": "object", "required": ["id", "lines"],
        "properties": {"id": {"type": "string"}, "lines": {"type": "array", "minItems": 1,
                                                           "items": {"type": "object", "required": ["qty"],
                                                                     "properties": {"qty": {"type": "integer"}}}}}}))
    (tmp_path / "quote.xsd").write_text(XSD)
    write_flows(tmp_path, """
    flows:
      orders:
        source: {http: {method: POST, path: /orders}}
        steps:
          - validate: {schema: order.schema.json}
          - respond: {json: {ok: true}}
      quotes:
        source: {http: {method: POST, path: /quotes}}
        steps:
          - validate: {xsd: quote.xsd}
          - respond: {json: {ok: true}}
    """)
    async with facade_client(tmp_path) as client:
        good = await client.post("/orders", json={"id": "1", "lines": [{"qty": 2}]})
        bad = await client.post("/orders", json={"id": 1, "lines": [{"qty": "two"}, {}]})
        good_xml = await client.post("/quotes", content=b'<quote xmlns="urn:q"><symbol>IBM</symbol>'
                                                        b'<price>1.5</price></quote>',
                                     headers={"content-type": "application/xml"})
        bad_xml = await client.post("/quotes", content=b'<quote xmlns="urn:q"><symbol>IBM</symbol>'
                                                       b'<price>cheap</price></quote>',
                                    headers={"content-type": "application/xml"})
    assert good.status_code == good_xml.status_code == 200
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    assert {e["path"] for e in bad.json()["errors"]} == {"$.id", "$.lines[0].qty", "$.lines[1]"}
    assert bad.json()["type"].endswith("/validation-failed")
    assert bad_xml.status_code == 422
    assert bad_xml.json()["errors"][0]["path"] == "/quote/price"
    assert "cheap" in bad_xml.json()["errors"][0]["message"]


def test_a_missing_or_broken_schema_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "broken.xsd").write_text("<xs:schema xmlns:xs='http://www.w3.org/2001/XMLSchema'><xs:bogus/>"
                                         "</xs:schema>")
    write_flows(tmp_path, """
    flows:
      a:
        source: {http: {method: POST, path: /a}}
        steps:
          - validate: {schema: nowhere.json}
          - validate: {xsd: broken.xsd}
          - validate: {schema: {type: objekt}}
    """)
    with pytest.raises(LoadErrors) as caught:
        load_project(tmp_path)
    text = str(caught.value)
    assert "flows.yaml:5:28: validate: file not found: nowhere.json" in text
    assert "flows.yaml:6:25: validate: broken.xsd: not a valid XML Schema" in text
    assert "flows.yaml:7:28: validate: not a valid JSON Schema" in text


def _idempotent_flows(backend: BackendServer, extra: str = "", store_url: str | None = None) -> str:
    store = f"\n  shared: {{redis: {{url: \"{store_url}\"}}}}" if store_url else ""
    store_key = "\n          store: shared" if store_url else ""
    return f"""
endpoints:
  payments: {{http: {{url: "{backend.url}"}}}}{store}
flows:
  pay:
    source: {{http: {{method: POST, path: /payments}}}}
    steps:
      - idempotent:
          key: "${{headers.\\"idempotency-key\\"}}"{store_key}{extra}
          steps:
            - call: {{endpoint: payments, method: POST, path: /pay, expect_status: [2xx]}}
            - set: {{status: 201}}
"""


async def test_a_repeated_key_replays_the_first_answer(tmp_path: Path, backend: BackendServer) -> None:
    write_flows(tmp_path, _idempotent_flows(backend))
    async with facade_client(tmp_path) as client:
        first = await client.post("/payments", json={"amount": 5}, headers={"Idempotency-Key": "k1"})
        again = await client.post("/payments", json={"amount": 5}, headers={"Idempotency-Key": "k1"})
        reused = await client.post("/payments", json={"amount": 6}, headers={"Idempotency-Key": "k1"})
        other = await client.post("/payments", json={"amount": 5}, headers={"Idempotency-Key": "k2"})
        keyless = await client.post("/payments", json={"amount": 5})
    assert first.status_code == again.status_code == other.status_code == keyless.status_code == 201
    assert again.json() == first.json() == {"amount": 5}
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert reused.status_code == 422
    assert reused.json()["type"].endswith("/idempotency-key-reused")
    assert len(backend.requests) == 3  # k1 once, k2 once, the keyless one


async def test_a_failed_first_attempt_releases_the_key(tmp_path: Path, backend: BackendServer) -> None:
    write_flows(tmp_path, _idempotent_flows(backend, "\n          required: true\n          on_duplicate: reject"))
    async with facade_client(tmp_path) as client:
        backend.set_behaviour(statuses=[503])
        failed = await client.post("/payments", json={"a": 1}, headers={"Idempotency-Key": "k"})
        retried = await client.post("/payments", json={"a": 1}, headers={"Idempotency-Key": "k"})
        rejected = await client.post("/payments", json={"a": 1}, headers={"Idempotency-Key": "k"})
        keyless = await client.post("/payments", json={"a": 1})
    assert failed.status_code == 502
    assert retried.status_code == 201
    assert rejected.status_code == 409
    assert keyless.status_code == 400


async def test_two_engines_on_one_redis_run_a_key_once(tmp_path: Path, backend: BackendServer,
                                                       redis: RedisServer) -> None:
    backend.set_behaviour(delay=0.5)
    one, two = tmp_path / "one", tmp_path / "two"
    write_flows(one, _idempotent_flows(backend, store_url=redis.url))
    write_flows(two, _idempotent_flows(backend, store_url=redis.url))
    async with facade_client(one) as first, facade_client(two) as second:
        racing = await asyncio.gather(
            first.post("/payments", json={"a": 1}, headers={"Idempotency-Key": "race"}),
            second.post("/payments", json={"a": 1}, headers={"Idempotency-Key": "race"}))
        after = await second.post("/payments", json={"a": 1}, headers={"Idempotency-Key": "race"})
    assert sorted(r.status_code for r in racing) == [201, 409]  # one ran, one saw it in progress
    assert after.status_code == 201 and after.headers["idempotent-replayed"] == "true"
    assert len(backend.requests) == 1


def _including(location: str) -> str:
    return ("<xs:schema xmlns:xs='http://www.w3.org/2001/XMLSchema'>"
            f"<xs:include schemaLocation='{location}'/><xs:element name='quote' type='price'/></xs:schema>")


PRICE = ("<xs:schema xmlns:xs='http://www.w3.org/2001/XMLSchema'><xs:simpleType name='price'>"
         "<xs:restriction base='xs:decimal'/></xs:simpleType></xs:schema>")


async def test_an_xsd_includes_files_of_the_flow_folder_only(tmp_path: Path) -> None:
    # xs:include and xs:import were read from anywhere the engine could read (../, file:///):
    # a flow file (a designer user's) made the engine read files outside its folder
    folder, outside = tmp_path / "flows", tmp_path / "outside"
    (folder / "types").mkdir(parents=True)
    outside.mkdir()
    (outside / "price.xsd").write_text(PRICE)
    (folder / "types" / "price.xsd").write_text(PRICE)
    (folder / "up.xsd").write_text(_including("../outside/price.xsd"))
    (folder / "absolute.xsd").write_text(_including((outside / "price.xsd").as_uri()))
    (folder / "network.xsd").write_text(_including("http://127.0.0.1:9/price.xsd"))
    (folder / "beside.xsd").write_text(_including("types/price.xsd"))
    steps = "\n".join(f"""
      {name}:
        source: {{http: {{method: POST, path: /{name}}}}}
        steps: [{{validate: {{xsd: {name}.xsd}}}}, {{respond: {{json: {{ok: true}}}}}}]"""
                      for name in ("up", "absolute", "network"))
    write_flows(folder, "flows:" + steps)
    with pytest.raises(LoadErrors) as caught:
        load_project(folder)
    text = str(caught.value)
    assert f"flows.yaml:4:34: validate: up.xsd: xs:include or xs:import: '{outside / 'price.xsd'}' is outside " \
           "the flow folder" in text
    assert "flows.yaml:8:34: validate: absolute.xsd: xs:include or xs:import:" in text
    assert "validate: network.xsd: xs:include or xs:import: 'http://127.0.0.1:9/price.xsd' is not a file of " \
           "the flow folder" in text
    write_flows(folder, """
    flows:
      beside:
        source: {http: {method: POST, path: /beside}}
        steps: [{validate: {xsd: beside.xsd}}, {respond: {json: {ok: true}}}]
    """)
    async with facade_client(folder) as client:
        good = await client.post("/beside", content=b"<quote>1.5</quote>", headers={"content-type": "application/xml"})
        bad = await client.post("/beside", content=b"<quote>x</quote>", headers={"content-type": "application/xml"})
    assert good.status_code == 200 and bad.status_code == 422


def test_a_json_schema_refers_to_its_own_parts_only(tmp_path: Path, backend: BackendServer) -> None:
    # a $ref to a URL was fetched with urllib at request time, for every payload that failed the
    # schema (the engine calling out wherever a flow file said); a $ref to nothing was a 500
    (tmp_path / "remote.schema.json").write_text(json.dumps(
        {"type": "object", "properties": {"a": {"$ref": f"{backend.url}/a.json"}}}))
    (tmp_path / "nowhere.schema.json").write_text(json.dumps(
        {"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}}))
    (tmp_path / "own.schema.json").write_text(json.dumps(
        {"$defs": {"a": {"type": "string"}}, "properties": {"a": {"$ref": "#/$defs/a"}},
         "enum": [{"$ref": "data, not a reference"}, {"a": "x"}]}))
    write_flows(tmp_path, """
    flows:
      a:
        source: {http: {method: POST, path: /a}}
        steps:
          - validate: {schema: remote.schema.json}
          - validate: {schema: nowhere.schema.json}
          - validate: {schema: own.schema.json}
      b:
        source: {http: {method: POST, path: /b, request: {schema: {$ref: "file:///etc/hostname"}}}}
        steps: [{respond: {json: {ok: true}}}]
    """)
    with pytest.raises(LoadErrors) as caught:
        load_project(tmp_path)
    text = str(caught.value)
    assert f"flows.yaml:5:28: validate: not a usable JSON Schema: $ref '{backend.url}/a.json' names nothing in " \
           "this schema" in text
    assert "flows.yaml:6:28: validate: not a usable JSON Schema: $ref '#/$defs/a' names nothing" in text
    assert "own.schema.json" not in text and "flows.yaml:7:" not in text
    assert "$ref 'file:///etc/hostname' names nothing in this schema" in text
    assert backend.requests == []


async def test_keys_a_database_cannot_hold_are_kept_by_their_digest(tmp_path: Path, backend: BackendServer) -> None:
    # an idempotency key from the body holding U+0000, or too long for PostgreSQL's index, was
    # 503 "duplicate requests cannot be detected right now", the same every retry; now each is
    # kept under its SHA-256 and replayed like any other
    import secrets

    from tests.support.postgres import PostgresServer

    with PostgresServer() as postgres:
        write_flows(tmp_path, f"""
endpoints:
  payments: {{http: {{url: "{backend.url}"}}}}
  records: {{sql: {{url: "{postgres.url}"}}}}
flows:
  pay:
    source: {{http: {{method: POST, path: /payments}}}}
    steps:
      - idempotent:
          key: "${{payload.id}}"
          store: records
          steps:
            - call: {{endpoint: payments, method: POST, path: /pay, expect_status: [2xx]}}
            - set: {{status: 201}}
""")
        keys = ["a\u0000b", secrets.token_hex(4000), "short"]
        async with facade_client(tmp_path) as client:
            answers = [(await client.post("/payments", json={"id": key})).status_code for key in keys for _ in (1, 2)]
        stored = postgres.psql("SELECT key FROM interlace_records ORDER BY key")
    assert answers == [201, 201] * 3
    assert len(backend.requests) == 3  # each key's second post replayed, not run again
    assert "short" in stored and stored.count("sha256:") == 2
