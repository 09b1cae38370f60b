"""Project settings: what a flow folder declares for the whole facade, without Python.

A flow file may hold a top-level ``settings:`` (one file per folder).  ``settings.http``
declares the common Starlette middleware: CORS, GZip, TrustedHost and the trusted proxy
headers (X-Forwarded-For / X-Forwarded-Proto).  ``SETTINGS_SCHEMA`` is the one declaration:
the loader validates with it, ``interlace schema`` prints it, ``interlace docs`` documents it,
and ``middleware()`` turns a validated value into Starlette ``Middleware`` entries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette._utils import parse_host_header
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import Receive, Scope, Send

from engine import jsonfast
from engine.units import parse_size

_STRINGS = {"type": "array", "items": {"type": "string"}}
_FILE_SETTING = {"type": "string", "minLength": 1}

HTTP_SETTINGS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "Middleware around every flow of the facade, outermost first: proxy_headers, "
                   "trusted_hosts, cors, gzip.",
    "properties": {
        "proxy_headers": {
            "type": "object", "additionalProperties": False, "required": ["trusted"],
            "description": "Take the client address (${client.address}, the throttle's policies) and scheme "
                           "from X-Forwarded-For and X-Forwarded-Proto, only when the connection comes from "
                           "one of these addresses (the gateway's).",
            "properties": {
                "trusted": {**_STRINGS, "minItems": 1,
                            "description": "Addresses or networks (10.0.0.0/8), or \"*\" for any."},
                "client_cert": {
                    "type": "object", "additionalProperties": False, "required": ["header"],
                    "description": "The client certificate a gateway that terminates TLS forwards in a header, "
                                   "believed from the trusted addresses only: flows see it as ${tls.*} and "
                                   "authenticate: {client_cert: ...} checks it as a direct one (403 when the "
                                   "header comes from another address).",
                    "properties": {
                        "header": {"type": "string", "minLength": 1,
                                   "description": "The header: X-Forwarded-Client-Cert (Envoy, Istio), "
                                                  "X-SSL-Client-Cert (nginx)..."},
                        "format": {"enum": ["xfcc", "pem"],
                                   "description": "xfcc (default): Envoy's By=...;Hash=...;Cert=\"...\";"
                                                  "Chain=\"...\";Subject=\"...\";URI=...; the last element counts. "
                                                  "pem: the certificate, URL-encoded PEM (nginx "
                                                  "$ssl_client_escaped_cert), one-line PEM or base64 DER."},
                        "ocsp": {"enum": ["hard-fail", "soft-fail"],
                                 "description": "Ask the OCSP responders whether the forwarded certificate (and "
                                                "with ocsp_scope chain its intermediate CAs) is revoked, as "
                                                "settings.tls.ocsp does for a direct one: a revoked one's requests "
                                                "get 403; hard-fail: a responder that cannot answer refuses them "
                                                "(503), soft-fail serves them and logs. Needs ca."},
                        "ca": {**_FILE_SETTING,
                               "description": "With ocsp: the PEM CA certificates that issue the forwarded "
                                              "certificates, up to their root (the file the proxy verifies them "
                                              "against, nginx's ssl_client_certificate); a forwarded XFCC Chain adds "
                                              "the intermediates it carries. Relative to this file's folder."},
                        "ocsp_scope": {"enum": ["chain", "leaf"],
                                       "description": "chain (the default): the certificate and every intermediate "
                                                      "CA of its chain; leaf: the certificate alone."},
                        "ocsp_responder": {"type": "string", "pattern": "^https?://",
                                           "description": "The OCSP responder URL asked instead of each "
                                                          "certificate's own (Authority Information Access)."},
                        "ocsp_timeout": {"type": "number", "exclusiveMinimum": 0,
                                         "description": "Seconds an OCSP lookup may take (default 5)."},
                    },
                },
            },
        },
        "trusted_hosts": {
            **_STRINGS, "minItems": 1,
            "description": "Host headers served (api.example.com, *.example.com); any other answers "
                           "400 problem+json.",
        },
        "cors": {
            "type": "object", "additionalProperties": False, "required": ["allow_origins"],
            "description": "Cross-origin requests from browsers: preflights answered, headers added.",
            "properties": {
                "allow_origins": {**_STRINGS, "description": "Origins allowed (https://app.example.com), or \"*\"."},
                "allow_methods": {**_STRINGS, "description": "Methods allowed (default GET)."},
                "allow_headers": {**_STRINGS, "description": "Request headers allowed."},
                "expose_headers": {**_STRINGS, "description": "Response headers a browser script may read."},
                "allow_credentials": {"type": "boolean", "description": "Allow cookies and credentials."},
                "max_age": {"type": "integer", "minimum": 0,
                            "description": "Seconds a browser may cache a preflight (default 600)."},
            },
        },
        "gzip": {
            "description": "Compress answers for clients that accept gzip: true, or the options.",
            "oneOf": [
                {"type": "boolean"},
                {"type": "object", "additionalProperties": False, "properties": {
                    "minimum_size": {"type": ["string", "integer"],
                                     "description": "Smallest answer compressed (default 500 bytes)."},
                    "level": {"type": "integer", "minimum": 1, "maximum": 9,
                              "description": "Compression level, 1 (fast) to 9 (small; the default)."}}},
            ],
        },
    },
}

_FILE = {"type": "string", "minLength": 1}

TLS_SETTINGS: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["cert"],
    "description": "The facade's TLS and mutual TLS, when interlace run has no --tls-* option (those win). Paths "
                   "are relative to this file's folder. A reload (or the reload_interval timer) applies new "
                   "files, new paths and new OCSP settings to new connections; switching TLS on or off, "
                   "client_cert, and turning crl on or off take a restart.",
    "properties": {
        "cert": {**_FILE, "description": "The facade's PEM certificate (chain) file (--tls-cert)."},
        "key": {**_FILE, "description": "Its PEM private key, when not in the same file (--tls-key)."},
        "client_ca": {**_FILE, "description": "Mutual TLS: the PEM CA certificate(s) that sign the clients' "
                                              "certificates (--tls-client-ca)."},
        "client_cert": {"enum": ["none", "optional", "required"],
                        "description": "required (the default with client_ca): no handshake without a client "
                                       "certificate; optional: flows decide (--tls-client-cert)."},
        "crl": {**_FILE, "description": "PEM CRL(s) of the client CAs, one for each; a revoked client certificate, "
                                        "or one below a revoked intermediate CA, fails the handshake (--tls-crl)."},
        "reload_interval": {"type": "number", "minimum": 0,
                            "description": "Seconds between checks of the files (default 10; 0: only on a "
                                           "reload) (--tls-reload-interval)."},
        "ocsp": {"enum": ["hard-fail", "soft-fail"],
                 "description": "Ask each client certificate's OCSP responder whether it is revoked (a revoked "
                                "one's requests get 403). hard-fail: a responder that cannot answer refuses the "
                                "client (503); soft-fail: serves it and logs (--tls-ocsp)."},
        "ocsp_responder": {"type": "string", "pattern": "^https?://",
                           "description": "The OCSP responder URL asked instead of each certificate's own "
                                          "(Authority Information Access) (--tls-ocsp-responder)."},
        "ocsp_timeout": {"type": "number", "exclusiveMinimum": 0,
                         "description": "Seconds an OCSP lookup may take (default 5) (--tls-ocsp-timeout)."},
        "ocsp_scope": {"enum": ["chain", "leaf"],
                       "description": "chain (the default, as nginx's ssl_ocsp on): the client certificate and every "
                                      "intermediate CA of its chain, each asked of its issuer's responder (a revoked "
                                      "intermediate is 403 as a revoked client is); leaf: the client certificate "
                                      "alone (--tls-ocsp-scope)."},
    },
}

SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "Settings of the whole project (one file of the folder may declare them).",
    "properties": {
        "http": HTTP_SETTINGS,
        "tls": TLS_SETTINGS,
        "policies": {
            "type": "array", "items": {"type": "object"},
            "description": "Steps run before the steps of every flow served over HTTP (authenticate, throttle, "
                           "validate...): what the whole facade requires. A flow opts out with policies: false.",
        },
    },
}

SETTINGS_EXAMPLE = """settings:
  http:
    proxy_headers:
      trusted: [10.0.0.0/8]
      client_cert: {header: X-Forwarded-Client-Cert, format: xfcc}
    trusted_hosts: [api.example.com, "*.internal.example.com"]
    cors:
      allow_origins: ["https://app.example.com"]
      allow_methods: [GET, POST]
      allow_headers: [content-type, authorization]
    gzip: {minimum_size: 1KiB}
