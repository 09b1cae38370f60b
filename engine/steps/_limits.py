"""What the limit steps (throttle, concurrency) share: whose limit a message counts against, the
refusal with its Retry-After, and what happens when the shared store cannot be reached."""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from typing import Any

from engine.compiler import CompileContext
from engine.errors import FlowError, ServiceUnavailable, TooManyRequests
from engine.expressions import to_text
from engine.message import Message

KEY_FIELD: dict[str, Any] = {
    "type": "string",
    "description": "Whose limit a message counts against, e.g. ${headers.\"x-client-id\"} (default: one limit "
                   "for everyone).",
}
ON_STORE_ERROR_FIELD: dict[str, Any] = {
    "enum": ["allow", "deny"],
    "description": "When the shared store cannot be reached: allow (default, the limit is not enforced "
                   "meanwhile, logged) or deny (503).",
}
MESSAGE_FIELD: dict[str, Any] = {"type": "string", "description": "The problem's detail (default names the limit)."}


def limit_key(config: Any, ctx: CompileContext) -> Callable[[Message], str]:
    """The message's key (its client, tenant...), or "" for everyone when the step names none."""
    if "key" not in config:
        return lambda msg: ""
    template = ctx.template(config["key"], "key")
    return lambda msg: to_text(template.render(msg))


LONGEST_KEPT_KEY = 64


def counted_key(key: str) -> str:
    """The name a caller's key is counted under: itself when short, else its SHA-256 (71
    characters, "sha256:" and the hex, longer than any key kept as it is, so the two never meet).

    The key comes from the request (a header, a field of the body): kept whole, 10,000 callers
    each sending a 30 KB client id held 300 MB of one step's counters (and as much in Redis)."""
    if len(key) <= LONGEST_KEPT_KEY:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def whole_seconds(seconds: float) -> int:
    """A Retry-After: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds))


def refusal(detail: str, retry_after: int, limit: int, *, status: int = 429, code: str | None = None) -> FlowError:
    """The answer past a limit: 429 (or 503) problem+json with Retry-After and ${error.retry_after}."""
    error_type = TooManyRequests if status == 429 else ServiceUnavailable
    return error_type(detail, code=code, headers={"Retry-After": str(retry_after)},
                      extra={"retry_after": retry_after, "limit": limit})


class StoreTrouble:
    """``on_store_error``: a store that cannot be reached lets the message through (logged) or,
    with deny, answers 503 with Retry-After."""

    def __init__(self, config: Any, log: logging.Logger, step: str, limit_name: str) -> None:
        self.deny = config.get("on_store_error", "allow") == "deny"
        self._log = log
        self._step = step
        self._limit_name = limit_name

    def met(self, exc: Exception) -> None:
        """Called from the handler of the store's error: returns to let the message through, or raises."""
        self._log.warning("%s store unavailable (%s): %s", self._step, type(exc).__name__,
                          "denying" if self.deny else "letting through")
        if self.deny:
            raise ServiceUnavailable(f"the {self._limit_name} limit cannot be checked right now; try again shortly",
                                     headers={"Retry-After": "1"}) from None
