"""A certificate authority made at test time (``cryptography``): server and client certificates
as PEM files, for TLS and mutual-TLS tests on loopback."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path
    certificate: x509.Certificate

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.certificate.public_bytes(serialization.Encoding.DER)).hexdigest()

    @property
    def serial(self) -> str:
        return format(self.certificate.serial_number, "X")


def _name(common_name: str, organisation: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organisation:
        parts.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
    return x509.Name(parts)


def _write(folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return Issued(cert_path, key_path, cert)


class Authority:
    """A CA that issues server and client certificates into ``folder``."""

    def __init__(self, folder: Path, name: str = "Test CA", organisation: str = "Example Partners",
                 parent: Authority | None = None, path_length: int | None = 0, key_ids: bool = False,
                 ocsp_url: str | None = None) -> None:
        """A root CA, or with ``parent`` an intermediate CA it signs; ``path_length``: how many
        CAs may sit below this one (0: it issues end certificates only); ``key_ids``: its
        certificate and those it issues carry subject and authority key identifiers; ``ocsp_url``:
        its parent's OCSP responder, in its Authority Information Access."""
        self.folder = folder
        self.key_ids = key_ids
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(name, organisation)
        now = datetime.datetime.now(datetime.UTC)
        builder = (x509.CertificateBuilder().subject_name(self.name)
                   .issuer_name(parent.name if parent is not None else self.name)
                   .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False, key_agreement=False,
                                                key_cert_sign=True, crl_sign=True, encipher_only=False,
                                                decipher_only=False), critical=True))
        signer = parent if parent is not None else self
        if ocsp_url is not None:
            builder = builder.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
        if key_ids:
            builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                                            critical=False)
        if signer.key_ids:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.key.public_key()), critical=False)
        cert = builder.sign(signer.key, hashes.SHA256())
        self.ca = _write(folder, name.replace(" ", "-").lower(), cert, self.key)

    def intermediate(self, name: str, key_ids: bool | None = None, ocsp_url: str | None = None) -> Authority:
        """A CA below this one (this one must allow it: ``path_length`` 1 or None), naming
        ``ocsp_url`` (this CA's responder) in its Authority Information Access."""
        return Authority(self.folder, name, parent=self, key_ids=self.key_ids if key_ids is None else key_ids,
                         ocsp_url=ocsp_url)

    def issue(self, common_name: str, *, organisation: str | None = "Example Partners",
              sans: list[x509.GeneralName] | None = None, server: bool = False, ocsp_url: str | None = None,
              usage: x509.ObjectIdentifier | None = None) -> Issued:
        """A certificate this CA signs: a client's (or with ``server`` a server's; ``usage``: another
        extended key usage, such as OCSP signing), with ``ocsp_url`` in its Authority Information Access."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = usage or (ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (x509.CertificateBuilder().subject_name(_name(common_name, organisation)).issuer_name(self.name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if self.key_ids:
            builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                                            critical=False)
        if ocsp_url is not None:
            builder = builder.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
        if server:
            sans = [*(sans or []), x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return _write(self.folder, common_name, cert, key)

    def crl(self, path: Path, revoked: tuple[Issued | Authority, ...] = (),
            valid_for: datetime.timedelta = datetime.timedelta(days=1)) -> Path:
        """A PEM CRL of this CA revoking ``revoked`` (an empty one by default), written to ``path``."""
        now = datetime.datetime.now(datetime.UTC)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.name)
                   .last_update(now - datetime.timedelta(minutes=5)).next_update(now + valid_for))
        for issued in revoked:
            certificate = issued.ca.certificate if isinstance(issued, Authority) else issued.certificate
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(certificate.serial_number)
                .revocation_date(now - datetime.timedelta(minutes=1)).build())
        path.write_bytes(builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        return path
