"""throttle: per-key limits with 429 and Retry-After, locally and across two real engines on one Redis."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.backends import closed_port
from tests.support.engine import facade_client, run_engine, write_flows
from tests.support.redis_server import RedisServer


def _flows(limit: int, per: str, extra: str = "", store_url: str | None = None) -> str:
    store = f"endpoints:\n  shared: {{redis: {{url: \"{store_url}\"}}}}\n" if store_url else ""
    store_key = "\n          store: shared" if store_url else ""
    return f"""
{store}flows:
  limited:
    source: {{http: {{method: GET, path: /limited}}}}
    steps:
      - throttle:
          key: "${{headers.\\"x-client-id\\" || 'anonymous'}}"
          limit: {limit}
          per: {per}{store_key}{extra}
      - respond: {{json: {{ok: true}}}}
"""


@pytest.mark.anyio
async def test_past_the_limit_the_caller_gets_429_with_retry_after(tmp_path: Path) -> None:
    write_flows(tmp_path, _flows(3, "10s"))
    async with facade_client(tmp_path) as client:
        statuses = [(await client.get("/limited", headers={"X-Client-Id": "a"})).status_code for _ in range(3)]
        refused = await client.get("/limited", headers={"X-Client-Id": "a"})
        other = await client.get("/limited", headers={"X-Client-Id": "b"})
    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert 1 <= int(refused.headers["retry-after"]) <= 4  # one token back in 10s/3
    assert refused.json()["type"].endswith("/rate-limited")
    assert refused.json()["retry_after"] == int(refused.headers["retry-after"])
    assert other.status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
async def test_both_algorithms_in_redis(tmp_path: Path, redis: RedisServer, algorithm: str) -> None:
    write_flows(tmp_path, _flows(4, "30s", f"\n          algorithm: {algorithm}", redis.url))
    async with facade_client(tmp_path) as client:
        statuses = [(await client.get("/limited")).status_code for _ in range(6)]
    assert statuses == [200, 200, 200, 200, 429, 429]


def test_two_engines_on_one_redis_hold_one_limit(tmp_path: Path, redis: RedisServer) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    write_flows(one, _flows(5, "60s", store_url=redis.url))
    write_flows(two, _flows(5, "60s", store_url=redis.url))
    with run_engine(one) as first, run_engine(two) as second:
        statuses = []
        for index in range(10):
            engine = first if index % 2 == 0 else second
            statuses.append(httpx.get(f"{engine.url}/limited", headers={"X-Client-Id": "tenant-1"}).status_code)
    assert statuses.count(200) == 5
    assert statuses.count(429) == 5
    assert statuses[:5] == [200] * 5


@pytest.mark.anyio
async def test_an_unreachable_store_lets_through_or_denies_as_told(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    allow, deny = tmp_path / "allow", tmp_path / "deny"
    write_flows(allow, _flows(1, "60s", store_url=url))
    write_flows(deny, _flows(1, "60s", "\n          on_store_error: deny", url))
    async with facade_client(allow) as open_client, facade_client(deny) as closed_client:
        allowed = [(await open_client.get("/limited")).status_code for _ in range(3)]
        denied = await closed_client.get("/limited")
    assert allowed == [200, 200, 200]
    assert denied.status_code == 503
    assert denied.headers["retry-after"] == "1"


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


POLICY = """
          policies:
            - {keys: [gold], access: allow}
          others: limit"""


@pytest.mark.parametrize("extra", ["", POLICY], ids=["plain", "policies"])
def test_callers_sending_huge_keys_do_not_grow_the_engine(tmp_path: Path, extra: str) -> None:
    # a client id is the caller's to choose: 2,000 callers each sending a new 30 KB one held 60 MB
    # of counters (10,000, the store's bound, 300 MB) before the key was kept as its digest
    write_flows(tmp_path, _flows(1, "1h", extra))
    long_key = "k" * 30_000
    with run_engine(tmp_path) as engine, httpx.Client(base_url=engine.url, timeout=10) as client:
        same = [client.get("/limited", headers={"x-client-id": long_key}).status_code for _ in range(2)]
        other = client.get("/limited", headers={"x-client-id": long_key[:-1] + "j"}).status_code
        before = _rss_mib(engine.process.pid)
        for index in range(2000):
            client.get("/limited", headers={"x-client-id": f"{index:08d}" + long_key})
        grown = _rss_mib(engine.process.pid) - before
    assert same == [200, 429] and other == 200  # each long key still its own limit
    assert grown < 20, f"RSS grew {grown:.0f} MiB"


@pytest.mark.anyio
async def test_a_huge_key_is_counted_under_its_digest_in_redis(tmp_path: Path, redis: RedisServer) -> None:
    write_flows(tmp_path, _flows(1, "1h", store_url=redis.url))
    async with facade_client(tmp_path) as client:
        statuses = [(await client.get("/limited", headers={"x-client-id": "k" * 30_000})).status_code
                    for _ in range(2)]
        short = (await client.get("/limited", headers={"x-client-id": "partner-7"})).status_code
    reply = redis.command("KEYS", "*")  # RESP: *2, then $length and the name of each
    lengths = [int(line[1:]) for line in reply.split(b"\r\n") if line.startswith(b"$")]
    assert statuses == [200, 429] and short == 200
    assert len(lengths) == 2 and max(lengths) < 200, reply[:300]
    assert b":partner-7\r\n" in reply  # a short key keeps its name
