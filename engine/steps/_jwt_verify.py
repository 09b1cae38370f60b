"""The quick path of the authenticate step's JWT check: what ``jwt.decode`` does for the step's
options, with the work that depends only on the token's header done once per header.

A gateway signs every assertion with the same few keys, so the header segment (alg, kid, typ)
repeats from token to token: its decoding, the algorithm's lookup, the key's preparation and
checks (PyJWT's own ``prepare_key`` and ``check_key_length``) are kept per header segment.
What is left per token is three base64 decodings, the signature check (PyJWT's algorithm object
on cryptography) and the claim checks, compiled from the step's options.

It only ever accepts what ``jwt.decode`` accepts: anything it is not sure of (an unusual header,
a float or a missing claim, a claim that fails) answers ``None``, and the step then asks PyJWT,
which gives the precise refusal.  A signature that does not verify is refused here, as PyJWT
would refuse it (the header and segments having passed the same decoding).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
import orjson
from jwt.utils import base64url_decode

_HEADER_FIELDS = frozenset({"alg", "kid", "typ", "cty"})  # no crit, no b64: those go to PyJWT
_HEADERS_KEPT = 256
_UNSEEN: tuple[int, Any, Any] = (-1, None, None)
_ALGORITHMS = jwt.PyJWS()  # for get_algorithm_by_name: the algorithm objects PyJWT verifies with


class BadSignature(Exception):
    """The token's signature does not verify against the key its header names."""


class QuickVerifier:
    """``verify(token)``: the claims when the token verifies, ``None`` to ask PyJWT."""

    def __init__(self, *, algorithms: list[str], issuer: str | None, audience: str | list[str] | None,
                 leeway: float, required: list[str], key_for: Callable[[str | None], Awaitable[Any]],
                 generation: Callable[[], int]) -> None:
        self._algorithms = frozenset(algorithms)
        self._issuer = issuer
        self._audience = None if audience is None else frozenset([audience] if isinstance(audience, str)
                                                                 else audience)
        self._leeway = leeway
        self._required = tuple(required)
        self._key_for = key_for
        self._generation = generation
        # header segment -> (key set generation, algorithm object, prepared key), or None: not for this path
        self._headers: dict[str, tuple[int, Any, Any] | None] = {}

    async def verify(self, token: str) -> dict[str, Any] | None:
        if token.count(".") != 2:
            return None
        header_segment, payload_segment, signature_segment = token.split(".")
        known = self._headers.get(header_segment, _UNSEEN)
        if known is _UNSEEN or (known is not None and known[0] != self._generation()):
            known = await self._learn(header_segment)
        if known is None:
            return None
        _, algorithm, key = known
        try:
            payload_bytes = base64url_decode(payload_segment)
            signature = base64url_decode(signature_segment)
        except ValueError:  # binascii.Error: PyJWT says "invalid padding" / "invalid crypto padding"
            return None
        if not algorithm.verify(token[:len(header_segment) + 1 + len(payload_segment)].encode(), key, signature):
            raise BadSignature
        try:
            claims = orjson.loads(payload_bytes)
        except orjson.JSONDecodeError:
            return None
        if type(claims) is not dict or not self._claims_hold(claims):
            return None
        return claims

    async def _learn(self, header_segment: str) -> tuple[int, Any, Any] | None:
        if len(self._headers) >= _HEADERS_KEPT:
            self._headers.clear()  # a flood of odd headers: start again rather than grow
        generation = self._generation()
        try:
            header = orjson.loads(base64url_decode(header_segment))
        except ValueError:
            header = None
        entry: tuple[int, Any, Any] | None = None
        if type(header) is dict and header.keys() <= _HEADER_FIELDS and header.get("alg") in self._algorithms \
                and isinstance(header.get("kid", ""), str):
            key = await self._key_for(header.get("kid"))
            if key is None:
                return None  # not kept: the key set may learn the kid (a URL's early refresh)
            algorithm = _ALGORITHMS.get_algorithm_by_name(header["alg"])
            try:
                prepared = algorithm.prepare_key(key)
            except (jwt.InvalidKeyError, ValueError, TypeError):
                prepared = None
            if prepared is not None and not algorithm.check_key_length(prepared):
                entry = (generation, algorithm, prepared)
        self._headers[header_segment] = entry
        return entry

    def _claims_hold(self, claims: dict[str, Any]) -> bool:
        for name in self._required:
            if claims.get(name) is None:
                return False
        now = time.time()
        leeway = self._leeway
        for name in ("iat", "nbf"):
            if name in claims:
                value = claims[name]
                if type(value) is not int or value > now + leeway:
                    return False
        if "exp" in claims:
            exp = claims["exp"]
            if type(exp) is not int or exp <= now - leeway:
                return False
        if self._issuer is not None and claims.get("iss") != self._issuer:
            return False
        if self._audience is not None:
            aud = claims.get("aud")
            given = [aud] if type(aud) is str else aud
            if type(given) is not list or not given or any(type(a) is not str for a in given) \
                    or self._audience.isdisjoint(given):
                return False
        return all(type(claims.get(name, "")) is str for name in ("sub", "jti"))
