"""The store layer: messages, dead letters, idempotency keys, schedule firings and file claims.

One ``Store`` (``engine/store/store.py``, on SQLAlchemy) per process, opened by the runtime
when a flow needs it; steps and sources reach it through ``current_store()``.  This module
imports no database code, so that loading flows that need no store stays cheap.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.store.store import Store


class StoreError(Exception):
    """The store could not do what was asked (database down, disk full); never a caller's fault."""


_current: Store | None = None


def use_store(store: Store | None) -> None:
    """Make ``store`` the one steps and sources of this process use (the runtime calls it)."""
    global _current
    _current = store


def current_store() -> Store:
    if _current is None:
        raise StoreError("no store is open in this process (the runtime opens one when a flow needs it)")
    return _current


def has_store() -> bool:
    return _current is not None


def backoff_delay(attempt: int, initial: float, multiplier: float, maximum: float, jitter: float) -> float:
    """The wait after attempt ``attempt``: exponential, capped at ``maximum``, spread by +-``jitter``
    so that messages that failed together do not all come back together."""
    base = min(maximum, initial * (multiplier ** max(0, attempt - 1)))
    if jitter:
        base *= 1 + random.uniform(-jitter, jitter)
    return max(0.0, min(base, maximum))


__all__ = ["StoreError", "backoff_delay", "current_store", "has_store", "use_store"]
