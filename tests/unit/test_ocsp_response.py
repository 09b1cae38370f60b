"""engine/ocsp_response.py: which OCSP answers are believed, on answers signed with cryptography
by the test's CA, its delegated responder and impostors; and the OCSP options' load-time errors."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from engine.ocsp import ocsp_url
from engine.ocsp_response import OcspFailure, ocsp_request, read_response
from engine.tls import FacadeTls, TlsConfigError
from tests.support.pki import Authority, Issued

HOUR = datetime.timedelta(hours=1)
# the reading's clock, set as each test starts (_clock): taken at import, it was minutes behind
# certificates issued when the full suite reached this file, older than their validity's leeway
NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture(autouse=True)
def _clock() -> None:
    global NOW
    NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("ca"), "Partners CA")


@pytest.fixture(scope="module")
def leaf(ca: Authority) -> Issued:
    return ca.issue("partner-a", ocsp_url="http://127.0.0.1:9/ocsp")


def _answer(ca: Authority, leaf: Issued, signer: Issued | None = None, *, status: str = "good",
            this_update: datetime.datetime | None = None,
            next_update: datetime.datetime | datetime.timedelta | None = HOUR,
            nonce: bytes | None = None, about: Issued | None = None,
            by_key: bool = False, responder_status: ocsp.OCSPResponseStatus | None = None) -> bytes:
    """An answer about ``about`` (default ``leaf``) signed by ``signer``'s key (default the CA's)."""
    if responder_status is not None:
        return ocsp.OCSPResponseBuilder.build_unsuccessful(responder_status).public_bytes(Encoding.DER)
    cert_status = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
                   "unknown": ocsp.OCSPCertStatus.UNKNOWN}[status]
    this_update = NOW if this_update is None else this_update
    if isinstance(next_update, datetime.timedelta):  # after NOW
        next_update = NOW + next_update
    revoked_at = NOW - HOUR if status == "revoked" else None
    builder = ocsp.OCSPResponseBuilder().add_response(
        (about or leaf).certificate, ca.ca.certificate, hashes.SHA1(), cert_status, this_update, next_update,
        revoked_at, None)
    encoding = ocsp.OCSPResponderEncoding.HASH if by_key else ocsp.OCSPResponderEncoding.NAME
    if signer is None:
        builder = builder.responder_id(encoding, ca.ca.certificate)
        key = ca.key
    else:
        builder = builder.responder_id(encoding, signer.certificate).certificates([signer.certificate])
        key = load_pem_private_key(signer.key.read_bytes(), None)  # type: ignore[assignment]
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)


def _read(ca: Authority, leaf: Issued, der: bytes, nonce: bytes = b"n" * 16) -> str:
    answer = read_response(der, leaf.certificate, ca.ca.certificate, nonce, NOW)
    return answer.status


def test_answers_signed_by_the_issuer_or_its_delegate_are_believed(ca: Authority, leaf: Issued) -> None:
    delegate = ca.issue("ocsp-responder", usage=ExtendedKeyUsageOID.OCSP_SIGNING)
    assert _read(ca, leaf, _answer(ca, leaf)) == "good"
    assert _read(ca, leaf, _answer(ca, leaf, by_key=True)) == "good"
    assert _read(ca, leaf, _answer(ca, leaf, delegate, status="revoked")) == "revoked"
    assert _read(ca, leaf, _answer(ca, leaf, delegate, status="unknown", by_key=True)) == "unknown"
    assert _read(ca, leaf, _answer(ca, leaf, nonce=b"n" * 16)) == "good"  # its nonce echoed
    kept = read_response(_answer(ca, leaf, next_update=None), leaf.certificate, ca.ca.certificate, b"", NOW)
    assert kept.until == NOW + datetime.timedelta(minutes=5)  # no nextUpdate: kept five minutes


@pytest.mark.parametrize(("case", "reason"), [
    ("impostor", "responder certificate is not signed by the certificate's issuer"),
    ("no-eku", "lacks the OCSP-signing extended key usage"),
    ("tampered", "signature does not verify"),
    ("stale", "the answer is stale: its nextUpdate"),
    ("future", "is in the future"),
    ("nonce", "nonce is not the request's"),
    ("other-serial", "not about the certificate asked about"),
    ("try-later", "the responder answered TRY_LATER"),
    ("not-ocsp", "the answer is not an OCSP response"),
    ("same-name-ca", "signature does not verify"),
    ("stranger", "signed by neither the certificate's issuer nor a responder it delegated to"),
])
def test_answers_not_to_be_believed(ca: Authority, leaf: Issued, tmp_path: Path, case: str, reason: str) -> None:
    impostor_ca = Authority(tmp_path, "Partners CA")  # the same name, another key
    impostor = impostor_ca.issue("ocsp-responder", usage=ExtendedKeyUsageOID.OCSP_SIGNING)
    der = {
        "impostor": lambda: _answer(ca, leaf, impostor),
        "no-eku": lambda: _answer(ca, leaf, ca.issue("not-a-responder")),
        "tampered": lambda: _answer(ca, leaf),
        "stale": lambda: _answer(ca, leaf, this_update=NOW - 2 * HOUR, next_update=NOW - HOUR),
        "future": lambda: _answer(ca, leaf, this_update=NOW + HOUR, next_update=NOW + 2 * HOUR),
        "nonce": lambda: _answer(ca, leaf, nonce=b"x" * 16),
        "other-serial": lambda: _answer(ca, leaf, about=ca.issue("partner-b")),
        "try-later": lambda: _answer(ca, leaf, responder_status=ocsp.OCSPResponseStatus.TRY_LATER),
        "not-ocsp": lambda: b"<html>gateway timeout</html>",
        "same-name-ca": lambda: _answer(impostor_ca, leaf),  # signed as the issuer, with another key
        "stranger": lambda: _answer(Authority(tmp_path, "Other CA"), leaf),
    }[case]()
    if case == "tampered":  # one bit of the signed part flipped: thisUpdate's last digit, still a digit
        stamp = NOW.strftime("%Y%m%d%H%M%S").encode()
        at = der.index(stamp) + len(stamp) - 1
        der = der[:at] + bytes([der[at] ^ 0x01]) + der[at + 1:]
    with pytest.raises(OcspFailure, match=reason):
        _read(ca, leaf, der)


def test_the_request_names_the_certificate_and_carries_a_nonce(ca: Authority, leaf: Issued) -> None:
    der, nonce = ocsp_request(leaf.certificate, ca.ca.certificate)
    request = ocsp.load_der_ocsp_request(der)
    assert request.serial_number == leaf.certificate.serial_number
    assert request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
    assert ocsp_request(leaf.certificate, ca.ca.certificate)[1] != nonce
    assert ocsp_url(leaf.certificate) == "http://127.0.0.1:9/ocsp"
    assert ocsp_url(ca.ca.certificate) is None


@pytest.mark.parametrize(("options", "message"), [
    ({"ocsp": "sometimes"}, "--tls-ocsp 'sometimes': choose one of hard-fail, soft-fail"),
    ({"ocsp": "hard-fail", "client_ca": None}, "--tls-ocsp needs --tls-client-ca and client certificates"),
    ({"ocsp": "hard-fail", "client_cert": "none"}, "--tls-ocsp needs --tls-client-ca and client certificates"),
    ({"ocsp": "soft-fail", "ocsp_responder": "ocsp.example.com"},
     "--tls-ocsp-responder 'ocsp.example.com': an http:// (or https://) URL"),
    ({"ocsp": "soft-fail", "ocsp_timeout": 0.0}, "--tls-ocsp-timeout 0: seconds, more than 0"),
    ({"ocsp_responder": "http://127.0.0.1:1/"}, "--tls-ocsp-responder needs --tls-ocsp (hard-fail or soft-fail)"),
    ({"ocsp_scope": "leaf"}, "--tls-ocsp-scope needs --tls-ocsp (hard-fail or soft-fail)"),
    ({"ocsp": "hard-fail", "ocsp_scope": "all"}, "--tls-ocsp-scope 'all': choose one of chain, leaf"),
])
def test_contradicting_ocsp_options_are_one_line(options: dict[str, object], message: str) -> None:
    given: dict[str, object] = {"cert": "facade.crt", "key": None, "client_ca": "ca.pem", "client_cert": None,
                                **options}
    with pytest.raises(TlsConfigError) as caught:
        FacadeTls.from_options(**given)  # type: ignore[arg-type]
    assert str(caught.value).startswith(message)


def test_ocsp_options_and_their_defaults() -> None:
    tls = FacadeTls.from_options("facade.crt", None, "ca.pem", None, ocsp="soft-fail")
    assert tls is not None and tls.ocsp is not None
    assert (tls.ocsp.policy, tls.ocsp.responder, tls.ocsp.timeout, tls.ocsp.scope) == ("soft-fail", None, 5.0, "chain")
    assert FacadeTls.from_options("facade.crt", None, "ca.pem", None).ocsp is None  # type: ignore[union-attr]
