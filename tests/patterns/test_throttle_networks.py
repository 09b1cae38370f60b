"""throttle by client network: CIDR deny and allow lists and per-network limits (WSO2's throttle
IP policies), the address from a template (X-Forwarded-For's last entry, another header), counters
in memory or a real Redis.  The connection's own address and the trusted gateway's
X-Forwarded-For, against a running engine: tests/patterns/test_throttle_policies.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.loader import LoadErrors, load_project
from tests.support.engine import facade_client, write_flows
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio


def _flows(settings: str, store_url: str | None = None) -> str:
    store = f"endpoints:\n  shared: {{redis: {{url: \"{store_url}\"}}}}\n" if store_url else ""
    store_key = "\n          store: shared" if store_url else ""
    return f"""
{store}flows:
  guarded:
    source: {{http: {{method: GET, path: /guarded}}}}
    steps:
      - throttle:{store_key}
{settings}
      - respond: {{json: {{ok: true}}}}
"""


# in process there is no gateway in front: the address is read from the header a gateway would set
FORWARDED = '          address: ${headers."x-forwarded-for"}\n'
POLICIES = FORWARDED + """\
          limit: 2
          per: 1h
          networks:
            - {cidr: [203.0.113.0/24, "2001:db8:bad::/48"], access: deny}
            - {cidr: 10.0.0.0/8, access: allow}
            - {cidr: 192.168.0.0/16, limit: 4}
"""


async def _statuses(client: object, address: str, count: int, header: str = "x-forwarded-for") -> list[int]:
    return [(await client.get("/guarded", headers={header: address})).status_code  # type: ignore[attr-defined]
            for _ in range(count)]


async def test_a_denied_network_is_403_an_allowed_one_unlimited_and_the_others_limited(tmp_path: Path) -> None:
    write_flows(tmp_path, _flows(POLICIES))
    async with facade_client(tmp_path) as client:
        denied = await client.get("/guarded", headers={"x-forwarded-for": "203.0.113.9"})
        denied_v6 = await _statuses(client, "2001:db8:bad::7", 1)
        allowed = await _statuses(client, "10.20.30.40", 10)
        own_limit = await _statuses(client, "192.168.1.1", 5)
        neighbour = await _statuses(client, "192.168.1.2", 1)
        others = await _statuses(client, "198.51.100.1", 3)
        other_address = await _statuses(client, "198.51.100.2", 1)
    assert denied.status_code == 403
    assert denied.headers["content-type"] == "application/problem+json"
    assert denied.json()["type"].endswith("/network-denied") and "203.0.113.9" in denied.json()["detail"]
    assert denied_v6 == [403]
    assert allowed == [200] * 10
    # a network's limit counts per address in it, as the step's own limit does for the others
    assert own_limit == [200, 200, 200, 200, 429] and neighbour == [200]
    assert others == [200, 200, 429] and other_address == [200]


async def test_the_address_is_the_last_forwarded_entry_the_one_the_gateway_added(tmp_path: Path) -> None:
    write_flows(tmp_path, _flows(POLICIES))
    async with facade_client(tmp_path) as client:
        # a client that puts an allowed address first is still judged by what the gateway appended
        spoofed = await client.get("/guarded", headers={"x-forwarded-for": "10.0.0.1, 203.0.113.5"})
        with_port = await client.get("/guarded", headers={"x-forwarded-for": "[2001:db8:bad::1]:4430"})
        mapped = await client.get("/guarded", headers={"x-forwarded-for": "::ffff:203.0.113.8"})
        passed_on = await _statuses(client, "203.0.113.5, 10.1.1.1", 5)
    assert spoofed.status_code == with_port.status_code == mapped.status_code == 403
    assert passed_on == [200] * 5


async def test_without_an_address_the_others_policy_applies(tmp_path: Path) -> None:
    write_flows(tmp_path, _flows(FORWARDED + """\
          networks:
            - {cidr: 10.0.0.0/8, access: allow}
          others: deny
"""))
    async with facade_client(tmp_path) as client:
        inside = await _statuses(client, "10.9.9.9", 3)
        outside = await _statuses(client, "8.8.8.8", 1)
        missing = (await client.get("/guarded")).status_code
        garbage = await _statuses(client, "not-an-address", 1)
    assert inside == [200, 200, 200] and outside == [403] and missing == 403 and garbage == [403]


async def test_the_address_can_come_from_another_header(tmp_path: Path) -> None:
    write_flows(tmp_path, _flows("""\
          address: ${headers."x-real-ip"}
          limit: 1
          per: 1h
          networks:
            - {cidr: 172.16.0.0/12, access: deny}
"""))
    async with facade_client(tmp_path) as client:
        denied = await _statuses(client, "172.16.5.5", 1, header="x-real-ip")
        ignored = await _statuses(client, "172.16.5.5", 2)  # X-Forwarded-For is not read here: no address
    assert denied == [403] and ignored == [200, 429]


async def test_network_limits_hold_in_redis(tmp_path: Path, redis: RedisServer) -> None:
    write_flows(tmp_path / "one", _flows(POLICIES, redis.url))
    write_flows(tmp_path / "two", _flows(POLICIES, redis.url))
    async with facade_client(tmp_path / "one") as one, facade_client(tmp_path / "two") as two:
        first = await _statuses(one, "192.168.7.7", 2)
        second = await _statuses(two, "192.168.7.7", 3)
    assert first + second == [200, 200, 200, 200, 429]


@pytest.mark.parametrize(("settings", "message", "where"), [
    ("limit: 1\n          per: 1s\n          networks: [{cidr: 10.0.0.300/8}]", "not a network or an address", "8:29"),
    ("limit: 1\n          per: 1s\n          networks: [{cidr: [10.0.0.0/8, nope]}]", "'nope'", "8:42"),
    ("limit: 1\n          per: 1s\n          networks: [{cidr: [10.0.0.0/8, 10.1.2.3/8]}]",
     "'10.1.2.3/8' has host bits set: write the network 10.0.0.0/8 or the one address 10.1.2.3", "8:42"),
    ("networks: [{cidr: 10.0.0.0/8, access: deny, limit: 3}]", "limit goes with access: limit", "6:62"),
    ("networks: [{cidr: 10.0.0.0/8, access: allow}]", "give the step limit and per, or others: allow or deny",
     "6:11"),
    ("per: 1s", "missing required key 'limit'", "6:11"),
    ("limit: 1\n          per: 1s\n          others: deny", "others goes with policies or networks", "8:19"),
    ("limit: 1\n          per: 1s\n          networks: [{cidr: 10.0.0.0/8, per: 0s}]", "greater than zero", "8:46"),
])
def test_a_wrong_network_policy_is_a_load_error_at_its_place(tmp_path: Path, settings: str, message: str,
                                                             where: str) -> None:
    write_flows(tmp_path, _flows("          " + settings + "\n"))
    with pytest.raises(LoadErrors) as caught:
        load_project(tmp_path)
    text = str(caught.value)
    assert message in text and f"flows.yaml:{where}:" in text, text
