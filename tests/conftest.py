"""Shared pytest settings: async tests run on asyncio through anyio's plugin."""

from __future__ import annotations

import os

import pytest

# `interlace build` falls back to the project's published runtime image; a test never leaves
# loopback, so it looks for that image on a closed loopback port instead
os.environ.setdefault("INTERLACE_PUBLISHED_BASE", "127.0.0.1:9/interlace/runtime")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
