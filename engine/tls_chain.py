"""The client's certificate chain, rebuilt over the facade's client CA file: ``${tls.chain}``.

Python's ssl module (3.11) hands over the client's own certificate, never the chain OpenSSL
verified.  The facade knows the CAs it verified against, though: the ``--tls-client-ca`` file.
``ClientCAs`` reads that file once, when the TLS context is built (at start and on each
rotation), indexes its certificates by subject key identifier and by subject name, and works
out each CA's chain up to its root then.  A connection's chain is then its leaf plus one
lookup: the CA its authority key identifier names (or, without one, the CA whose subject is
its issuer; of several such, the one whose key signed it).  Nothing is parsed or walked per
request, and per connection only the issuer is looked up.

The handshake has verified the chain already; this only says which one it was, so a flow can
tell an intermediate CA from its sibling (``${tls.chain[1]}``) or read the root
(``${tls.chain[-1]}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from cryptography import x509

_MAX_DEPTH = 16  # a CA file whose issuers loop (or a chain this long) stops here


@dataclass(frozen=True)
class CA:
    """A client CA certificate, with what ``${tls.chain}`` shows of it and the CAs above it."""

    certificate: x509.Certificate
    subject: str
    fields: dict[str, str]
    pem: str
    der: bytes  # what OCSP caches its answer by (engine/ocsp.py)
    above: tuple[CA, ...] = ()  # its issuer first, up to the root


def name_fields(name: x509.Name) -> dict[str, str]:
    """A distinguished name as {short name: value} (CN, O, OU...; the last of a repeated one wins)."""
    return {attribute.rfc4514_attribute_name: str(attribute.value) for attribute in name}


def _key_id(certificate: x509.Certificate, kind: type[Any]) -> bytes | None:
    try:
        value = certificate.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    key_id = value.digest if isinstance(value, x509.SubjectKeyIdentifier) else value.key_identifier
    return cast(bytes | None, key_id)


def _signed_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        certificate.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):  # another key, another name, another key type
        return False
    return True


class ClientCAs:
    """The client CA file, compiled: its CAs by subject key identifier and by subject, each with
    its chain up to a root (see the module docstring)."""

    def __init__(self, pem: bytes) -> None:
        from cryptography.hazmat.primitives.serialization import Encoding

        certificates = x509.load_pem_x509_certificates(pem) if b"-----BEGIN CERTIFICATE-----" in pem else []
        plain = [CA(c, c.subject.rfc4514_string(), name_fields(c.subject), c.public_bytes(Encoding.PEM).decode(),
                    c.public_bytes(Encoding.DER)) for c in certificates]
        self._by_key_id: dict[bytes, list[CA]] = {}
        self._by_subject: dict[x509.Name, list[CA]] = {}
        for ca in plain:
            self._index(ca)
        # each CA's chain above it, from the plain entries, then the index refilled with the whole ones
        whole = [CA(ca.certificate, ca.subject, ca.fields, ca.pem, ca.der, self._above(ca.certificate))
                 for ca in plain]
        self._by_key_id, self._by_subject = {}, {}
        for ca in whole:
            self._index(ca)
        self.cas = tuple(whole)

    def _index(self, ca: CA) -> None:
        key_id = _key_id(ca.certificate, x509.SubjectKeyIdentifier)
        if key_id is not None:
            self._by_key_id.setdefault(key_id, []).append(ca)
        self._by_subject.setdefault(ca.certificate.subject, []).append(ca)

    def issuer_of(self, certificate: x509.Certificate) -> CA | None:
        """The CA of the file that issued ``certificate`` (None: none of them, or it is a root)."""
        if certificate.issuer == certificate.subject and _signed_by(certificate, certificate):
            return None  # self-signed: the top
        key_id = _key_id(certificate, x509.AuthorityKeyIdentifier)
        candidates = self._by_key_id.get(key_id, []) if key_id is not None else []
        if not candidates:
            candidates = self._by_subject.get(certificate.issuer, [])
        candidates = [ca for ca in candidates if ca.certificate.subject == certificate.issuer]
        if len(candidates) > 1:  # a renewed or cross-signed CA under one name: the key that signed it
            candidates = [ca for ca in candidates if _signed_by(certificate, ca.certificate)] or candidates[:1]
        return candidates[0] if candidates else None

    def _above(self, certificate: x509.Certificate) -> tuple[CA, ...]:
        chain: list[CA] = []
        current = certificate
        while len(chain) < _MAX_DEPTH:
            issuer = self.issuer_of(current)
            if issuer is None or any(issuer.certificate == seen.certificate for seen in chain) \
                    or issuer.certificate == certificate:
                break
            chain.append(issuer)
            current = issuer.certificate
        return tuple(chain)

    def chain_of(self, leaf: x509.Certificate) -> tuple[CA, ...]:
        """The CAs above ``leaf``, its issuer first, up to the root (as far as the file holds them)."""
        issuer = self.issuer_of(leaf)
        return (issuer, *issuer.above) if issuer is not None else ()
