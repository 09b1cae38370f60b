"""What the claim_check and claim_retrieve steps share: the store the claims live in, the claim's
id and the errors a claim that cannot be honoured answers with.

A claim id is ``<random>.<expiry>``: 24 random URL-safe characters (unguessable: a claim is
read by whoever holds it) and the wall-clock second it expires.  The expiry in the id is what
tells an expired claim (410 ``claim-expired``) from one never checked in, already taken back
or pushed out of memory (404 ``unknown-claim``) once the store has forgotten it.

The stored record is the content type, a newline, and the bytes; in the store under
``claim:<id>``.  In memory the claims of every flow of this process share one store (so a claim
checked in by one flow is retrieved by another, and survives a reload), at most
``MEMORY_CLAIMS`` of them, least recently used out first; a redis or sql endpoint (``store``)
shares them between replicas and, with sql, across restarts.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from engine.compiler import CompileContext
from engine.errors import FlowError, NotFound, RequestInvalid, ServiceUnavailable
from engine.kvstore import KeyValueStore, MemoryStore
from engine.steps._stores import RECORDS_STORE_FIELD, store_for

log = logging.getLogger("interlace.claims")

MEMORY_CLAIMS = 1000
_MEMORY = MemoryStore(MEMORY_CLAIMS)
_ID = re.compile(r"^[A-Za-z0-9_-]{24}\.(\d{1,12})$")

STORE_FIELD: dict[str, Any] = {**RECORDS_STORE_FIELD, "description": RECORDS_STORE_FIELD["description"].replace(
    "default: this process's memory.", f"default: this process's memory (at most {MEMORY_CLAIMS} claims, shared "
                                       "by its flows). The check-in and the retrieval name the same store.")}


class UnknownClaim(NotFound):
    code = "unknown-claim"
    title = "Unknown claim"


class ClaimExpired(FlowError):
    status = 410
    code = "claim-expired"
    title = "Claim expired"


class MissingClaim(RequestInvalid):
    code = "claim-missing"
    title = "No claim given"


def claims_store(config: Any, ctx: CompileContext) -> KeyValueStore:
    """The store ``store`` names, or the process's shared memory of claims."""
    if config.get("store") is None:
        return _MEMORY
    return store_for(config, ctx)


def new_claim(ttl: float) -> str:
    return f"{secrets.token_urlsafe(18)}.{int(time.time() + ttl) + 1}"


def record(content_type: str | None, body: bytes) -> bytes:
    return (content_type or "").encode() + b"\n" + body


def unpack(stored: bytes) -> tuple[str | None, bytes]:
    content_type, _, body = stored.partition(b"\n")
    return content_type.decode() or None, body


def key_of(claim: Any) -> tuple[str, str]:
    """(the store key, the id as text) of a claim given by a message; refuses what is no claim."""
    if claim is None or claim == "":
        raise MissingClaim("no claim id was given (the claim expression gave nothing)")
    text = str(claim)
    if _ID.match(text) is None:
        raise UnknownClaim(f"{text[:80]!r} is not a claim id this engine gave out")
    return "claim:" + text, text


def missing(text: str) -> FlowError:
    """The answer for a claim the store does not hold: expired (410) or unknown (404)."""
    match = _ID.match(text)
    expiry = int(match.group(1)) if match is not None else 0
    if expiry <= time.time():
        when = datetime.fromtimestamp(expiry, UTC).isoformat(timespec="seconds")
        return ClaimExpired(f"claim {text[:80]!r} expired at {when}")
    return UnknownClaim(f"no claim {text[:80]!r} is held: never checked in here, taken back already, or pushed out "
                        "of memory")


def unavailable(step: str, exc: Exception) -> FlowError:
    """A store that cannot be reached: 503 with Retry-After (the claim may well be there)."""
    log.warning("%s: claim store unavailable (%s)", step, type(exc).__name__)
    return ServiceUnavailable("the claim store cannot be reached right now; try again shortly",
                              headers={"Retry-After": "1"})
