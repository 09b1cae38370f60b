"""Servers the messaging tests share, started once per session on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.brokers import RabbitServer
from tests.support.postgres import postgres_server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def rabbit() -> Iterator[RabbitServer]:
    """One RabbitMQ for the session (its boot is the slowest of the servers); tests use their own queues."""
    with RabbitServer() as server:
        yield server
