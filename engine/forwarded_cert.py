"""A client certificate forwarded by the gateway in a header, believed from trusted proxies only.

When a gateway terminates the client's TLS (nginx, Envoy, Istio, an API manager), the engine
never sees the client certificate; the gateway passes it on in a header.  ``settings.http.
proxy_headers.client_cert`` names that header and its format:

- ``xfcc``: Envoy's and Istio's ``X-Forwarded-Client-Cert``, elements ``By=...;Hash=...;
  Cert="<URL-encoded PEM>";Subject="...";URI=...;DNS=...`` separated by commas, one per proxy
  hop; the last element is the one the proxy in front of the engine added.  With ``Cert`` the
  flow sees every field of a direct client certificate; without it (Istio's default) the
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
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from typing import Any
from urllib.parse import unquote

from starlette.types import ASGIApp, Receive, Scope, Send

from engine.tls import TLS_KEY, peer_view

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
    if fields.get("cert"):  # an empty Cert="" is a proxy that had none to put there
        der = der_of_pem_header(fields["cert"])
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


class ForwardedClientCertMiddleware:
    """Puts the certificate a trusted proxy forwards in ``header`` where a direct one would be
    (``scope["extensions"]["tls"]``); see the module docstring."""

    def __init__(self, app: ASGIApp, trusted_hosts: list[str], header: str, form: str = "xfcc") -> None:
        from uvicorn.middleware.proxy_headers import _TrustedHosts

        self.app = app
        self.trusted = _TrustedHosts(trusted_hosts)
        self.header = header.lower().encode("latin-1")
        self.form = form

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            value = next((v for k, v in scope["headers"] if k == self.header), None)
            client = scope.get("client")
            peer = client[0] if client else None
            if peer in self.trusted:
                view = self._view(value)
                view["forwarded_by"] = peer
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
