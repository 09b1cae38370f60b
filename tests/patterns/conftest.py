"""Fixtures of the pattern tests: one real Redis for the session, flushed before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_server import RedisServer, redis_server


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis(redis_session: RedisServer) -> RedisServer:
    redis_session.command("FLUSHALL")
    return redis_session
