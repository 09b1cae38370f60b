"""A flow-test request that presents a client certificate, as a mutual-TLS connection would.

``request: {path: /whoami, client_cert: partner-a.crt}`` (a PEM file beside the suite) or
``client_cert: {subject: "CN=partner-a,O=Example Partners", sans: [...]}`` (the fields alone)
puts the certificate where the facade's TLS listener puts a verified one, so
``authenticate: {client_cert: ...}`` and ``${tls.*}`` see it.  The handshake's own checks (the
client CA, the CRL) are not run here: the suite tests the flow, not the TLS files.  The
designer's try-it sends its requests through the same function.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from engine.tls import TLS_KEY, peer_view

_TEXT = {"type": "string"}

CLIENT_CERT_REQUEST: dict[str, Any] = {
    "description": "Present a client certificate, as a mutual-TLS connection whose handshake verified it: a "
                   "PEM certificate file (relative to the suite), or the certificate's fields.",
    "oneOf": [
        {"type": "string", "minLength": 1, "description": "A PEM certificate file, relative to the suite."},
        {"type": "object", "additionalProperties": False, "minProperties": 1, "properties": {
            "subject": {**_TEXT, "description": "RFC 4514: CN=partner-a,O=Example Partners"},
            "issuer": {**_TEXT, "description": "RFC 4514, as subject."},
            "serial": {**_TEXT, "description": "Hex."},
            "sans": {"type": "array", "items": _TEXT, "description": "DNS names, URIs, e-mails, IPs."},
            "fingerprint": {**_TEXT, "description": "SHA-256, hex (colons and case ignored)."},
            "not_before": _TEXT, "not_after": _TEXT,
        }},
    ],
}


class ClientCertError(ValueError):
    """A client_cert of a request that cannot be presented (a missing file, a name that does not parse)."""


def _name(text: str, key: str) -> dict[str, Any]:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        name = x509.Name.from_rfc4514_string(text)
    except ValueError:
        raise ClientCertError(f"client_cert {key} {text!r} is not an RFC 4514 name (CN=a,O=b)") from None
    common = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return {key: name.rfc4514_string(), f"{key}_fields": {a.rfc4514_attribute_name: str(a.value) for a in name},
            **({"common_name": str(common[0].value) if common else None} if key == "subject" else {})}


def client_cert_view(spec: str | dict[str, Any], folder: Path) -> dict[str, Any]:
    """``${tls}`` of a request presenting ``spec`` (a PEM file under ``folder``, or fields)."""
    if isinstance(spec, str):
        path = folder / spec
        try:
            view = peer_view(ssl.PEM_cert_to_DER_cert(path.read_text()))
        except OSError:
            raise ClientCertError(f"client_cert {spec}: no such file beside the suite") from None
        except ValueError:
            raise ClientCertError(f"client_cert {spec}: not a PEM certificate") from None
    else:
        view = peer_view(None)
        for key in ("subject", "issuer"):
            if spec.get(key):
                view.update(_name(str(spec[key]), key))
        view["sans"] = [str(s) for s in spec.get("sans") or []]
        if spec.get("fingerprint"):
            view["fingerprint"] = str(spec["fingerprint"]).replace(":", "").strip().lower()
        if spec.get("serial"):
            view["serial"] = str(spec["serial"]).upper()
        for key in ("not_before", "not_after"):
            view[key] = spec.get(key)
        if view["subject"] is not None:  # ${tls.chain}: the certificate alone, as from a PEM file
            view["chain"], view["chain_fields"] = [view["subject"]], [view["subject_fields"]]
    return {**view, "version": "TLSv1.3", "cipher": None, "source": "connection", "forwarded_by": None}


def presenting(app: ASGIApp, view: dict[str, Any] | None) -> ASGIApp:
    """``app`` whose every request comes with the client certificate ``view`` (``app`` itself for None)."""
    if view is None:
        return app
    extension = {"view": view}

    async def with_certificate(scope: Scope, receive: Receive, send: Send) -> None:
        scope = {**scope, "extensions": {**scope.get("extensions", {}), TLS_KEY: extension}}
        await app(scope, receive, send)

    return with_certificate
