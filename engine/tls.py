"""TLS on the facade port, and mutual TLS: who the client certificate says the caller is.

``interlace run --tls-cert server.pem --tls-key server.key --tls-client-ca partners-ca.pem``
serves the facade over TLS (uvicorn's listener with the context engine/tls_live.py keeps current
with the files) and asks every client for a certificate
signed by that CA: ``--tls-client-cert required`` (the default with a client CA: the handshake
fails without one) or ``optional`` (a connection without one is served, and a flow that needs
one answers 401 problem+json from its ``authenticate: {client_cert: ...}`` step).  Each option
has its environment variable (``INTERLACE_TLS_CERT`` ...), which the Kubernetes manifests set
to the files of a mounted Secret.  ``--tls-crl`` adds CRL checks of the client certificates,
``--tls-ocsp`` OCSP checks (engine/ocsp.py).

A connection's peer certificate is read once, when the handshake ends
(``engine/httpguard.py``), into the plain view ``peer_view`` returns; every request of that
connection carries it in ``scope["extensions"]["tls"]`` (the ASGI TLS extension's keys, plus
``"view"``) and flows read it as ``${tls.subject}``, ``${tls.common_name}``, ``${tls.issuer}``,
``${tls.serial}``, ``${tls.sans}``, ``${tls.fingerprint}`` (SHA-256, lowercase hex),
``${tls.not_after}``, ``${tls.version}`` and ``${tls.cipher}``, and ``${tls.chain}``: the
subjects of the client's certificate and of the client CAs above it, rebuilt over the client CA
file (engine/tls_chain.py; ``${tls.chain_fields}`` the same as objects).  ``${tls}`` is null on
a plain-HTTP request; its certificate fields are null on a TLS connection without a client
certificate.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import ssl
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from engine.ocsp import Asked, OcspChecker, OcspSettings
    from engine.tls_chain import CA, ClientCAs

CLIENT_CERT_MODES = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
TLS_KEY = "tls"  # scope["extensions"] key, as the ASGI TLS extension names it
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


class FacadeContext(ssl.SSLContext):
    """The facade's server context, with the client CA file it verifies against compiled
    (engine/tls_live.py builds it; a connection's ``ssl_object.context`` is the one its handshake
    used, so a rotated CA file and the chains rebuilt over it go together)."""

    client_cas: ClientCAs | None = None
    ocsp: OcspChecker | None = None  # asks about each client certificate once its handshake is done

    def peer(self, der: bytes) -> tuple[Peer, dict[str, Any], list[str]]:
        """A client certificate read, with its ``${tls.*}`` view and PEM chain, kept for the next
        connection that presents it (a gateway reconnects with the same certificate: reading one
        costs ~400,000 instructions, finding it ~1,000).  Per context: a rotated CA file reads anew."""
        cache: dict[bytes, tuple[Peer, dict[str, Any], list[str]]] = self.__dict__.setdefault("_peers", {})
        found = cache.get(der)
        if found is None:
            peer = Peer.of(der, self.client_cas)
            pems = [ssl.DER_cert_to_PEM_cert(der), *(ca.pem for ca in peer.chain)]
            found = (peer, peer.view(), pems)
            if len(cache) >= _PEERS_KEPT:
                del cache[next(iter(cache))]  # the oldest first
            cache[der] = found
        return found


_PEERS_KEPT = 1024  # client certificates a context keeps read


class TlsConfigError(Exception):
    """TLS options that cannot serve (a file missing, a key that does not match), said in one line."""


DEFAULT_RELOAD_INTERVAL = 10.0  # seconds between checks of the TLS files (engine/tls_live.py)
_KEYS = ("cert", "key", "client_ca", "client_cert", "crl", "reload_interval", "ocsp", "ocsp_responder", "ocsp_timeout",
         "ocsp_scope")
# how an error names each setting: the command-line option, or the key of the flow folder's settings
OPTION_NAMES = {key: "--tls-" + key.replace("_", "-") for key in _KEYS}
SETTING_NAMES = {key: f"settings.tls.{key}" for key in _KEYS}


@dataclass(frozen=True)
class FacadeTls:
    """The facade's TLS: its certificate and key, the CA its clients' certificates must chain to,
    and the CRL that revokes some of them."""

    certfile: str
    keyfile: str | None = None
    client_ca: str | None = None
    client_cert: str = "none"  # none | optional | required
    crl: str | None = None
    reload_interval: float = DEFAULT_RELOAD_INTERVAL
    ocsp: OcspSettings | None = None  # OCSP checks of the client certificates (engine/ocsp.py)
    names: dict[str, str] = field(default_factory=lambda: OPTION_NAMES, compare=False)

    @classmethod
    def from_options(cls, cert: str | None, key: str | None, client_ca: str | None,
                     client_cert: str | None, crl: str | None = None,
                     reload_interval: float = DEFAULT_RELOAD_INTERVAL,
                     names: dict[str, str] = OPTION_NAMES, ocsp: str | None = None,
                     ocsp_responder: str | None = None, ocsp_timeout: float | None = None,
                     ocsp_scope: str | None = None) -> FacadeTls | None:
        """The TLS the command-line options (or ``names``: the settings) ask for, or None for plain
        HTTP; a contradiction raises."""
        n = names
        mode = client_cert or ("required" if client_ca else "none")
        if mode not in CLIENT_CERT_MODES:
            raise TlsConfigError(f"{n['client_cert']} {mode!r}: choose one of {', '.join(CLIENT_CERT_MODES)}")
        checks = _ocsp_settings(n, mode, client_ca, ocsp, ocsp_responder, ocsp_timeout, ocsp_scope)
        if not cert:
            if key or client_ca or crl:
                raise TlsConfigError(f"{n['key']}, {n['client_ca']} and {n['crl']} need {n['cert']} (the facade's "
                                     "certificate)")
            if client_cert and mode != "none":
                raise TlsConfigError(f"{n['client_cert']} {mode} needs {n['cert']} and {n['client_ca']}")
            return None
        if mode != "none" and not client_ca:
            raise TlsConfigError(f"{n['client_cert']} {mode} needs {n['client_ca']}, the CA that signs the clients' "
                                 "certificates")
        if crl and not client_ca:
            raise TlsConfigError(f"{n['crl']} needs {n['client_ca']}: the CRL revokes client certificates")
        if reload_interval < 0:
            raise TlsConfigError(f"{n['reload_interval']} {reload_interval:g}: seconds, 0 (only on reload) or more")
        return cls(certfile=cert, keyfile=key or None, client_ca=client_ca or None, client_cert=mode,
                   crl=crl or None, reload_interval=reload_interval, ocsp=checks, names=names)

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None, base: Path) -> FacadeTls | None:
        """The TLS a flow folder's ``settings.tls`` asks for (validated by the schema; paths
        relative to ``base``, the settings' folder), or None when it declares none."""
        tls = (settings or {}).get("tls")
        if not tls:
            return None

        def path(key: str) -> str | None:
            value = tls.get(key)
            return str(base / value) if value else None

        timeout = tls.get("ocsp_timeout")
        return cls.from_options(path("cert"), path("key"), path("client_ca"), tls.get("client_cert"), path("crl"),
                                float(tls.get("reload_interval", DEFAULT_RELOAD_INTERVAL)), SETTING_NAMES,
                                tls.get("ocsp"), tls.get("ocsp_responder"),
                                float(timeout) if timeout is not None else None, tls.get("ocsp_scope"))

    def check(self) -> None:
        """Load the files: a bad one is one line, not a traceback (at start, before anything is
        bound, and before a rotated set of files replaces the serving one)."""
        n = self.names
        for flag, path in ((n["cert"], self.certfile), (n["key"], self.keyfile),
                           (n["client_ca"], self.client_ca), (n["crl"], self.crl)):
            if path is not None and not Path(path).is_file():
                raise TlsConfigError(f"{flag} {path}: no such file")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.certfile, self.keyfile)
        except (ssl.SSLError, OSError) as exc:
            raise TlsConfigError(f"{n['cert']}/{n['key']}: cannot use {self.certfile}"
                                 f"{' with ' + self.keyfile if self.keyfile else ''}: "
                                 f"{getattr(exc, 'reason', None) or exc}") from None
        if self.client_ca is not None:
            try:
                context.load_verify_locations(self.client_ca)
            except (ssl.SSLError, OSError) as exc:
                raise TlsConfigError(f"{n['client_ca']} {self.client_ca}: not a PEM CA certificate "
                                     f"({getattr(exc, 'reason', None) or exc})") from None
        if self.crl is not None and self.client_ca is not None:
            check_crl(self.crl, self.client_ca, n["crl"])

    def restart_needed_for(self, new: FacadeTls | None) -> str | None:
        """What of ``new`` the listener cannot take without a restart, or None (engine/tls_live.py)."""
        if new is None:
            return "turning TLS off"
        if new.client_cert != self.client_cert:
            return f"client certificates {self.client_cert} -> {new.client_cert}"
        if (new.crl is None) != (self.crl is None):
            return "turning CRL checks " + ("on" if new.crl else "off")
        return None


