"""OCSP for the facade's client certificates: is this partner's certificate still good?

``interlace run --tls-client-ca partners.pem --tls-ocsp hard-fail`` (or ``settings.tls.ocsp``)
asks the responder of each client certificate (the OCSP URL of its Authority Information
Access, or ``--tls-ocsp-responder``) whether it is revoked, with the certificate's issuer
taken from the client CA file (engine/tls_chain.py).  The request and the checks of the
answer are engine/ocsp_response.py.

When, and what it costs.  OpenSSL verifies the chain (and the CRLs) inside the handshake,
where nothing may wait for the network without blocking the event loop.  So the OCSP check
runs once the handshake is done, when the connection is made (engine/httpguard.py): a
certificate whose answer is cached is decided there, with one dictionary lookup and nothing
per request; one not cached has its connection's reading paused while one lookup per
certificate (however many connections wait for it) asks the responder, asynchronously, within
``--tls-ocsp-timeout`` seconds.  Answers are kept until their nextUpdate (five minutes without
one), never longer than ``MAX_KEPT`` (an hour: a responder that names a nextUpdate days ahead
would otherwise hide a revocation that long; Apache's SSLOCSPResponseMaxAge), in a cache of
at most ``CACHE_SIZE`` certificates; a failed lookup is remembered for ``FAILURE_KEPT``
seconds, so a responder that is down is not asked again by every connection.  The cache is the
worker's; the workers of one group (``--workers N``) also share what they believed through a
folder of the group's private folder (``share_answers_in``: one small file per certificate,
"good <until>"), which a worker reads before it asks, so the group asks once per certificate
and answer lifetime, not once per worker.  Failures are not shared.

What is refused, and how.  A CRL revocation fails the handshake; an OCSP one cannot (the
handshake is over when the answer comes), so every request of the connection is answered 403
problem+json, ``certificate-revoked``, and the connection is closed: the caller learns why, and
nothing of its request reaches a flow.  ``unknown`` (the responder does not know the
certificate) and a lookup that fails (no responder, unreachable, a timeout, an answer that is
not believable: forged, stale, replayed) go by the policy:

- ``hard-fail`` (the default, as Apache's and nginx's client-certificate OCSP checks): refused,
  403 ``certificate-status-unknown`` for unknown, 503 ``certificate-status-unavailable`` (with
  Retry-After) for a failed lookup, which the caller may retry; 403
  ``certificate-status-uncheckable`` for a certificate whose status can never be looked up (it
  names no responder and none is configured, or its issuer is not in the client CA file), where
  a retry would never help.
- ``soft-fail``: served; each such lookup is logged (a warning, once per lookup, not per
  connection) and counted in ``interlace_tls_ocsp_total{answer="unknown"|"failed"}``.

Every lookup is counted by its answer (good, revoked, unknown, failed); cached decisions are not.

The chain.  With ``--tls-ocsp-scope chain`` (the default, as nginx's ``ssl_ocsp on``) every
certificate of the client's chain below its top (the root, the trust anchor) is asked about:
the client's own, and each intermediate CA of the chain the client CA file gives
(engine/tls_chain.py), each of its issuer's responder.  Each certificate has its own entry in
the cache (the clients of one intermediate share its answer), its lookups run at once, and the
connection's verdict is the gravest: revoked, then unknown, uncheckable, unavailable.  A CA's
refusal is the same problem as the client's own, its detail naming the CA.  ``leaf`` asks
about the client's certificate alone (nginx's ``ssl_ocsp leaf``).
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from engine import metrics

if TYPE_CHECKING:
    import aiohttp
    from cryptography import x509

    from engine.ocsp_response import OcspAnswer
    from engine.tls import Peer

log = logging.getLogger("interlace.tls.ocsp")

POLICIES = ("hard-fail", "soft-fail")
DEFAULT_POLICY = "hard-fail"
SCOPES = ("chain", "leaf")
DEFAULT_SCOPE = "chain"  # as nginx's ``ssl_ocsp on`` (``ssl_ocsp leaf`` asks about the client's own alone)
DEFAULT_TIMEOUT = 5.0  # seconds: well inside the 10 s a new connection may stay silent (--first-byte-timeout)
CACHE_SIZE = 10_000  # certificates whose answers are kept
FAILURE_KEPT = 5.0  # seconds a failed lookup stands before the responder is asked again
MAX_KEPT = 3600.0  # seconds an answer is believed at most, whatever its nextUpdate
MAX_ANSWER_BYTES = 64 * 1024
RETRY_AFTER = 5


@dataclass(frozen=True)
class OcspSettings:
    policy: str = DEFAULT_POLICY  # hard-fail | soft-fail
    responder: str | None = None  # a URL asked instead of each certificate's own
    timeout: float = DEFAULT_TIMEOUT
    scope: str = DEFAULT_SCOPE  # chain: every certificate below the trust anchor; leaf: the client's alone


@dataclass(frozen=True)
class Refusal:
    """What the connection's requests are answered: an RFC 9457 problem."""

    status: int
    code: str
    title: str
    detail: str
    retry_after: int | None = None


