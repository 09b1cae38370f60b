"""The facade's TLS files rotated on a running engine (a renewed Kubernetes Secret): new
connections use the new server certificate, client CA and CRL, open ones finish on the old;
a revoked client certificate fails the handshake.  Real TLS on 127.0.0.1, CAs made by the test."""

from __future__ import annotations

import datetime
import os
import shutil
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.engine import RunningEngine, run_engine, wait_for, wait_for_workers, write_flows
from tests.support.pki import Authority, Issued

FLOWS = """
flows:
  whoami:
    source: {http: {method: GET, path: /whoami}}
    steps:
      - authenticate: {client_cert: {}}
      - respond: {json: {cn: "${auth.common_name}", issuer: "${auth.issuer_fields.CN}"}}
"""


@dataclass(frozen=True)
class Rotation:
    folder: Path  # where the engine reads its files: tls.crt, tls.key, ca.crt, ca.crl
    trust: Path  # what the clients trust for the server: both CAs
    old_ca: Authority
    new_ca: Authority
    old_server: Issued
    new_server: Issued
    old_partner: Issued
    new_partner: Issued
    revoked_partner: Issued  # of the new CA, revoked by its CRL

    def install(self, server: Issued, ca: Authority, crl: Path) -> None:
        """Replace the files as a renewed Secret does: each written aside, then renamed over."""
        for name, source in (("tls.crt", server.cert), ("tls.key", server.key), ("ca.crt", ca.ca.cert),
                             ("ca.crl", crl)):
            aside = self.folder / f".{name}.new"
            shutil.copyfile(source, aside)
            os.replace(aside, self.folder / name)

    def args(self, interval: str) -> list[str]:
        f = self.folder
        return ["--tls-cert", str(f / "tls.crt"), "--tls-key", str(f / "tls.key"), "--tls-client-ca",
                str(f / "ca.crt"), "--tls-crl", str(f / "ca.crl"), "--tls-client-cert", "optional",
                "--tls-reload-interval", interval]


@pytest.fixture
def rotation(tmp_path: Path) -> Rotation:
    for folder in ("old", "new", "live"):
        (tmp_path / folder).mkdir()
    old_ca, new_ca = Authority(tmp_path / "old", "Old CA"), Authority(tmp_path / "new", "New CA")
    trust = tmp_path / "trust.pem"
    trust.write_bytes(old_ca.ca.cert.read_bytes() + new_ca.ca.cert.read_bytes())
    rotation = Rotation(tmp_path / "live", trust, old_ca, new_ca, old_ca.issue("facade-old", server=True),
                        new_ca.issue("facade-new", server=True), old_ca.issue("partner-old"),
                        new_ca.issue("partner-new"), new_ca.issue("partner-revoked"))
    old_ca.crl(tmp_path / "old" / "ca.crl")
    new_ca.crl(tmp_path / "new" / "ca.crl", (rotation.revoked_partner,))
    rotation.install(rotation.old_server, old_ca, tmp_path / "old" / "ca.crl")
    return rotation


def _client(rotation: Rotation, engine: RunningEngine, who: Issued) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(rotation.trust))
    context.load_cert_chain(who.cert, who.key)
    return httpx.Client(base_url=f"https://127.0.0.1:{engine.port}", verify=context, timeout=10)


def _server_name(rotation: Rotation, engine: RunningEngine) -> str:
    """The common name of the certificate a new connection is served."""
    context = ssl.create_default_context(cafile=str(rotation.trust))
    with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        subject = dict(pair[0] for pair in tls.getpeercert()["subject"])  # type: ignore[index, misc]
        return str(subject["commonName"])


def _refused(rotation: Rotation, engine: RunningEngine, who: Issued) -> bool:
    with _client(rotation, engine, who) as client:
        try:
            client.get("/whoami")
        except httpx.TransportError:
            return True
    return False


def test_rotated_files_serve_new_connections_and_open_ones_finish(rotation: Rotation, tmp_path: Path) -> None:
    with run_engine(write_flows(tmp_path / "flows", FLOWS), *rotation.args("0.3")) as engine, \
            _client(rotation, engine, rotation.old_partner) as kept:
        assert kept.get("/whoami").json() == {"cn": "partner-old", "issuer": "Old CA"}
        assert _server_name(rotation, engine) == "facade-old"
        assert _refused(rotation, engine, rotation.new_partner)  # not trusted yet

        rotation.install(rotation.new_server, rotation.new_ca, tmp_path / "new" / "ca.crl")
        wait_for(lambda: _server_name(rotation, engine) == "facade-new", "the new server certificate served")

        with _client(rotation, engine, rotation.new_partner) as client:
            assert client.get("/whoami").json() == {"cn": "partner-new", "issuer": "New CA"}
        assert _refused(rotation, engine, rotation.old_partner)  # its CA is gone from the client CA file
        assert _refused(rotation, engine, rotation.revoked_partner)  # the new CRL revokes it
        # the connection opened before the rotation finishes on the old certificates: its old
        # partner, whose CA new connections no longer accept, is still served on it
        assert kept.get("/whoami").json() == {"cn": "partner-old", "issuer": "Old CA"}
        assert "TLS files changed: new connections use the new certificate" in engine.log()

        # a half-written rotation (the new certificate beside the old key) is refused and the
        # previous files keep serving
        shutil.copyfile(rotation.old_server.cert, rotation.folder / "tls.crt")
        wait_for(lambda: "TLS files changed but cannot serve" in engine.log(), "the refusal logged")
        assert "key values mismatch" in engine.log() or "KEY_VALUES_MISMATCH" in engine.log()
        assert _server_name(rotation, engine) == "facade-new"
        metrics = httpx.get(f"{engine.management_url}/metrics", timeout=10).text
        assert 'interlace_tls_reloads_total{outcome="ok"} 1.0' in metrics
        assert 'interlace_tls_reloads_total{outcome="refused"} 1.0' in metrics


