"""The connection's own address (``${client.*}``) and the throttle's caller policies, against a
running engine on 127.0.0.1: callers come from different loopback addresses (the client socket
bound to 127.0.0.1 or 127.0.0.2), by their key, and through a trusted gateway's X-Forwarded-For."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.loader import LoadErrors, load_project
from tests.support.engine import RunningEngine, run_engine, wait_for, write_flows
from tests.support.redis_server import RedisServer


@pytest.fixture
def clients() -> Iterator[dict[str, httpx.Client]]:
    """One client per loopback source address: each connection's peer is its own address."""
    made = {address: httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)
            for address in ("127.0.0.1", "127.0.0.2", "127.0.0.3")}
    try:
        yield made
    finally:
        for client in made.values():
            client.close()


WHO = """
flows:
  who:
    source: {http: {method: GET, path: /who}}
    steps:
      - respond: {json: {address: "${client.address}", port: "${client.port}", text: "at ${client.address}"}}
  remembered:
    source: {http: {method: GET, path: /remembered}}
    steps:
      - cache:
          key: "seen:${client.address}"
          ttl: 1h
          steps:
            - respond: {json: {first: "${client.address}", hit: "${vars.nothing}"}}
"""


def test_flows_read_the_connections_own_address_and_port(tmp_path: Path, clients: dict[str, httpx.Client]) -> None:
    write_flows(tmp_path, WHO)
    with run_engine(tmp_path) as engine:
        one = clients["127.0.0.1"].get(f"{engine.url}/who")
        two = clients["127.0.0.2"].get(f"{engine.url}/who", headers={"x-forwarded-for": "10.9.9.9"})
        # a cache hit is answered inside the server's protocol (the quick path): it reads the peer too
        first = [clients[a].get(f"{engine.url}/remembered").json()["first"] for a in ("127.0.0.1", "127.0.0.2")]
        again = [clients[a].get(f"{engine.url}/remembered").json()["first"] for a in ("127.0.0.2", "127.0.0.1")]
    assert one.json()["address"] == "127.0.0.1" and one.json()["text"] == "at 127.0.0.1"
    assert isinstance(one.json()["port"], int) and one.json()["port"] > 0
    # without proxy_headers the header is only a header: the address is the connection's
    assert two.json()["address"] == "127.0.0.2"
    assert first == ["127.0.0.1", "127.0.0.2"] and again == ["127.0.0.2", "127.0.0.1"]


def _guarded(throttle: str, store_url: str | None = None, settings: str = "") -> str:
    store = f"endpoints:\n  shared: {{redis: {{url: \"{store_url}\"}}}}\n" if store_url else ""
    store_key = "\n          store: shared" if store_url else ""
    return f"""
{settings}{store}flows:
  guarded:
    source: {{http: {{method: GET, path: /guarded}}}}
    steps:
      - throttle:{store_key}
{throttle}
      - respond: {{json: {{ok: true, caller: "${{client.address}}"}}}}
"""


BY_ADDRESS = """\
          limit: 2
          per: 1h
          policies:
            - {cidr: 127.0.0.3, access: deny}
            - {cidr: 127.0.0.2/32, limit: 4}
            - {cidr: [127.0.0.0/8, "::1"], limit: 3, per: 1h}   # overlaps the two above: they come first
"""


def _statuses(client: httpx.Client, url: str, count: int, headers: dict[str, str] | None = None) -> list[int]:
    return [client.get(f"{url}/guarded", headers=headers).status_code for _ in range(count)]