"""


class ProblemTrustedHostMiddleware(TrustedHostMiddleware):
    """Starlette's TrustedHostMiddleware (its host patterns and checks), answering a refused
    Host with problem+json instead of plain text, and never redirecting."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allow_any or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        parsed = parse_host_header(Headers(scope=scope).get("host"))
        host = parsed.host.lower() if parsed is not None else None
        if host is not None and any(host == p or (p.startswith("*") and host.endswith(p[1:]))
                                    for p in self.allowed_hosts):
            await self.app(scope, receive, send)
            return
        body = jsonfast.dumps({"type": "https://interlace.dev/problems/host-not-allowed",
                               "title": "Host not allowed", "status": 400,
                               "detail": "this Host header is not served here", "instance": scope.get("path", "/")})
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/problem+json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def middleware(settings: dict[str, Any] | None, base: Path | None = None) -> list[Middleware]:
    """The Starlette middleware ``settings`` (validated against SETTINGS_SCHEMA) declare, outermost
    first; ``base``: the settings' folder, which their file paths are relative to."""
    http = (settings or {}).get("http") or {}
    out: list[Middleware] = []
    forwarded_cert = (http.get("proxy_headers") or {}).get("client_cert")
    if forwarded_cert:  # outside ProxyHeadersMiddleware: it must see the proxy's own address
        from engine.forwarded_cert import ForwardedClientCertMiddleware

        ocsp, ca = None, None
        if forwarded_cert.get("ocsp"):
            from engine.ocsp import DEFAULT_SCOPE, DEFAULT_TIMEOUT, OcspSettings

            timeout = forwarded_cert.get("ocsp_timeout")
            ocsp = OcspSettings(forwarded_cert["ocsp"], forwarded_cert.get("ocsp_responder"),
                                float(timeout) if timeout is not None else DEFAULT_TIMEOUT,
                                forwarded_cert.get("ocsp_scope", DEFAULT_SCOPE))
            ca = str((base or Path()) / forwarded_cert["ca"])
        out.append(Middleware(ForwardedClientCertMiddleware, trusted_hosts=list(http["proxy_headers"]["trusted"]),
                              header=forwarded_cert["header"], form=forwarded_cert.get("format", "xfcc"),
                              ocsp=ocsp, ca=ca))
    if http.get("proxy_headers"):
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        out.append(Middleware(ProxyHeadersMiddleware, trusted_hosts=list(http["proxy_headers"]["trusted"])))
    if http.get("trusted_hosts"):
        out.append(Middleware(ProblemTrustedHostMiddleware, allowed_hosts=list(http["trusted_hosts"])))
    cors = http.get("cors")
    if cors:
        out.append(Middleware(CORSMiddleware, allow_origins=list(cors["allow_origins"]),
                              allow_methods=list(cors.get("allow_methods", ["GET"])),
                              allow_headers=list(cors.get("allow_headers", [])),
                              expose_headers=list(cors.get("expose_headers", [])),
                              allow_credentials=bool(cors.get("allow_credentials", False)),
                              max_age=int(cors.get("max_age", 600))))
    gzip = http.get("gzip")
    if gzip:
        options = gzip if isinstance(gzip, dict) else {}
        out.append(Middleware(GZipMiddleware, minimum_size=parse_size(options.get("minimum_size", 500)),
                              compresslevel=int(options.get("level", 9))))
    return out