REVOKED = Refusal(403, "certificate-revoked", "Client certificate revoked",
                  "the client certificate is revoked: its CA's OCSP responder says so")
UNKNOWN = Refusal(403, "certificate-status-unknown", "Client certificate status unknown",
                  "the client certificate's CA's OCSP responder does not know the certificate")
UNCHECKABLE = Refusal(403, "certificate-status-uncheckable", "Client certificate status cannot be checked",
                      "the client certificate's revocation status cannot be looked up (OCSP): it names no "
                      "responder or its issuer is not in the facade's client CA file")
UNAVAILABLE = Refusal(503, "certificate-status-unavailable", "Client certificate status unavailable",
                      "the client certificate's revocation status cannot be checked now (OCSP); retry shortly",
                      RETRY_AFTER)

Verdict = Refusal | None  # None: served
# which refusal a connection gets when its chain's certificates earn several: the one a retry cannot help first
_WEIGHT = {"certificate-revoked": 4, "certificate-status-unknown": 3, "certificate-status-uncheckable": 2,
           "certificate-status-unavailable": 1}


def _about_ca(refusal: Refusal, ca: str) -> Refusal:
    """The refusal a CA certificate of the client's chain earns: the same problem, its detail naming the CA."""
    details = {
        "certificate-revoked": f"a CA certificate of the client certificate's chain is revoked ({ca}): its "
                               "issuer's OCSP responder says so",
        "certificate-status-unknown": f"the OCSP responder of a CA of the client certificate's chain ({ca}) does "
                                      "not know it",
        "certificate-status-uncheckable": f"the revocation status of a CA of the client certificate's chain ({ca}) "
                                          "cannot be looked up (OCSP): it names no responder, or its issuer is "
                                          "not among the CAs the engine knows",
        "certificate-status-unavailable": f"the revocation status of a CA of the client certificate's chain ({ca}) "
                                          "cannot be checked now (OCSP); retry shortly",
    }
    return Refusal(refusal.status, refusal.code, refusal.title, details[refusal.code], refusal.retry_after)


def worst(verdicts: list[Verdict]) -> Verdict:
    """One connection's verdict from its certificates' (None when every one is served)."""
    found: Verdict = None
    for verdict in verdicts:
        if verdict is not None and (found is None or _WEIGHT[verdict.code] > _WEIGHT[found.code]):
            found = verdict
    return found


@dataclass(frozen=True)
class Asked:
    """One certificate to ask about: its DER (the cache's key), itself, and its issuer's certificate."""

    der: bytes
    certificate: x509.Certificate
    issuer: x509.Certificate | None  # None: not in the client CA file (the lookup cannot be made)
    ca: str | None = None  # the subject of a CA certificate of the chain; None for the client's own


def to_ask(peer: Peer) -> tuple[Asked, ...]:
    """The certificates of ``peer``'s chain OCSP may ask about: the client's own first, then each
    CA below the top of the chain when the top is a root (the trust anchor, which nothing above
    vouches for; a top that is not a root is asked about, and is uncheckable); the
    ``leaf`` scope asks about the first alone (``Peer.ocsp_asked`` keeps this, made once)."""
    issuer = peer.issuer
    own = Asked(peer.der, peer.certificate, issuer.certificate if issuer is not None else None)
    cas = peer.chain
    above = [Asked(ca.der, ca.certificate, issuer.certificate, ca.subject) for ca, issuer in itertools.pairwise(cas)]
    top = cas[-1] if cas else None
    if top is not None and top.certificate.issuer != top.certificate.subject:
        # not a root: its issuer is not known here (a forwarded Chain's intermediate above the CA
        # file's, or an intermediate the file lacks), so nothing vouches for it: uncheckable
        above.append(Asked(top.der, top.certificate, None, top.subject))
    return (own, *above)