def test_callers_from_different_addresses_get_their_own_policies(tmp_path: Path,
                                                                 clients: dict[str, httpx.Client]) -> None:
    write_flows(tmp_path, _guarded(BY_ADDRESS))
    with run_engine(tmp_path) as engine:
        denied = clients["127.0.0.3"].get(f"{engine.url}/guarded")
        two = _statuses(clients["127.0.0.2"], engine.url, 5)
        one = _statuses(clients["127.0.0.1"], engine.url, 3)
        refused = clients["127.0.0.1"].get(f"{engine.url}/guarded")
    assert denied.status_code == 403
    assert denied.headers["content-type"] == "application/problem+json"
    assert denied.json()["type"].endswith("/caller-denied") and "127.0.0.3" in denied.json()["detail"]
    assert two == [200, 200, 200, 200, 429]  # 127.0.0.2's own policy: 4
    assert one == [200, 200, 200]  # the loopback network's: 3, counted apart from 127.0.0.2's
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 3600 and refused.json()["retry_after"] == retry_after


BY_KEY = """\
          key: ${headers."x-client-id" || 'anonymous'}
          limit: 1
          per: 1h
          policies:
            - {keys: [blocked-1, blocked-2], access: deny}
            - {keys: gold, access: allow}
            - {cidr: 127.0.0.2, keys: [silver], limit: 3}     # silver, from 127.0.0.2 only
            - {keys: [silver], limit: 2, algorithm: sliding_window}
          others: limit
"""


def test_callers_are_matched_by_key_and_by_key_and_address(tmp_path: Path, clients: dict[str, httpx.Client]) -> None:
    write_flows(tmp_path, _guarded(BY_KEY))
    one, two = clients["127.0.0.1"], clients["127.0.0.2"]
    with run_engine(tmp_path) as engine:
        blocked = one.get(f"{engine.url}/guarded", headers={"x-client-id": "blocked-2"})
        gold = _statuses(one, engine.url, 6, {"x-client-id": "gold"})
        silver_there = _statuses(two, engine.url, 4, {"x-client-id": "silver"})
        silver_here = _statuses(one, engine.url, 3, {"x-client-id": "silver"})
        others = _statuses(one, engine.url, 2, {"x-client-id": "bronze"})
        anonymous = _statuses(two, engine.url, 2)
    assert blocked.status_code == 403 and blocked.json()["type"].endswith("/caller-denied")
    assert "blocked-2" not in blocked.text  # a key may be a credential: never echoed
    assert gold == [200] * 6
    assert silver_there == [200, 200, 200, 429]
    # the same key from another address falls to the next policy, its own counter
    assert silver_here == [200, 200, 429]
    assert others == [200, 429] and anonymous == [200, 429]


def test_policies_hold_across_two_engines_on_one_redis(tmp_path: Path, redis: RedisServer,
                                                        clients: dict[str, httpx.Client]) -> None:
    write_flows(tmp_path / "one", _guarded(BY_ADDRESS, redis.url))
    write_flows(tmp_path / "two", _guarded(BY_ADDRESS, redis.url))
    with run_engine(tmp_path / "one") as first, run_engine(tmp_path / "two") as second:
        on_first = _statuses(clients["127.0.0.2"], first.url, 2)
        on_second = _statuses(clients["127.0.0.2"], second.url, 3)
        loopback = _statuses(clients["127.0.0.1"], second.url, 3) + _statuses(clients["127.0.0.1"], first.url, 1)
        denied = clients["127.0.0.3"].get(f"{second.url}/guarded").status_code
    assert on_first + on_second == [200, 200, 200, 200, 429]
    assert loopback == [200, 200, 200, 429]
    assert denied == 403


TRUSTING_THE_GATEWAY = """\
settings:
  http:
    proxy_headers: {trusted: [127.0.0.1]}
"""