def check(settings: dict[str, Any] | None, base: Path | None = None) -> list[tuple[tuple[Any, ...], str]]:
    """What the schema cannot say: (path within settings, message) for each problem (``base``: the
    settings' folder, where the files they name are looked for)."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    http = (settings or {}).get("http") or {}
    forwarded = (http.get("proxy_headers") or {}).get("client_cert") or {}
    if isinstance(forwarded, dict):
        problems += [(("http", "proxy_headers", "client_cert", *path), message)
                     for path, message in _forwarded_ocsp_problems(forwarded, base)]
    for index, pattern in enumerate(http.get("trusted_hosts") or []):
        if "*" in pattern[1:] or (pattern.startswith("*") and pattern != "*" and not pattern.startswith("*.")):
            problems.append((("http", "trusted_hosts", index),
                             f"host pattern {pattern!r}: a wildcard is only allowed as '*.example.com' or '*'"))
    gzip = http.get("gzip")
    if isinstance(gzip, dict) and "minimum_size" in gzip:
        try:
            parse_size(gzip["minimum_size"])
        except ValueError as exc:
            problems.append((("http", "gzip", "minimum_size"), str(exc)))
    return problems


def _forwarded_ocsp_problems(forwarded: dict[str, Any], base: Path | None) -> list[tuple[tuple[str, ...], str]]:
    """The contradictions of proxy_headers.client_cert's OCSP keys, and a CA file that cannot serve."""
    if not forwarded.get("ocsp"):
        given = [key for key in ("ca", "ocsp_scope", "ocsp_responder", "ocsp_timeout") if key in forwarded]
        return [((key,), f"{key} needs ocsp (hard-fail or soft-fail): OCSP checks of the forwarded certificates "
                         "are off") for key in given]
    if not forwarded.get("ca"):
        return [(("ocsp",), "ocsp needs ca: the PEM CA certificates that issue the forwarded certificates (an OCSP "
                            "request names a certificate by its issuer)")]
    if base is None:
        return []
    path = base / str(forwarded["ca"])
    try:
        text = path.read_bytes()
    except OSError:
        return [(("ca",), f"ca {forwarded['ca']}: no such file (relative to the settings' folder)")]
    if b"-----BEGIN CERTIFICATE-----" not in text:
        return [(("ca",), f"ca {forwarded['ca']}: no PEM certificate in the file (-----BEGIN CERTIFICATE-----)")]
    from cryptography import x509

    try:
        x509.load_pem_x509_certificates(text)
    except ValueError as exc:
        return [(("ca",), f"ca {forwarded['ca']}: a certificate that does not parse ({exc})")]
    return []
