"""The throttle's caller policies by domain name (WSO2's DOMAIN callers): the caller's host name is
its address's reverse name, confirmed forward, from the system resolver.  Only 127.0.0.1 calls or
is looked up: /etc/hosts names it localhost (and nsswitch reads the hosts file first), so no
lookup leaves the machine; an address the hosts file does not name would go to DNS, so none is
used here."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engine.loader import LoadErrors, load_project
from engine.steps._domains import CallerNames, system_forward, system_reverse
from tests.support.engine import run_engine, write_flows
from tests.support.services import IN_CI

LOCALHOST = ipaddress.ip_address("127.0.0.1")


@pytest.fixture(scope="module", autouse=True)
def hosts_file_names_loopback() -> None:
    """What these tests stand on: this machine's resolver names 127.0.0.1 localhost and back."""
    name = asyncio.run(system_reverse("127.0.0.1"))
    addresses = asyncio.run(system_forward(name, 2))
    if name != "localhost" or "127.0.0.1" not in addresses:
        # a machine without the standard "127.0.0.1 localhost" line: only a lookup leaving the
        # machine could stand in, so outside CI these tests skip; CI's machine must have it
        message = (f"the hosts file names 127.0.0.1 {name!r} -> {addresses}, not localhost: add "
                   f"'127.0.0.1 localhost' to /etc/hosts")
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.1"), timeout=10) as made:
        yield made


def _route(name: str, throttle: str) -> str:
    return f"""
  {name}:
    source: {{http: {{method: GET, path: /{name}}}}}
    steps:
      - throttle:
{throttle}
      - respond: {{json: {{ok: true}}}}
"""


FLOWS = "flows:" + _route("partners", """\
          limit: 1
          per: 1h
          policies:
            - {domains: "*.blocked.example", access: deny}
            - {domains: [gw.partner.example, localhost], limit: 3}
""") + _route("below", """\
          policies:
            - {domains: "*.localhost", access: allow}   # names below localhost, not localhost itself
          others: deny
""") + _route("written-loosely", """\
          policies:
            - {domains: [LocalHost.], access: allow}     # case and a final dot do not count
          others: deny
""") + _route("nameless", """\
          address: ${headers."x-real-ip"}
          policies:
            - {domains: localhost, access: allow}
          others: deny
""")


def test_a_localhost_caller_gets_the_domain_policys_limit(tmp_path: Path, client: httpx.Client) -> None:
    write_flows(tmp_path, FLOWS)
    with run_engine(tmp_path) as engine:
        limited = [client.get(f"{engine.url}/partners") for _ in range(4)]
        below = client.get(f"{engine.url}/below")
        loosely = client.get(f"{engine.url}/written-loosely")
        # no address, so no name: the caller falls to others
        nameless = client.get(f"{engine.url}/nameless")
        named_by_header = client.get(f"{engine.url}/nameless", headers={"x-real-ip": "127.0.0.1"})
    assert [r.status_code for r in limited] == [200, 200, 200, 429]  # the policy's 3, not the step's 1
    refused = limited[-1]
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"].endswith("/rate-limited") and refused.json()["limit"] == 3
    assert 1 <= int(refused.headers["retry-after"]) <= 3600
    assert below.status_code == 403 and below.json()["type"].endswith("/caller-denied")
    assert loosely.status_code == 200
    assert nameless.status_code == 403 and named_by_header.status_code == 200


def test_names_are_cached_per_address_for_their_ttl_within_the_size() -> None:
    asked: list[str] = []

    async def counted(address: str) -> str:
        asked.append(address)
        return await system_reverse(address)

    async def scenario() -> list[str | None]:
        names = CallerNames({"ttl": "200ms", "size": 1}, ("domain_lookup",), reverse=counted)
        at_once = await asyncio.gather(*(names.name(LOCALHOST) for _ in range(5)))  # one lookup for all
        again = await names.name(LOCALHOST)
        await asyncio.sleep(0.25)
        expired = await names.name(LOCALHOST)
        # a second address pushes the first out (size 1); it has no name here, told by the reverse
        # function itself rather than by a DNS server outside the machine
        names._reverse = _no_name_for_others(counted)
        other = await names.name(ipaddress.ip_address("127.0.0.9"))
        pushed_out = await names.name(LOCALHOST)
        return [*at_once, again, expired, other, pushed_out]

    found = asyncio.run(scenario())
    assert found == ["localhost"] * 7 + [None, "localhost"]
    assert asked == ["127.0.0.1", "127.0.0.1", "127.0.0.1"]


def _no_name_for_others(reverse):  # type: ignore[no-untyped-def]
    import socket

    async def looked_up(address: str) -> str:
        if address != "127.0.0.1":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return str(await reverse(address))

    return looked_up


