"""A client certificate forwarded by the gateway in a header, believed from trusted proxies only.

When a gateway terminates the client's TLS (nginx, Envoy, Istio, an API manager), the engine
never sees the client certificate; the gateway passes it on in a header.  ``settings.http.
proxy_headers.client_cert`` names that header and its format:

- ``xfcc``: Envoy's and Istio's ``X-Forwarded-Client-Cert``, elements ``By=...;Hash=...;
  Cert="<URL-encoded PEM>";Subject="...";URI=...;DNS=...`` separated by commas, one per proxy
  hop; the last element is the one the proxy in front of the engine added.  With ``Cert`` (or a
  ``Chain``, whose first certificate is the client's) the flow sees every field of a direct
  client certificate; without it (Istio's default) the
  subject, the URI and DNS SANs and the SHA-256 ``Hash``.
- ``pem``: the certificate itself: URL-encoded PEM (nginx's ``$ssl_client_escaped_cert``),
  PEM on one line, or base64 DER (haproxy's ``ssl_c_der,base64``).

The header is believed only on a connection from an address of ``proxy_headers.trusted`` (the
same list X-Forwarded-For is believed from).  From any other address it makes the request's
certificate "untrusted": ``authenticate: {client_cert: ...}`` answers 403, so a client cannot
claim a certificate by writing the header itself.  A trusted proxy that sends no header had no
client certificate (401 where one is required); one whose header does not parse is 401 too.
The request's ``${tls}`` then describes the forwarded certificate, with ``source: forwarded``
and ``forwarded_by`` the proxy's address.

OCSP (``proxy_headers.client_cert.ocsp: hard-fail|soft-fail`` with ``ca``, the CA file the
proxy verifies against): the forwarded certificate, and with ``ocsp_scope: chain`` (the
default) the intermediate CAs above it, are asked about as a direct client's are
(engine/ocsp.py), the issuers taken from ``ca`` and from the header's XFCC ``Chain`` when it
carries one.  A header is read into its certificates once (``_FORWARDED_KEPT`` of them are
kept), and its verdict comes from the checker's cache: per request, a dictionary lookup for
the header and the cached verdict.  A refused one is answered with the same problem+json
(403 ``certificate-revoked``...) and nothing reaches the flow; the connection stays open, as
it is the proxy's and carries other clients' requests.  Under hard-fail a header with no
certificate in it (an XFCC element with only Subject and Hash) cannot be asked about: 403
``certificate-status-uncheckable``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import json
import logging
import re
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote

from starlette.types import ASGIApp, Receive, Scope, Send

from engine import metrics
from engine.errors import PROBLEM_BASE
from engine.tls import TLS_KEY, Peer, peer_view

if TYPE_CHECKING:
    from engine.ocsp import OcspChecker, OcspSettings, Refusal

log = logging.getLogger("interlace.tls.ocsp")
_FORWARDED_KEPT = 1024  # forwarded headers kept read into their certificates, per engine

FORMATS = ("xfcc", "pem")
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.S)


class ForwardedCertError(ValueError):
    """A forwarded certificate header that does not parse, said without echoing it."""


def _split(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside double quotes (XFCC values quote commas and semicolons)."""
    parts, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and quoted:
            current.append(char)
            escaped = True
        elif char == '"':
            quoted = not quoted
            current.append(char)
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise ForwardedCertError("an unterminated quoted value")
    parts.append("".join(current))
    return parts