def shown_url(url: str) -> str:
    """The URL as a log line or an error may show it: a password in it replaced by ***."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def ocsp_url(leaf: x509.Certificate) -> str | None:
    """The OCSP responder its Authority Information Access names (the first http one)."""
    from cryptography import x509
    from cryptography.x509.oid import AuthorityInformationAccessOID

    try:
        access = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for description in access:
        location = description.access_location
        if description.access_method == AuthorityInformationAccessOID.OCSP \
                and isinstance(location, x509.UniformResourceIdentifier) and location.value.startswith("http"):
            return str(location.value)
    return None


class OcspChecker:
    """The verdicts of one engine's client certificates, cached (see the module docstring)."""

    def __init__(self, settings: OcspSettings, cache_size: int = CACHE_SIZE, max_kept: float = MAX_KEPT) -> None:
        self.settings = settings
        self._max_kept = max_kept
        self._soft = settings.policy == "soft-fail"
        self._leaf_only = settings.scope == "leaf"
        self._cache: OrderedDict[bytes, tuple[Verdict, float]] = OrderedDict()  # DER -> verdict, until (epoch)
        self._cache_size = cache_size
        self._pending: dict[bytes, asyncio.Future[Verdict]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def verdict(self, peer: Peer) -> Verdict | asyncio.Future[Verdict]:
        """The connection's verdict now (every certificate's cached), or the future of the lookups it waits for."""
        certificates = peer.ocsp_asked  # a Peer is kept per context: its list is made once
        if self._leaf_only or len(certificates) == 1:
            return self._one(certificates[0])
        verdicts = [self._one(one) for one in certificates]
        waiting = [v for v in verdicts if isinstance(v, asyncio.Future)]
        if not waiting:  # every answer cached: the usual connection
            return worst(cast(list[Verdict], verdicts))
        combined = asyncio.get_running_loop().create_future()

        def settled(_done: asyncio.Future[Verdict]) -> None:
            if combined.done() or not all(w.done() for w in waiting):
                return
            combined.set_result(worst([v.result() if isinstance(v, asyncio.Future) else v for v in verdicts]))

        for future in waiting:
            future.add_done_callback(settled)
        return combined

    def _one(self, asked: Asked) -> Verdict | asyncio.Future[Verdict]:
        """One certificate's verdict: cached, or the future of its one lookup."""
        cached = self._cache.get(asked.der)
        if cached is not None:
            if cached[1] > time.time():
                return cached[0]
            del self._cache[asked.der]
        pending = self._pending.get(asked.der)
        if pending is None:
            loop = asyncio.get_running_loop()
            pending = self._pending[asked.der] = loop.create_future()
            task = loop.create_task(self._look_up(asked, pending))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return pending

    async def _look_up(self, asked: Asked, done: asyncio.Future[Verdict]) -> None:
        try:
            verdict, until = await self._ask(asked)
        except Exception:  # a verdict always comes: never leave a connection paused
            log.exception("OCSP lookup failed unexpectedly")
            verdict, until = (None if self._soft else UNAVAILABLE), time.time() + FAILURE_KEPT
        if verdict is not None and asked.ca is not None:
            verdict = _about_ca(verdict, asked.ca)
        self._pending.pop(asked.der, None)
        self._cache[asked.der] = (verdict, until)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)  # the oldest answer goes first
        if not done.done():
            done.set_result(verdict)

    async def _ask(self, asked: Asked) -> tuple[Verdict, float]:
        from engine.ocsp_response import OcspFailure, OcspUncheckable

        certificate = asked.certificate
        who = ("the client certificate " if asked.ca is None else "the client's CA certificate ") \
            + certificate.subject.rfc4514_string()
        shared = _shared_answer(asked.der)  # another worker of the group may have asked already
        if shared is not None:
            status, until = shared
        else:
            try:
                answer = await self._answer(asked)
            except OcspFailure as exc:
                metrics.TLS_OCSP.labels("failed").inc()
                if self._soft:
                    log.warning("OCSP: no answer for %s (%s); served (soft-fail)", who, exc)
                    return None, time.time() + FAILURE_KEPT
                log.warning("OCSP: no answer for %s (%s); refused (hard-fail)", who, exc)
                return (UNCHECKABLE if isinstance(exc, OcspUncheckable) else UNAVAILABLE), time.time() + FAILURE_KEPT
            metrics.TLS_OCSP.labels(answer.status).inc()
            status, until = answer.status, min(answer.until.timestamp(), time.time() + self._max_kept)
            _share_answer(asked.der, status, until)
        if status == "good":
            return None, until
        if status == "revoked":
            log.info("OCSP: %s (serial %X) is revoked; its connections are refused", who, certificate.serial_number)
            return REVOKED, until
        if self._soft:
            log.warning("OCSP: the responder does not know %s; served (soft-fail)", who)
            return None, until
        log.warning("OCSP: the responder does not know %s; refused (hard-fail)", who)
        return UNKNOWN, until

    async def _answer(self, asked: Asked) -> OcspAnswer:
        from engine.ocsp_response import OcspUncheckable, ocsp_request, read_response

        if asked.issuer is None:
            raise OcspUncheckable("its issuer is not in the client CA file (put the intermediate CAs there)")
        url = self.settings.responder or ocsp_url(asked.certificate)
        if url is None:
            raise OcspUncheckable("it names no OCSP responder (Authority Information Access) and --tls-ocsp-responder "
                                  "is not set")
        request, nonce = ocsp_request(asked.certificate, asked.issuer)
        der = await self._post(url, request)
        return read_response(der, asked.certificate, asked.issuer, nonce, datetime.datetime.now(datetime.UTC))

    async def _post(self, url: str, request: bytes) -> bytes:
        import aiohttp

        from engine.ocsp_response import OcspFailure

        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        shown = shown_url(url)  # the messages below are logged: never a password
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
                    url, data=request, headers={"Content-Type": "application/ocsp-request"}) as answer:
                if answer.status != 200:
                    raise OcspFailure(f"the responder {shown} answered HTTP {answer.status}")
                body = await _read_at_most(answer.content, MAX_ANSWER_BYTES + 1)
        except TimeoutError:
            raise OcspFailure(f"the responder {shown} did not answer within {self.settings.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise OcspFailure(f"the responder {shown} cannot be reached ({exc.__class__.__name__}: {exc})") from None
        if len(body) > MAX_ANSWER_BYTES:
            raise OcspFailure(f"the responder {shown} answered more than {MAX_ANSWER_BYTES} bytes")
        return body


# --- answers shared by the workers of one group (engine/workers.py) -------------------------------

_shared_folder: Path | None = None  # set in each worker of a group: where its answers meet the others'
_STATUSES = frozenset({"good", "revoked", "unknown"})


def share_answers_in(folder: Path) -> None:
    """Share believed answers with the other workers of the group through ``folder`` (inside the
    group's private folder, mode 0700: only the engine's user reads or writes it)."""
    global _shared_folder
    folder.mkdir(mode=0o700, exist_ok=True)
    _shared_folder = folder


def _shared_path(der: bytes) -> Path | None:
    import hashlib

    return _shared_folder / hashlib.sha256(der).hexdigest() if _shared_folder is not None else None


def _shared_answer(der: bytes) -> tuple[str, float] | None:
    """The answer another worker believed about this certificate, while it holds ("good 1767350000.5")."""
    path = _shared_path(der)
    if path is None:
        return None
    try:
        status, until_text = path.read_text().split(" ", 1)
        until = float(until_text)
    except (OSError, ValueError):  # none yet, or being replaced
        return None
    return (status, until) if status in _STATUSES and until > time.time() else None


def _share_answer(der: bytes, status: str, until: float) -> None:
    path = _shared_path(der)
    if path is None:
        return
    temporary = path.with_name(f"{path.name}.{os.getpid()}")
    try:
        temporary.write_text(f"{status} {until!r}")
        os.replace(temporary, path)  # whole or not at all for a worker reading it
    except OSError as exc:  # a full disk costs the other workers a lookup each, nothing more
        log.debug("OCSP: could not share an answer with the other workers: %s", exc)


async def _read_at_most(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to its end or ``limit`` bytes: one read returns only what has arrived so far
    (an answer in several TCP segments or chunks would be cut short)."""
    body = bytearray()
    while len(body) < limit:
        piece = await content.read(limit - len(body))
        if not piece:
            break
        body += piece
    return bytes(body)
