"""claim_check and claim_retrieve: a payload (or a part) parked in a store under a claim and taken
back, in memory, in a real Redis and in a SQLite file; unknown and expired claims are problems."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.loader import LoadErrors, load_project
from tests.support.backends import closed_port
from tests.support.engine import facade_client, write_flows
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio


def _flows(store: str = "", endpoint: str = "", ttl: str = "10m") -> str:
    named = f", store: {store}" if store else ""
    declared = f"endpoints:\n  {store}: {endpoint}\n" if store else ""
    return declared + f"""
flows:
  park:
    source: {{http: {{method: POST, path: /parcels}}}}
    steps:
      - claim_check: {{ttl: {ttl}{named}}}
      - set: {{header: x-claim, value: "${{vars.claim}}"}}
  fetch:
    source: {{http: {{method: POST, path: /parcels/fetch}}}}
    steps:
      - claim_retrieve: {{remove: true{named}}}
  park-part:
    source: {{http: {{method: POST, path: /letters}}}}
    steps:
      - claim_check: {{part: $.document, ttl: {ttl}{named}}}
  fetch-part:
    source: {{http: {{method: POST, path: /letters/fetch}}}}
    steps:
      - claim_retrieve: {{claim: "${{payload.document}}", into: $.document{named}}}
"""


async def _round_trip(folder: Path) -> None:
    async with facade_client(folder) as client:
        parked = await client.post("/parcels", content=b"<order id='7'/>", headers={"content-type": "application/xml"})
        claim = parked.json()["claim"]
        fetched = await client.post("/parcels/fetch", json={"claim": claim})
        again = await client.post("/parcels/fetch", json={"claim": claim})
        letter = await client.post("/letters", json={"to": "ada", "document": {"pages": [1, 2, 3]}})
        back = await client.post("/letters/fetch", json=letter.json())
    assert parked.status_code == 200 and parked.headers["x-claim"] == claim
    assert parked.json() == {"claim": claim}
    assert fetched.status_code == 200
    assert fetched.content == b"<order id='7'/>" and fetched.headers["content-type"] == "application/xml"
    assert again.status_code == 404 and again.json()["type"].endswith("/unknown-claim")  # removed by the first
    assert letter.json()["to"] == "ada" and isinstance(letter.json()["document"], str)
    assert back.json() == {"to": "ada", "document": {"pages": [1, 2, 3]}}


async def test_a_payload_and_a_part_go_into_memory_and_come_back(tmp_path: Path) -> None:
    write_flows(tmp_path, _flows())
    await _round_trip(tmp_path)


async def test_the_claims_live_in_redis_shared_by_two_engines(tmp_path: Path, redis: RedisServer) -> None:
    flows = _flows("claims", f'{{redis: {{url: "{redis.url}"}}}}')
    write_flows(tmp_path / "one", flows)
    write_flows(tmp_path / "two", flows)
    await _round_trip(tmp_path / "one")
    async with facade_client(tmp_path / "one") as one, facade_client(tmp_path / "two") as two:
        claim = (await one.post("/parcels", json={"big": "x" * 1000})).json()["claim"]
        fetched = await two.post("/parcels/fetch", json={"claim": claim})
    assert fetched.json() == {"big": "x" * 1000}


async def test_the_claims_live_in_a_sqlite_file(tmp_path: Path) -> None:
    write_flows(tmp_path, _flows("claims", f'{{sql: {{url: "sqlite:///{tmp_path}/claims.db"}}}}'))
    await _round_trip(tmp_path)


async def test_an_expired_claim_is_410_and_an_unknown_one_404(tmp_path: Path) -> None:
    write_flows(tmp_path, _flows(ttl="1s"))
    async with facade_client(tmp_path) as client:
        claim = (await client.post("/parcels", json={"n": 1})).json()["claim"]
        await asyncio.sleep(2.2)  # past its time to live (the id's expiry is in whole seconds)
        expired = await client.post("/parcels/fetch", json={"claim": claim})
        unknown = await client.post("/parcels/fetch", json={"claim": "A" * 24 + ".99999999999"})
        malformed = await client.post("/parcels/fetch", json={"claim": "../etc/passwd"})
        none = await client.post("/parcels/fetch", json={"other": 1})
    assert expired.status_code == 410 and expired.json()["type"].endswith("/claim-expired")
    assert expired.headers["content-type"] == "application/problem+json"
    assert unknown.status_code == 404 and unknown.json()["type"].endswith("/unknown-claim")
    assert malformed.status_code == 404 and "is not a claim id" in malformed.json()["detail"]
    assert none.status_code == 422 and none.json()["type"].endswith("/claim-missing")


async def test_a_store_that_cannot_be_reached_is_503_never_a_lost_claim(tmp_path: Path) -> None:
    write_flows(tmp_path, _flows("claims", f'{{redis: {{url: "redis://127.0.0.1:{closed_port()}/0"}}}}'))
    async with facade_client(tmp_path) as client:
        parked = await client.post("/parcels", json={"n": 1})
        fetched = await client.post("/parcels/fetch", json={"claim": "A" * 24 + ".99999999999"})
    assert parked.status_code == fetched.status_code == 503
    assert parked.headers["retry-after"] == "1"


async def test_a_part_that_is_not_there_is_the_callers_422(tmp_path: Path) -> None:
    write_flows(tmp_path, _flows())
    async with facade_client(tmp_path) as client:
        answer = await client.post("/letters", json={"to": "ada"})
    assert answer.status_code == 422 and "must find one value" in answer.json()["detail"]


@pytest.mark.parametrize(("step", "message", "where"), [
    ("claim_check: {ttl: 0s}", "a duration greater than zero", "5:28"),
    ("claim_check: {ttl: 1m, part: '$..['}", "invalid JSONPath", "5:38"),
    ("claim_check: {ttl: 1m, store: nowhere}", "unknown endpoint 'nowhere'", "5:39"),
    ("claim_check: {ttl: 1m, max_size: lots}", "expected a size", "5:42"),
    ("claim_retrieve: {claim: '${payload.'}", "unclosed ${", "5:33"),
    ("claim_retrieve: {store: web}", "cannot hold state", "5:33"),
])
def test_a_wrong_claim_step_is_a_load_error_at_its_place(tmp_path: Path, step: str, message: str,
                                                         where: str) -> None:
    write_flows(tmp_path, f"""
    flows:
      f:
        source: {{http: {{path: /f}}}}
        steps:
          - {step}
    endpoints:
      web: {{http: {{url: "http://127.0.0.1:9"}}}}
    """)
    with pytest.raises(LoadErrors) as caught:
        load_project(tmp_path)
    text = str(caught.value)
    assert message in text and f"flows.yaml:{where}:" in text, text