def test_behind_a_trusted_gateway_the_address_is_the_one_it_forwards(tmp_path: Path,
                                                                    clients: dict[str, httpx.Client]) -> None:
    write_flows(tmp_path, _guarded("""\
          policies:
            - {cidr: 203.0.113.0/24, access: deny}
            - {cidr: 198.51.100.0/24, access: allow}
          others: deny
""", settings=TRUSTING_THE_GATEWAY))
    gateway, other = clients["127.0.0.1"], clients["127.0.0.2"]
    with run_engine(tmp_path) as engine:
        forwarded_denied = gateway.get(f"{engine.url}/guarded", headers={"x-forwarded-for": "203.0.113.9"})
        forwarded_allowed = gateway.get(f"{engine.url}/guarded",
                                        headers={"x-forwarded-for": "203.0.113.1, 198.51.100.7"})
        # from an address that is not the gateway's the header is not believed
        spoofing = other.get(f"{engine.url}/guarded", headers={"x-forwarded-for": "198.51.100.7"})
    assert forwarded_denied.status_code == 403 and "203.0.113.9" in forwarded_denied.json()["detail"]
    assert forwarded_allowed.status_code == 200 and forwarded_allowed.json()["caller"] == "198.51.100.7"
    assert spoofing.status_code == 403 and "127.0.0.2" in spoofing.json()["detail"]


@pytest.mark.parametrize(("throttle", "message", "where"), [
    ("policies: [{access: deny}]", "a policy matches callers by cidr (their address), keys", "6:22"),
    ("policies: [{keys: [a], access: allow}]", "keys match the value of the step's key template", "6:29"),
    ("key: ${headers.a}\n          policies: [{keys: [a], access: deny, per: 1s}]",
     "per goes with access: limit (this policy's access is deny)", "7:53"),
    ("policies: [{cidr: [127.0.0.1, 10.0.0.0/33], access: deny}]", "not a network or an address: '10.0.0.0/33'",
     "6:41"),
    ("policies: [{cidr: 10.0.0.0/8, limit: 5}]", "a policy limited by the step's own limit needs the step's per",
     "6:22"),
    ("policies: [{cidr: 10.0.0.0/8, access: allow}]\n          networks: [{cidr: 10.0.0.0/8}]",
     "networks is the address-only form of policies: give one of them", "7:21"),
    ("policies: [{cidr: 10.0.0.0/8, access: allow}]", "give the step limit and per, or others: allow or deny",
     "6:11"),
    ("limit: 1\n          per: 1s\n          policies: [{cidr: 10.0.0.0/8, algorithm: fastest}]",
     "expected one of token_bucket, sliding_window in policies[0].algorithm", "8:52"),
])
def test_a_wrong_policy_is_a_load_error_at_its_place(tmp_path: Path, throttle: str, message: str,
                                                     where: str) -> None:
    write_flows(tmp_path, _guarded("          " + throttle))
    with pytest.raises(LoadErrors) as caught:
        load_project(tmp_path)
    text = str(caught.value)
    assert message in text and f"flows.yaml:{where}:" in text, text


def test_an_engine_on_ipv6_loopback_sees_and_limits_ipv6_callers(tmp_path: Path) -> None:
    """--host ::1: ${client.address} is ::1, a ::1/128 policy holds it, and the start's log line
    gives the facade's URL as a URL (http://[::1]:port; it said http://::1:port)."""
    write_flows(tmp_path, """
flows:
  who:
    source: {http: {method: GET, path: /who}}
    steps:
      - throttle:
          policies:
            - {cidr: "::1/128", limit: 1, per: 1h}
          others: deny
      - respond: {json: {address: "${client.address}"}}
""")
    with run_engine(tmp_path, "--host", "::1", wait_ready=False) as engine:
        url = f"http://[::1]:{engine.port}"
        assert f"facade on {url}, " in _wait_for_log(engine, "facade on ")
        first, second = (_retrying_get(f"{url}/who") for _ in range(2))
    assert first.json() == {"address": "::1"}
    assert second.status_code == 429


def _wait_for_log(engine: RunningEngine, text: str) -> str:
    wait_for(lambda: text in engine.log(), text)
    return engine.log()


def _retrying_get(url: str) -> httpx.Response:
    answers: list[httpx.Response] = []

    def got() -> bool:
        try:
            answers.append(httpx.get(url, timeout=10))
        except httpx.TransportError:
            return False
        return True

    wait_for(got, f"an answer from {url}")
    return answers[-1]