def _unquote_value(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def xfcc_pairs(header: str) -> list[tuple[str, str]]:
    """The key=value pairs of the last element of an X-Forwarded-Client-Cert header."""
    elements = [e for e in _split(header, ",") if e.strip()]
    if not elements:
        raise ForwardedCertError("an empty header")
    pairs: list[tuple[str, str]] = []
    for pair in _split(elements[-1], ";"):
        if not pair.strip():
            continue
        key, sep, value = pair.partition("=")
        if not sep:
            raise ForwardedCertError(f"a part without '=' ({key.strip()[:20]!r})")
        pairs.append((key.strip().lower(), _unquote_value(value)))
    return pairs


def der_of_pem_header(value: str) -> bytes:
    """The DER of the certificate in a ``pem`` header (URL-encoded or one-line PEM, or base64 DER)."""
    text = unquote(value.strip())
    found = _PEM.search(text)
    body = found.group(1) if found else text
    try:
        der = base64.b64decode("".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ForwardedCertError("neither PEM nor base64 DER") from None
    if not der.startswith(b"\x30"):  # a DER certificate is a SEQUENCE
        raise ForwardedCertError("not a DER certificate")
    return der


def _view_of_der(der: bytes) -> dict[str, Any]:
    try:
        return peer_view(der)
    except ValueError:
        raise ForwardedCertError("a certificate that does not parse") from None


@functools.lru_cache(maxsize=1024)  # a gateway's clients come back with the same certificate
def forwarded_view(header: str, form: str) -> dict[str, Any]:
    """``${tls}`` fields of a forwarded certificate header (without ``source`` and ``forwarded_by``)."""
    if form == "pem":
        return _view_of_der(der_of_pem_header(header))
    values = xfcc_pairs(header)
    fields = dict(values)
    # an empty Cert="" is a proxy that had none to put there; a Chain alone starts with the certificate
    cert = fields.get("cert") or next((m.group(0) for m in _PEM.finditer(unquote(fields.get("chain", "")))), "")
    if cert:
        der = der_of_pem_header(cert)
        view = _view_of_der(der)
        claimed = fields.get("hash", "").lower()
        if claimed and claimed != hashlib.sha256(der).hexdigest():
            raise ForwardedCertError("its Hash is not the SHA-256 of its Cert")
        return view
    view = dict(peer_view(None))
    if fields.get("subject"):
        view.update(_subject(fields["subject"]))
    view["sans"] = [v for k, v in values if k in ("uri", "dns") and v]
    view["fingerprint"] = fields.get("hash", "").lower() or None
    if view["subject"] is not None:  # ${tls.chain}: the certificate alone, as with a Cert
        view["chain"], view["chain_fields"] = [view["subject"]], [view["subject_fields"]]
    if view["subject"] is None and not view["sans"] and view["fingerprint"] is None:
        raise ForwardedCertError("an element with neither Cert, Subject, URI, DNS nor Hash")
    return view


def _subject(text: str) -> dict[str, Any]:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        name = x509.Name.from_rfc4514_string(text)
    except ValueError:
        raise ForwardedCertError("a Subject that is not an RFC 4514 name") from None
    common = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return {"subject": name.rfc4514_string(), "common_name": str(common[0].value) if common else None,
            "subject_fields": {a.rfc4514_attribute_name: str(a.value) for a in name}}


def forwarded_certificates(header: str, form: str) -> tuple[bytes, list[bytes]] | None:
    """The DER of the certificate a header forwards, and of the other certificates of its XFCC
    ``Chain`` (the intermediates the proxy verified); None when it carries no certificate."""
    if form == "pem":
        return der_of_pem_header(header), []
    fields = dict(xfcc_pairs(header))
    chain = [der_of_pem_header(match.group(0)) for match in _PEM.finditer(unquote(fields.get("chain", "")))]
    if fields.get("cert"):
        leaf = der_of_pem_header(fields["cert"])
    elif chain:
        leaf = chain[0]
    else:
        return None
    return leaf, [der for der in chain if der != leaf]


# one checker per OCSP settings and CA file, kept across reloads (the middleware is rebuilt on each):
# a reload that changes neither keeps every answer
_CHECKERS: dict[tuple[OcspSettings, str], OcspChecker] = {}


def _checker(settings: OcspSettings, ca_pem: bytes) -> OcspChecker:
    from engine.ocsp import OcspChecker

    key = (settings, hashlib.sha256(ca_pem).hexdigest())
    checker = _CHECKERS.get(key)
    if checker is None:
        if len(_CHECKERS) >= 8:
            _CHECKERS.clear()
        checker = _CHECKERS[key] = OcspChecker(settings)
    return checker


class ForwardedOcsp:
    """The OCSP verdicts of forwarded certificates (see the module docstring)."""

    def __init__(self, settings: OcspSettings, ca_file: str) -> None:
        from engine.tls_chain import ClientCAs

        self.settings = settings
        self._pem = Path(ca_file).read_bytes()
        self._cas = ClientCAs(self._pem)
        self.checker = _checker(settings, self._pem)
        # the header's bytes -> its certificates (None: none); nothing decoded or parsed per request
        self._peers: OrderedDict[bytes, Peer | None] = OrderedDict()

    def peer(self, header: bytes, form: str) -> Peer | None:
        """The forwarded certificate with its chain over ``ca`` (and the header's Chain), read once per header."""
        found = self._peers.get(header, _UNREAD)
        if found is not _UNREAD:
            return cast(Peer | None, found)
        try:
            peer = self._read(header.decode("latin-1"), form)
        except ValueError:  # a Chain that does not parse: nothing believable to ask about
            peer = None
        if len(self._peers) >= _FORWARDED_KEPT:
            self._peers.popitem(last=False)
        self._peers[header] = peer
        return peer

    def _read(self, header: str, form: str) -> Peer | None:
        found = forwarded_certificates(header, form)
        peer = None
        if found is not None:
            leaf, intermediates = found
            cas = self._cas
            if intermediates:  # the proxy verified them: they may name the issuers the file lacks
                import ssl

                from engine.tls_chain import ClientCAs

                cas = ClientCAs(self._pem + b"".join(ssl.DER_cert_to_PEM_cert(der).encode() for der in intermediates))
            peer = Peer.of(leaf, cas)
        return peer

    def refusal(self, header: bytes, form: str) -> Refusal | asyncio.Future[Refusal | None] | None:
        """What the request is refused with (None: served), or the future of the lookups it waits for."""
        peer = self.peer(header, form)
        if peer is None:  # Subject and Hash only: nothing to ask about
            from engine.ocsp import UNCHECKABLE

            return None if self.settings.policy == "soft-fail" else UNCHECKABLE
        return self.checker.verdict(peer)


_UNREAD = object()  # a header not read yet (None: read, and it holds no certificate)


async def _refuse(send: Send, refusal: Refusal) -> None:
    body = json.dumps({"type": PROBLEM_BASE + refusal.code, "title": refusal.title, "status": refusal.status,
                       "detail": refusal.detail}).encode()
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
    if refusal.retry_after is not None:
        headers.append((b"retry-after", str(refusal.retry_after).encode()))
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ForwardedClientCertMiddleware:
    """Puts the certificate a trusted proxy forwards in ``header`` where a direct one would be
    (``scope["extensions"]["tls"]``), and with ``ocsp`` refuses a revoked one; see the module docstring."""

    def __init__(self, app: ASGIApp, trusted_hosts: list[str], header: str, form: str = "xfcc",
                 ocsp: OcspSettings | None = None, ca: str | None = None) -> None:
        from uvicorn.middleware.proxy_headers import _TrustedHosts

        self.app = app
        self.trusted = _TrustedHosts(trusted_hosts)
        self.header = header.lower().encode("latin-1")
        self.form = form
        self.ocsp = ForwardedOcsp(ocsp, ca) if ocsp is not None and ca is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            value = next((v for k, v in scope["headers"] if k == self.header), None)
            client = scope.get("client")
            peer = client[0] if client else None
            if peer in self.trusted:
                view = self._view(value)
                view["forwarded_by"] = peer
                if self.ocsp is not None and value is not None and "forwarded" not in view:
                    refusal = self.ocsp.refusal(value, self.form)
                    if isinstance(refusal, asyncio.Future):
                        # shielded: a request whose client leaves must not cancel the lookup others wait for
                        refusal = await asyncio.shield(refusal)
                    if refusal is not None:
                        metrics.HTTP_REFUSED.labels("facade", refusal.code).inc()
                        await _refuse(send, refusal)
                        return
                scope["extensions"] = {**scope.get("extensions", {}), TLS_KEY: {"view": view}}
            elif value is not None:
                view = dict(peer_view(None), source="forwarded", forwarded="untrusted", forwarded_by=peer,
                            version=None, cipher=None)
                scope["extensions"] = {**scope.get("extensions", {}), TLS_KEY: {"view": view}}
        await self.app(scope, receive, send)

    def _view(self, value: bytes | None) -> dict[str, Any]:
        base: dict[str, Any] = {"source": "forwarded", "version": None, "cipher": None}
        if value is None:
            return {**peer_view(None), **base}
        try:
            return {**forwarded_view(value.decode("latin-1"), self.form), **base}
        except ForwardedCertError as exc:
            return {**peer_view(None), **base, "forwarded": "invalid", "forwarded_error": str(exc)}
