"""Fixtures of the HTTP connector tests: real backends on loopback and endpoints closed after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from connectors.http import HttpEndpoint
from tests.support.backends import BackendServer

MakeEndpoint = Callable[..., HttpEndpoint]


@pytest.fixture
def backend() -> Iterator[BackendServer]:
    """A running echo backend on a free loopback port."""
    with BackendServer() as server:
        yield server


@pytest.fixture
def second_backend() -> Iterator[BackendServer]:
    with BackendServer() as server:
        yield server


@pytest.fixture
async def make_endpoint() -> AsyncIterator[MakeEndpoint]:
    """``make_endpoint(config, name="test")``: an HttpEndpoint, opened, and closed after the test."""
    made: list[HttpEndpoint] = []

    def make(config: dict[str, Any], name: str = "test") -> HttpEndpoint:
        endpoint = HttpEndpoint(name, config)
        made.append(endpoint)
        return endpoint

    yield make
    for endpoint in made:
        await endpoint.close()
