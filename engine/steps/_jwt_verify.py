"""The quick path of the authenticate step's JWT check: what ``jwt.decode`` does for the step's
options, with the work that depends only on the token's header done once per header.

A gateway signs every assertion with the same few keys, so the header segment (alg, kid, typ)
repeats from token to token: its decoding, the algorithm's lookup, the key's preparation and
checks (PyJWT's own ``prepare_key`` and ``check_key_length``) are kept per header segment,
together with a signature check made for that key (the padding, hash and scheme objects PyJWT's
algorithm makes on every call, made once).  What is left per token is two base64 decodings (as
PyJWT's, byte for byte), the signature primitive, one JSON parse and the claim checks, which are
compiled from the step's options into one generated function.

It only ever accepts what ``jwt.decode`` accepts: anything it is not sure of (an unusual header,
a float or a missing claim, a claim that fails) answers ``None``, and the step then asks PyJWT,
which gives the precise refusal.  A signature that does not verify is refused here, as PyJWT
would refuse it (the header and segments having passed the same decoding).
"""

from __future__ import annotations

import asyncio
import binascii
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import jwt
import jwt.algorithms
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

_HEADER_FIELDS = frozenset({"alg", "kid", "typ", "cty"})  # no crit, no b64: those go to PyJWT
_HEADERS_KEPT = 256
_ALGORITHMS = jwt.PyJWS()  # for get_algorithm_by_name: the algorithm objects PyJWT verifies with
# base64.urlsafe_b64decode as PyJWT's base64url_decode calls it: the same translation, the same
# padding, the same non-strict a2b_base64 (which skips characters outside the alphabet)
_URLSAFE = bytes.maketrans(b"-_", b"+/")
_PADDING = (b"", b"===", b"==", b"=")  # by length % 4
_a2b = binascii.a2b_base64
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_get_running_loop = asyncio.get_running_loop

# (signing input, signature) -> whether the signature verifies
SignatureCheck = Callable[[bytes, bytes], bool]
ClaimsCheck = Callable[[dict[str, Any], float], bool]


class BadSignature(Exception):
    """The token's signature does not verify against the key its header names."""


class Learn:
    """``QuickVerifier.prepare``'s answer for a header it knows nothing of yet (or of an old key set)."""


LEARN: Final = Learn()


class _Header:
    """What one header segment comes to: the key set generation it was learnt from, its check."""

    __slots__ = ("check", "generation")

    def __init__(self, generation: int, check: SignatureCheck | None) -> None:
        self.generation = generation
        self.check = check  # None: not for this path (PyJWT decides)


Prepared = tuple[SignatureCheck, bytes, bytes, bytes]  # check, signing input, signature, payload