def test_a_reload_applies_a_new_crl_in_every_worker(rotation: Rotation, tmp_path: Path) -> None:
    """Two workers on one port, no timer: POST /reload has each of them read the files again
    (new connections land on either worker)."""
    with run_engine(write_flows(tmp_path / "flows", FLOWS), *rotation.args("0"), "--workers", "2") as engine:
        wait_for_workers(engine, 2)
        with _client(rotation, engine, rotation.old_partner) as client:
            assert client.get("/whoami").status_code == 200
        rotation.old_ca.crl(tmp_path / "revoking.crl", (rotation.old_partner,))
        os.replace(tmp_path / "revoking.crl", rotation.folder / "ca.crl")
        time.sleep(0.5)
        assert not _refused(rotation, engine, rotation.old_partner)  # no timer: still the old CRL
        assert httpx.post(f"{engine.management_url}/reload", timeout=30).status_code == 200
        assert all(_refused(rotation, engine, rotation.old_partner) for _ in range(8))
        assert engine.log().count("TLS files changed: new connections use") == 2  # once per worker


def test_a_revoked_client_certificate_fails_the_handshake(rotation: Rotation, tmp_path: Path) -> None:
    rotation.install(rotation.new_server, rotation.new_ca, tmp_path / "new" / "ca.crl")
    with run_engine(write_flows(tmp_path / "flows", FLOWS), *rotation.args("0")) as engine:
        assert _refused(rotation, engine, rotation.revoked_partner)
        with _client(rotation, engine, rotation.new_partner) as client:
            assert client.get("/whoami").json()["cn"] == "partner-new"


def test_a_revoked_intermediate_ca_refuses_the_certificates_it_issued(tmp_path: Path) -> None:
    """Partners' certificates come from an intermediate CA below the root: the root's CRL revoking
    the intermediate refuses all of them, though the intermediate's own CRL revokes none."""
    root = Authority(tmp_path, "Root CA", path_length=1)
    issuing, other = root.intermediate("Issuing CA"), root.intermediate("Other Issuing CA")
    server, partner, colleague = root.issue("facade", server=True), issuing.issue("partner"), other.issue("colleague")
    client_ca = tmp_path / "client-ca.pem"
    client_ca.write_bytes(b"".join(ca.ca.cert.read_bytes() for ca in (root, issuing, other)))
    crls = tmp_path / "crls.pem"

    def serve_with_crls(*revoked_by_root: Authority) -> list[str]:
        root.crl(tmp_path / "root.crl", revoked_by_root)
        issuing.crl(tmp_path / "issuing.crl")
        other.crl(tmp_path / "other.crl")
        crls.write_bytes(b"".join((tmp_path / f"{n}.crl").read_bytes() for n in ("root", "issuing", "other")))
        return ["--tls-cert", str(server.cert), "--tls-key", str(server.key), "--tls-client-ca", str(client_ca),
                "--tls-crl", str(crls), "--tls-client-cert", "optional"]

    def answer(engine: RunningEngine, who: Issued) -> object:
        context = ssl.create_default_context(cafile=str(root.ca.cert))
        context.load_cert_chain(who.cert, who.key)
        with httpx.Client(base_url=f"https://127.0.0.1:{engine.port}", verify=context, timeout=10) as client:
            try:
                return client.get("/whoami").json()
            except httpx.TransportError:
                return "refused"

    flows = write_flows(tmp_path / "flows", FLOWS)
    with run_engine(flows, *serve_with_crls()) as engine:
        assert answer(engine, partner) == {"cn": "partner", "issuer": "Issuing CA"}
        assert answer(engine, colleague) == {"cn": "colleague", "issuer": "Other Issuing CA"}
    with run_engine(flows, *serve_with_crls(issuing)) as engine:
        assert answer(engine, partner) == "refused"
        assert answer(engine, colleague) == {"cn": "colleague", "issuer": "Other Issuing CA"}


@pytest.mark.parametrize(("case", "message"), [
    ("garbage", "no PEM CRL in the file"),
    ("other-ca", "no CRL signed by the client CA CN=New CA"),
    ("two-cas-one-crl", "no CRL signed by the client CA CN=Old CA"),
    ("expired", "expired at"),
])
def test_a_crl_that_cannot_serve_is_one_line(rotation: Rotation, tmp_path: Path, case: str, message: str) -> None:
    from engine.tls import FacadeTls, TlsConfigError

    crl, ca = tmp_path / "case.crl", rotation.new_ca.ca.cert
    if case == "garbage":
        crl.write_text("not a CRL\n")
    elif case == "other-ca":
        rotation.old_ca.crl(crl)
    elif case == "two-cas-one-crl":
        rotation.new_ca.crl(crl)
        ca = rotation.trust  # both CAs, the CRL of one
    else:
        rotation.new_ca.crl(crl, valid_for=-datetime.timedelta(minutes=1))
    tls = FacadeTls.from_options(str(rotation.new_server.cert), str(rotation.new_server.key), str(ca), "optional",
                                 str(crl))
    assert tls is not None
    with pytest.raises(TlsConfigError, match=message):
        tls.check()
