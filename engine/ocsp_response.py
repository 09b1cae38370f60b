"""One OCSP exchange's two ends (RFC 6960), with ``cryptography``'s x509.ocsp: the request for a
client certificate, and the checks that make its response believable.

A response is believed only when it answers the certificate asked about (the serial and the
issuer's name and key hashes of the request), is signed by that certificate's issuer or by a
responder the issuer delegated to (a certificate the issuer signed, with the OCSP-signing
extended key usage, valid now), carries the request's nonce when it carries one (responders
that pre-sign their answers send none), and is fresh: its thisUpdate not in the future and
its nextUpdate not past (both with ``SKEW`` of clock leeway).  Anything else is
``OcspFailure`` with the reason, and the policy (engine/ocsp.py) decides what it means.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

SKEW = datetime.timedelta(minutes=5)  # clocks of the engine and the responder may differ this much
# a response without nextUpdate says newer information is always there: it is kept this long
NO_NEXT_UPDATE_KEPT = datetime.timedelta(minutes=5)


class OcspFailure(Exception):
    """No believable answer: the responder could not be asked, or its answer is not to be trusted."""


class OcspUncheckable(OcspFailure):
    """No responder can ever be asked about this certificate (none named, none configured, or
    no issuer to ask about): asking again would not help."""


@dataclass(frozen=True)
class OcspAnswer:
    status: str  # good | revoked | unknown
    until: datetime.datetime  # when to ask again (its nextUpdate)


def ocsp_request(leaf: x509.Certificate, issuer: x509.Certificate) -> tuple[bytes, bytes]:
    """The DER request for ``leaf`` (SHA-1 certificate id: the one every responder reads,
    RFC 5019) with a fresh nonce, and that nonce."""
    nonce = os.urandom(16)
    request = (ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1())
               .add_extension(x509.OCSPNonce(nonce), critical=False).build())
    return request.public_bytes(Encoding.DER), nonce


def read_response(der: bytes, leaf: x509.Certificate, issuer: x509.Certificate, nonce: bytes,
                  now: datetime.datetime) -> OcspAnswer:
    """What a responder's DER answer says of ``leaf``, once believed (see the module docstring)."""
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        raise OcspFailure(f"the answer is not an OCSP response ({exc})") from None
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise OcspFailure(f"the responder answered {response.response_status.name}")
    _check_signature(response, issuer, now)
    try:
        echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        echoed = None
    if echoed is not None and echoed != nonce:
        raise OcspFailure("the answer's nonce is not the request's (a replayed answer)")
    single = _single_for(response, leaf, issuer)
    if single.this_update_utc > now + SKEW:
        raise OcspFailure(f"the answer's thisUpdate {single.this_update_utc.isoformat()} is in the future")
    next_update = single.next_update_utc
    if next_update is not None and next_update < now - SKEW:
        raise OcspFailure(f"the answer is stale: its nextUpdate {next_update.isoformat()} has passed")
    status = {ocsp.OCSPCertStatus.GOOD: "good", ocsp.OCSPCertStatus.REVOKED: "revoked",
              ocsp.OCSPCertStatus.UNKNOWN: "unknown"}[single.certificate_status]
    return OcspAnswer(status, next_update if next_update is not None else now + NO_NEXT_UPDATE_KEPT)


def _single_for(response: ocsp.OCSPResponse, leaf: x509.Certificate, issuer: x509.Certificate) -> Any:
    """The single response about ``leaf`` (a responder may answer about several certificates)."""
    for single in response.responses:
        # the certificate id as this response's hash algorithm makes it, from a request built with it
        asked = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, single.hash_algorithm).build()
        if single.serial_number == leaf.serial_number and single.issuer_name_hash == asked.issuer_name_hash \
                and single.issuer_key_hash == asked.issuer_key_hash:
            return single
    raise OcspFailure("the answer is not about the certificate asked about")


def _check_signature(response: ocsp.OCSPResponse, issuer: x509.Certificate, now: datetime.datetime) -> None:
    """Signed by the issuer itself, or by a responder certificate the issuer signed for OCSP."""
    if _names(response, issuer):
        signer = issuer
    else:
        delegated = [c for c in response.certificates if _names(response, c)]
        if not delegated:
            raise OcspFailure("the answer is signed by neither the certificate's issuer nor a responder it "
                              "delegated to (no such certificate in the answer)")
        signer = delegated[0]
        try:
            signer.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError):
            raise OcspFailure("the answer's responder certificate is not signed by the certificate's issuer") from None
        try:
            usages = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usages = None
        if usages is None or ExtendedKeyUsageOID.OCSP_SIGNING not in usages:
            raise OcspFailure("the answer's responder certificate lacks the OCSP-signing extended key usage")
        if not signer.not_valid_before_utc - SKEW <= now <= signer.not_valid_after_utc + SKEW:
            raise OcspFailure("the answer's responder certificate is not valid now")
    if not _verifies(signer.public_key(), response.signature, response.tbs_response_bytes,
                     response.signature_hash_algorithm):
        raise OcspFailure("the answer's signature does not verify (a forged or altered answer)")


def _names(response: ocsp.OCSPResponse, certificate: x509.Certificate) -> bool:
    """Whether the response's responder id names ``certificate`` (by key hash or by name)."""
    if response.responder_key_hash is not None:  # SHA-1 of the key's bits: RFC 5280's key identifier
        return response.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(
            certificate.public_key()).digest
    return response.responder_name == certificate.subject


def _verifies(key: Any, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm | None) -> bool:
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            key.verify(signature, data)
        else:
            return False
    except InvalidSignature:
        return False
    return True