class _Batch:
    """The signature checks asked for in one turn of an event loop, made together at the start of
    the next.

    A server's request runs a great deal of other code between two tokens; made in the request,
    a signature check finds the primitive's code and the key's tables gone from the CPU's caches
    and costs about twice what it costs made right after another (RS256 inside the patterns
    benchmark's server: about 100 µs against 48 µs under the same load).  The requests that reach
    the check in the same turn (a busy server's usual case) wait for the batch, which checks them
    one after another, reads each verified token's claims, and wakes each with its own answer.
    Every token waits, the first of a turn too: a batch then pays for one cold check instead of
    two (the first's in its request and the batch's own first), and a lone request pays only a
    future and one turn."""

    __slots__ = ("items", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: list[tuple[Prepared, asyncio.Future[dict[str, Any] | None]]] = []


class QuickVerifier:
    """``await verify(token)``: the claims when the token verifies, ``None`` to ask PyJWT; a bad
    signature raises ``BadSignature``."""

    def __init__(self, *, algorithms: list[str], issuer: str | None, audience: str | list[str] | None,
                 leeway: float, required: list[str], key_for: Callable[[str | None], Awaitable[Any]],
                 generation: Callable[[], int]) -> None:
        self._algorithms = frozenset(algorithms)
        self._key_for = key_for
        self._generation = generation
        self._claims_hold = compile_claims_check(issuer=issuer, audience=audience, leeway=leeway,
                                                 required=required)
        # header segment (bytes, as in the token) -> what it comes to
        self._headers: dict[bytes, _Header] = {}
        self._batch: _Batch | None = None

    def prepare(self, token: str) -> Prepared | Learn | None:
        """The token's segments decoded and the check its header comes to, ``LEARN`` for a header
        to learn first, ``None`` for PyJWT to decide."""
        data = token.encode()  # as PyJWT: the token's UTF-8, split on its dots
        signing_input, _, signature_segment = data.rpartition(b".")
        header_segment, dot, payload_segment = signing_input.partition(b".")
        if not dot or b"." in payload_segment:  # not three segments: PyJWT's refusal
            return None
        known = self._headers.get(header_segment)
        if known is None or known.generation != self._generation():
            return LEARN
        check = known.check
        if check is None:
            return None
        try:
            payload = _a2b(payload_segment.translate(_URLSAFE) + _PADDING[len(payload_segment) & 3])
            signature = _a2b(signature_segment.translate(_URLSAFE) + _PADDING[len(signature_segment) & 3])
        except binascii.Error:  # PyJWT says "invalid padding" / "invalid crypto padding"
            return None
        return check, signing_input, signature, payload

    def claims(self, payload: bytes) -> dict[str, Any] | None:
        """The claims of a payload whose signature verified, ``None`` for PyJWT to decide."""
        try:
            claims = _loads(payload)
        except _JSONDecodeError:
            return None
        if type(claims) is not dict or not self._claims_hold(claims, time.time()):
            return None
        return claims

    async def verify(self, token: str) -> dict[str, Any] | None:
        """The claims when the token verifies, ``None`` to ask PyJWT; a bad signature raises.  The
        tokens that reach it in one turn of the event loop are checked together, at the start of
        the next (see ``_Batch``)."""
        prepared = self.prepare(token)
        if prepared is LEARN:
            await self.learn(token.partition(".")[0])
            prepared = self.prepare(token)
        if type(prepared) is not tuple:
            return None
        loop = _get_running_loop()
        batch = self._batch
        if batch is None or batch.loop is not loop:  # the first of this turn: a new batch
            self._batch = batch = _Batch(loop)
            loop.call_soon(self._flush, batch)
        answer: asyncio.Future[dict[str, Any] | None] = loop.create_future()
        batch.items.append((prepared, answer))
        return await answer  # BadSignature raised here for a signature that does not verify

    def _flush(self, batch: _Batch) -> None:
        """The batch's signatures checked back to back (nothing else run between two, so that the
        primitive's code and the key stay in the CPU's caches), then each verified one's claims
        read and its request woken."""
        if self._batch is batch:
            self._batch = None
        checked: list[tuple[bool, bytes, asyncio.Future[dict[str, Any] | None]]] = []
        for (check, signing_input, signature, payload), answer in batch.items:
            if answer.done():  # its request went away (cancelled)
                continue
            try:
                checked.append((check(signing_input, signature), payload, answer))
            except Exception as exc:  # handed to the request it belongs to, as if checked there
                answer.set_exception(exc)
        claims_of = self.claims
        for verified, payload, answer in checked:
            if not verified:
                answer.set_exception(BadSignature())
                continue
            try:
                answer.set_result(claims_of(payload))
            except Exception as exc:  # (none expected: orjson's errors are caught) its request's, not the batch's
                answer.set_exception(exc)

    async def learn(self, header_text: str) -> None:
        """Learn what a header segment comes to (its key looked up, fetched when need be)."""
        if len(self._headers) >= _HEADERS_KEPT:
            self._headers.clear()  # a flood of odd headers: start again rather than grow
        generation = self._generation()
        header_segment = header_text.encode()
        try:
            header = orjson.loads(_a2b(header_segment.translate(_URLSAFE) + _PADDING[len(header_segment) & 3]))
        except ValueError:
            header = None
        check: SignatureCheck | None = None
        # alg a text before it is looked up: a list or an object there was unhashable, a 500
        if type(header) is dict and header.keys() <= _HEADER_FIELDS and type(header.get("alg")) is str \
                and header["alg"] in self._algorithms and isinstance(header.get("kid", ""), str):
            key = await self._key_for(header.get("kid"))
            if key is None:
                return  # not kept: the key set may learn the kid (a URL's early refresh)
            algorithm = _ALGORITHMS.get_algorithm_by_name(header["alg"])
            try:
                prepared = algorithm.prepare_key(key)
            except (jwt.InvalidKeyError, ValueError, TypeError):
                prepared = None
            if prepared is not None and not algorithm.check_key_length(prepared):
                check = signature_check(algorithm, prepared)
        self._headers[header_segment] = _Header(generation, check)


def signature_check(algorithm: Any, key: Any) -> SignatureCheck:
    """``algorithm.verify(message, key, signature)`` for PyJWT's algorithm objects, with what they
    make on every call (padding, hash, scheme, the public half of a private key) made once."""
    kind = type(algorithm)
    if kind is jwt.algorithms.RSAAlgorithm and isinstance(key, RSAPublicKey):
        rsa_verify = key.verify
        pkcs1, rsa_hash = padding.PKCS1v15(), algorithm.hash_alg()

        def rsa_check(message: bytes, signature: bytes) -> bool:
            try:
                rsa_verify(signature, message, pkcs1, rsa_hash)
            except InvalidSignature:
                return False
            return True

        return rsa_check
    if kind is jwt.algorithms.ECAlgorithm and isinstance(key, (ec.EllipticCurvePublicKey,
                                                               ec.EllipticCurvePrivateKey)):
        public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
        ec_verify = public.verify
        size = (key.curve.key_size + 7) // 8  # jwt.utils.raw_to_der_signature: r || s, each this long
        scheme = ec.ECDSA(algorithm.hash_alg())
        from_bytes = int.from_bytes

        def ec_check(message: bytes, signature: bytes) -> bool:
            if len(signature) != 2 * size:
                return False
            der = encode_dss_signature(from_bytes(signature[:size], "big"), from_bytes(signature[size:], "big"))
            try:
                ec_verify(der, message, scheme)
            except InvalidSignature:
                return False
            return True

        return ec_check
    if kind is jwt.algorithms.OKPAlgorithm and isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey,
                                                                ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        okp_public = key.public_key() if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) \
            else key
        okp_verify = okp_public.verify

        def okp_check(message: bytes, signature: bytes) -> bool:
            try:
                okp_verify(signature, message)
            except InvalidSignature:
                return False
            return True

        return okp_check

    def pyjwt_check(message: bytes, signature: bytes) -> bool:  # PS256 and the rest: PyJWT's own
        return bool(algorithm.verify(message, key, signature))

    return pyjwt_check