def _ocsp_settings(n: dict[str, str], mode: str, client_ca: str | None, policy: str | None, responder: str | None,
                   timeout: float | None, scope: str | None = None) -> OcspSettings | None:
    """The OCSP checks asked for, or None; a contradiction raises."""
    from engine.ocsp import DEFAULT_SCOPE, DEFAULT_TIMEOUT, POLICIES, SCOPES, OcspSettings, shown_url

    if not policy:
        if responder or timeout is not None or scope:
            given = n["ocsp_responder"] if responder else n["ocsp_timeout"] if timeout is not None else n["ocsp_scope"]
            raise TlsConfigError(f"{given} needs {n['ocsp']} (hard-fail or soft-fail): OCSP checks are off")
        return None
    if policy not in POLICIES:
        raise TlsConfigError(f"{n['ocsp']} {policy!r}: choose one of {', '.join(POLICIES)} (what a responder that "
                             "cannot answer means: refuse, or serve and log)")
    if not client_ca or mode == "none":
        raise TlsConfigError(f"{n['ocsp']} needs {n['client_ca']} and client certificates: OCSP checks the "
                             "clients' certificates")
    if responder:
        parsed = urllib.parse.urlsplit(responder)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise TlsConfigError(f"{n['ocsp_responder']} {shown_url(responder)!r}: an http:// (or https://) URL of "
                                 "the OCSP responder, such as http://ocsp.example.com/")
    if timeout is not None and not timeout > 0:
        raise TlsConfigError(f"{n['ocsp_timeout']} {timeout:g}: seconds, more than 0")
    if scope and scope not in SCOPES:
        raise TlsConfigError(f"{n['ocsp_scope']} {scope!r}: choose one of {', '.join(SCOPES)} (every certificate of "
                             "the client's chain below its root, or the client's own alone)")
    return OcspSettings(policy, responder or None, timeout if timeout is not None else DEFAULT_TIMEOUT,
                        scope or DEFAULT_SCOPE)