def test_a_forged_reverse_name_is_not_believed() -> None:
    """Whoever controls 10.7.7.7's reverse zone can call it localhost; localhost's forward zone (the
    hosts file, for real) says 127.0.0.1, so 10.7.7.7 gets no name."""

    async def forged(address: str) -> str:
        return "localhost"

    async def scenario() -> tuple[str | None, str | None]:
        names = CallerNames({}, ("domain_lookup",), reverse=forged)
        return await names.name(ipaddress.ip_address("10.7.7.7")), await names.name(LOCALHOST)

    assert asyncio.run(scenario()) == (None, "localhost")


def test_a_lookup_past_its_timeout_is_no_name_and_is_tried_again_later() -> None:
    slow = True

    async def reverse(address: str) -> str:
        if slow:
            await asyncio.sleep(5)
        return await system_reverse(address)

    async def scenario() -> tuple[str | None, str | None, str | None]:
        nonlocal slow
        names = CallerNames({"timeout": "50ms"}, ("domain_lookup",), reverse=reverse)
        late = await names.name(LOCALHOST)
        slow = False
        remembered = await names.name(LOCALHOST)  # not asked again at once
        names._known.clear()  # as after _RETRY_FAILED (10 s): asked again
        return late, remembered, await names.name(LOCALHOST)

    assert asyncio.run(scenario()) == (None, None, "localhost")


def test_lookups_do_not_wait_on_the_default_executor() -> None:
    """The resolver can block a thread for seconds; name lookups have threads of their own, so a
    loop whose default executor is busy (files, SQLite) still learns a caller's name, and a hung
    resolver would not take that executor's threads."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    async def scenario() -> str | None:
        loop = asyncio.get_running_loop()
        busy = ThreadPoolExecutor(1)
        loop.set_default_executor(busy)
        release = threading.Event()
        blocked = loop.run_in_executor(None, release.wait)  # the default executor's only thread, held
        try:
            names = CallerNames({"timeout": "2s"}, ("domain_lookup",))
            return await names.name(LOCALHOST)
        finally:
            release.set()
            await blocked

    assert asyncio.run(scenario()) == "localhost"


def test_a_flood_of_new_addresses_is_not_queued_behind_the_lookups_in_flight() -> None:
    from engine.steps import _domains

    started: list[str] = []
    answer = asyncio.Event()

    async def hung(address: str) -> str:
        started.append(address)
        await answer.wait()
        return await system_reverse("127.0.0.1")

    async def scenario() -> tuple[list[str | None], str | None, str | None]:
        names = CallerNames({"timeout": "5s"}, ("domain_lookup",), reverse=hung)
        flood = [asyncio.ensure_future(names.name(ipaddress.ip_address(f"10.9.{n // 250}.{n % 250 + 1}")))
                 for n in range(_domains._MAX_ASKING)]
        await asyncio.sleep(0.05)
        beyond = await names.name(LOCALHOST)  # the lookups in flight are full: no name, at once
        answer.set()
        settled = await asyncio.gather(*flood)
        return settled, beyond, await names.name(LOCALHOST)

    settled, beyond, later = asyncio.run(scenario())
    assert beyond is None and later == "localhost"
    assert settled == [None] * _domains._MAX_ASKING  # 10.9.x.y is not localhost: not confirmed
    assert len(started) == _domains._MAX_ASKING + 1 and started[-1] == "127.0.0.1"


@pytest.mark.parametrize(("throttle", "message", "where"), [
    ("policies: [{domains: [localhost, \"foo.*.example\"], access: deny}]",
     "not a host name or *.suffix: 'foo.*.example'", "6:44"),
    ("policies: [{domains: \"*\", access: deny}]", "not a host name or *.suffix: '*'", "6:32"),
    ("policies: [{domains: -bad.example, access: deny}]", "not a host name or *.suffix: '-bad.example'", "6:32"),
    ("networks: [{cidr: 10.0.0.0/8, domains: localhost, access: deny}]",
     "unknown key 'domains' in networks[0]", "6:41"),
    ("policies: [{cidr: 10.0.0.0/8, access: deny}]\n          domain_lookup: {ttl: 1m}\n          limit: 1\n"
     "          per: 1s", "domain_lookup says how callers' names are looked up", "7:26"),
    ("policies: [{domains: localhost, access: deny}]\n          domain_lookup: {timeout: soon}\n          others: deny",
     "expected a duration", "7:36"),
])
def test_a_wrong_domain_policy_is_a_load_error_at_its_place(tmp_path: Path, throttle: str, message: str,
                                                            where: str) -> None:
    write_flows(tmp_path, "flows:" + _route("f", "          " + throttle))
    with pytest.raises(LoadErrors) as caught:
        load_project(tmp_path)
    text = str(caught.value)
    assert message in text and f"flows.yaml:{where}:" in text, text