def compile_claims_check(*, issuer: str | None, audience: str | list[str] | None, leeway: float,
                         required: list[str]) -> ClaimsCheck:
    """``holds(claims, now)``: whether ``jwt.decode`` with these options accepts the claims, as
    one generated function of straight-line checks (False also where it is merely unsure: an exp
    that is a float, a missing claim; PyJWT then gives the refusal).

    Only names are bound into the code; the claim names are string literals (``repr``)."""
    lines = ["def holds(claims, now):", "    get = claims.get"]
    # exp: an int after now - leeway (when required, its presence is part of the same test)
    if "exp" in required:
        lines += ["    value = get('exp')",
                  "    if type(value) is not int or value <= now - LEEWAY: return False"]
    else:
        lines += ["    if 'exp' in claims:",
                  "        value = claims['exp']",
                  "        if type(value) is not int or value <= now - LEEWAY: return False"]
    for name in required:  # PyJWT's _validate_required_claims: present and not null
        if name != "exp":
            lines.append(f"    if get({name!r}) is None: return False")
    for name in ("iat", "nbf"):  # an int no later than now + leeway
        lines += [f"    if {name!r} in claims:",
                  f"        value = claims[{name!r}]",
                  "        if type(value) is not int or value > now + LEEWAY: return False"]
    if issuer is not None:
        lines.append("    if get('iss') != ISSUER: return False")
    if audience is not None:  # a text or a non-empty list of texts, one of them ours
        lines += ["    value = get('aud')",
                  "    if type(value) is str:",
                  "        if value not in AUDIENCE: return False",
                  "    elif type(value) is not list or not value or any(type(a) is not str for a in value) "
                  "or AUDIENCE.isdisjoint(value): return False"]
    for name in ("sub", "jti"):  # texts when present (PyJWT's _validate_sub and _validate_jti)
        lines.append(f"    if {name!r} in claims and type(claims[{name!r}]) is not str: return False")
    lines.append("    return True")
    names: dict[str, Any] = {
        "LEEWAY": float(leeway), "ISSUER": issuer,
        "AUDIENCE": frozenset([audience] if isinstance(audience, str) else audience or ()),
    }
    exec(compile("\n".join(lines), "<jwt claims check>", "exec"), names)
    holds: ClaimsCheck = names["holds"]
    return holds