def check_crl(crl_path: str, ca_path: str, name: str = "--tls-crl") -> None:
    """Every CRL in the file parses and is signed by one of the client CAs, and every client CA
    has one: with CRL checks on, OpenSSL refuses every certificate of a CA without a CRL."""
    from cryptography import x509

    text = Path(crl_path).read_bytes()
    marker = b"-----BEGIN X509 CRL-----"
    if marker not in text:
        raise TlsConfigError(f"{name} {crl_path}: no PEM CRL in the file (-----BEGIN X509 CRL-----)")
    crls = []
    for block in text.split(marker)[1:]:
        try:
            crls.append(x509.load_pem_x509_crl(marker + block))
        except ValueError as exc:
            raise TlsConfigError(f"{name} {crl_path}: a CRL that does not parse ({exc})") from None
    cas = x509.load_pem_x509_certificates(Path(ca_path).read_bytes())
    for ca in cas:
        key = cast(Any, ca.public_key())
        if not any(crl.issuer == ca.subject and crl.is_signature_valid(key) for crl in crls):
            raise TlsConfigError(f"{name} {crl_path}: no CRL signed by the client CA {ca.subject.rfc4514_string()} "
                                 "(with CRL checks every client CA needs its CRL, or its clients are refused)")
    now = datetime.datetime.now(datetime.UTC)
    for crl in crls:
        if crl.next_update_utc is not None and crl.next_update_utc < now:
            raise TlsConfigError(f"{name} {crl_path}: the CRL of {crl.issuer.rfc4514_string()} expired at "
                                 f"{crl.next_update_utc.isoformat()} (its next update); publish a new one")
        if not any(crl.issuer == ca.subject for ca in cas):
            raise TlsConfigError(f"{name} {crl_path}: a CRL of {crl.issuer.rfc4514_string()}, which is not one "
                                 "of the client CAs")


