"""recipient_list: the endpoint picked per message from a declared set, against real backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.loader import LoadErrors, load_project
from tests.support.backends import BackendServer
from tests.support.engine import facade_client, write_flows

pytestmark = pytest.mark.anyio


@pytest.fixture
def regions() -> Iterator[tuple[BackendServer, BackendServer]]:
    with BackendServer() as eu, BackendServer() as us:
        yield eu, us


def _flows(eu: BackendServer, us: BackendServer) -> str:
    return f"""
    endpoints:
      orders-eu: {{http: {{url: "{eu.url}"}}}}
      orders-us: {{http: {{url: "{us.url}"}}}}
    flows:
      routed:
        source: {{http: {{method: POST, path: "/orders/{{id}}"}}}}
        steps:
          - recipient_list:
              to: ${{payload.to}}
              endpoints: [orders-eu, orders-us]
              call: {{method: POST, path: "/orders/${{path.id}}"}}
    """


async def test_the_expression_picks_one_or_several_recipients(tmp_path: Path,
                                                              regions: tuple[BackendServer, BackendServer]) -> None:
    eu, us = regions
    write_flows(tmp_path, _flows(eu, us))
    async with facade_client(tmp_path) as client:
        one = await client.post("/orders/7", json={"to": "orders-eu"})
        both = await client.post("/orders/8", json={"to": ["orders-eu", "orders-us"]})
        refused = await client.post("/orders/9", json={"to": "http://evil.example"})
    assert one.status_code == 200 and one.json() == {"to": "orders-eu"}
    assert both.json() == {"orders-eu": {"to": ["orders-eu", "orders-us"]},
                           "orders-us": {"to": ["orders-eu", "orders-us"]}}
    assert [r.path for r in eu.requests] == ["/orders/7", "/orders/8"]
    assert [r.path for r in us.requests] == ["/orders/8"]
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("/unknown-recipient")


def test_an_undeclared_recipient_is_a_load_error(tmp_path: Path) -> None:
    write_flows(tmp_path, """
    flows:
      routed:
        source: {http: {method: GET, path: /r}}
        steps:
          - recipient_list: {to: "${query.to}", endpoints: [nowhere]}
    """)
    with pytest.raises(LoadErrors) as caught:
        load_project(tmp_path)
    assert "unknown endpoint 'nowhere'" in str(caught.value)


async def test_a_recipient_named_many_times_is_called_once(tmp_path: Path,
                                                          regions: tuple[BackendServer, BackendServer]) -> None:
    # a caller writing the list must not turn one request into a backend call per entry
    eu, us = regions
    write_flows(tmp_path, _flows(eu, us))
    async with facade_client(tmp_path) as client:
        many = await client.post("/orders/8", json={"to": ["orders-eu"] * 200 + ["orders-us", "orders-eu"]})
    assert many.status_code == 200 and list(many.json()) == ["orders-eu", "orders-us"]
    assert [r.path for r in eu.requests] == ["/orders/8"]
    assert [r.path for r in us.requests] == ["/orders/8"]
