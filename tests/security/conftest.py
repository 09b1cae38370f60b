"""What several security tests share: one echo backend per module (tests/support/backends.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.backends import BackendServer


@pytest.fixture(scope="module")
def backend() -> Iterator[BackendServer]:
    """A loopback echo backend for the module's engine (test_reload_leaks has its own, per test)."""
    with BackendServer() as server:
        yield server