def peer_extension(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> dict[str, Any] | None:
    """The ASGI TLS extension of one connection (read once, when its handshake is done)."""
    return connection_peer(ssl_object)[0]


def connection_peer(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> tuple[dict[str, Any] | None, Peer | None]:
    """The ASGI TLS extension of one connection, and its client certificate parsed with the
    client CAs above it (None without one: engine/ocsp.py asks about the certificate and its issuer)."""
    if ssl_object is None:
        return None, None
    der = ssl_object.getpeercert(binary_form=True)
    cipher = ssl_object.cipher()
    version = ssl_object.version()
    context = ssl_object.context
    peer: Peer | None = None
    chain: list[str] = []  # the ASGI extension's, leaf first, as far as the client CA file holds it
    if not der:
        view = peer_view(None)
    elif isinstance(context, FacadeContext):
        peer, kept, pems = context.peer(der)
        view, chain = dict(kept), list(pems)  # each connection its own: its version and cipher go in
    else:
        peer = Peer.of(der)
        view, chain = peer.view(), [ssl.DER_cert_to_PEM_cert(der)]
    view["version"] = version
    view["cipher"] = cipher[0] if cipher else None
    view["source"] = "connection"  # engine/forwarded_cert.py makes "forwarded" ones
    view["forwarded_by"] = None
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": view["subject"],
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(version or ""),
        "cipher_suite": None,
        "view": view,
    }, peer


def flow_view(extension: dict[str, Any]) -> dict[str, Any]:
    """``${tls}`` of a request: the view this engine's protocol made for its connection, or one
    made from another server's ASGI TLS extension (the engine mounted elsewhere)."""
    view = extension.get("view")
    if view is None:
        chain = extension.get("client_cert_chain") or []
        view = peer_view(ssl.PEM_cert_to_DER_cert(chain[0]) if chain else None)
        if len(chain) > 1:  # that server's chain, as it gave it
            from cryptography import x509

            above = [x509.load_pem_x509_certificate(pem.encode()).subject for pem in chain[1:]]
            view["chain"] = [*view["chain"], *(name.rfc4514_string() for name in above)]
            view["chain_fields"] = [*view["chain_fields"], *(_fields(name) for name in above)]
        view["version"] = next((name for name, code in _TLS_VERSIONS.items()
                                if code == extension.get("tls_version")), None)
        view["cipher"] = None
        extension["view"] = view
    return view


_VIEW_KEYS = ("subject", "subject_fields", "common_name", "issuer", "issuer_fields", "serial", "sans", "fingerprint",
              "not_before", "not_after", "chain", "chain_fields")


@dataclass(frozen=True)
class Peer:
    """A client certificate as the handshake received it, and the client CAs above it."""

    certificate: Any  # cryptography's x509.Certificate (imported when first needed)
    der: bytes
    chain: tuple[CA, ...]  # its issuer first, up to the root: what the client CA file holds of it

    @classmethod
    def of(cls, der: bytes, cas: ClientCAs | None = None) -> Peer:
        from cryptography import x509

        certificate = x509.load_der_x509_certificate(der)
        return cls(certificate, der, cas.chain_of(certificate) if cas is not None else ())

    @property
    def issuer(self) -> CA | None:
        return self.chain[0] if self.chain else None

    @functools.cached_property
    def ocsp_asked(self) -> tuple[Asked, ...]:
        """The certificates of its chain OCSP may ask about (engine/ocsp.py), made once per peer."""
        from engine.ocsp import to_ask

        return to_ask(self)

    def view(self) -> dict[str, Any]:
        """What a flow reads as ``${tls.*}`` of this certificate."""
        from cryptography.x509.oid import NameOID

        cert = self.certificate
        common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        subject, subject_fields = cert.subject.rfc4514_string(), _fields(cert.subject)
        return {
            "subject": subject,
            "subject_fields": subject_fields,
            "common_name": str(common[0].value) if common else None,
            "issuer": cert.issuer.rfc4514_string(),
            "issuer_fields": _fields(cert.issuer),
            "serial": format(cert.serial_number, "X"),
            "sans": _sans(cert),
            "fingerprint": hashlib.sha256(self.der).hexdigest(),
            "not_before": cert.not_valid_before_utc.isoformat(),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "chain": [subject, *(ca.subject for ca in self.chain)],
            "chain_fields": [subject_fields, *(ca.fields for ca in self.chain)],
        }


def peer_view(der: bytes | None, cas: ClientCAs | None = None) -> dict[str, Any]:
    """What a flow reads as ``${tls.*}`` of a client certificate (DER), all None without one;
    ``${tls.chain}`` goes up through ``cas`` (without them it holds the certificate alone)."""
    if not der:
        return dict.fromkeys(_VIEW_KEYS)
    return Peer.of(der, cas).view()


def _fields(name: Any) -> dict[str, str]:
    """A distinguished name as {short name: value} (CN, O, OU...; the last of a repeated one wins)."""
    out: dict[str, str] = {}
    for attribute in name:
        label = attribute.rfc4514_attribute_name
        out[label] = str(attribute.value)
    return out


def _sans(cert: Any) -> list[str]:
    from cryptography import x509

    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    out: list[str] = []
    for general in names:
        if isinstance(general, (x509.DNSName, x509.RFC822Name, x509.UniformResourceIdentifier, x509.IPAddress)):
            out.append(str(general.value))
    return out
