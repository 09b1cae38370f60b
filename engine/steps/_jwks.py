"""The gateway's signing keys: a JWKS document from a file in the flow folder or from a URL,
kept fresh in the background.

A file is read when the flows load (a reload reads it again).  A URL is fetched on first use and
then every ``refresh``; a token naming a key id the set does not have triggers one early
fetch (at most every ``min_refresh``), so a gateway's key rotation is picked up at once.  A fetch
that fails keeps the keys already known and is logged without the URL's userinfo.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt

log = logging.getLogger("interlace.auth")


class JwksError(ValueError):
    """A JWKS document that cannot be used."""


def parse_jwks(document: Any, where: str) -> dict[str | None, Any]:
    """Key id -> public key object, for every usable key of a JWKS (or a single JWK)."""
    keys = document.get("keys") if isinstance(document, dict) and "keys" in document else [document]
    if not isinstance(keys, list) or not keys:
        raise JwksError(f"{where}: a JWKS is {{\"keys\": [...]}} with at least one key")
    found: dict[str | None, Any] = {}
    for index, entry in enumerate(keys):
        if not isinstance(entry, dict):
            raise JwksError(f"{where}: key {index} is not an object")
        if entry.get("use", "sig") != "sig":
            continue
        try:
            found[entry.get("kid")] = jwt.PyJWK(entry).key
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
            raise JwksError(f"{where}: key {entry.get('kid', index)!r} cannot be used: {exc}") from exc
    if not found:
        raise JwksError(f"{where}: no signing key (use: sig) in the set")
    return found


def _display(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"


class KeySet:
    """The keys a JWT may be signed with; ``key_for(kid)`` finds one, fetching when needed."""

    def __init__(self, *, file: Path | None = None, url: str | None = None, refresh: float = 600.0,
                 min_refresh: float = 30.0) -> None:
        self.url = url
        self.refresh = refresh
        self.min_refresh = min_refresh
        self._keys: dict[str | None, Any] = {}
        self.generation = 0  # counts the key sets loaded, so what was derived from a key can tell it is old
        self._fetched = 0.0
        self._task: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None
        if file is not None:
            try:
                document = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise JwksError(f"{file.name}: not a JSON document ({exc})") from exc
            self._keys = parse_jwks(document, file.name)
            self.generation += 1

    async def key_for(self, kid: str | None) -> Any:
        if self.url is not None:
            await self._ensure_fresh(kid)
        if kid in self._keys:
            return self._keys[kid]
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return None

    async def _ensure_fresh(self, kid: str | None) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        stale = not self._keys or (kid is not None and kid not in self._keys and
                                   time.monotonic() - self._fetched >= self.min_refresh)
        if stale:
            async with self._lock:
                if not self._keys or (kid is not None and kid not in self._keys and
                                      time.monotonic() - self._fetched >= self.min_refresh):
                    await self._fetch()
        if self._task is None:
            self._task = asyncio.ensure_future(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            await self._fetch()

    async def _fetch(self) -> None:
        assert self.url is not None
        import httpx

        self._fetched = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                answer = await client.get(self.url, headers={"accept": "application/json"})
                answer.raise_for_status()
                self._keys = parse_jwks(answer.json(), _display(self.url))
                self.generation += 1
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("JWKS %s could not be refreshed (%s); keeping the %d keys known",
                        _display(self.url), type(exc).__name__, len(self._keys))

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
