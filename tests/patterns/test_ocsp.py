"""OCSP for the facade's client certificates, on a real `interlace run` over mutual TLS on
127.0.0.1: OpenSSL's responders (tests/support/ocsp.py) answering for an intermediate CA and for
the root above it (which vouches for the intermediate), the certificates made by the test.  Good,
revoked and unknown certificates; a revoked intermediate CA (the default chain scope) and the
leaf scope that does not ask about it; a responder that is down under both policies; an answer
cached past the responder's end; forged and stale answers refused."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from engine.ocsp import OcspChecker, OcspSettings
from engine.tls import Peer
from engine.tls_chain import ClientCAs
from tests.support.engine import RunningEngine, run_engine, wait_for, write_flows
from tests.support.ocsp import OcspResponder, running
from tests.support.pki import Authority, Issued
from tests.support.services import free_port

FLOWS = """
flows:
  whoami:
    source: {http: {method: GET, path: /whoami}}
    steps:
      - respond: {json: {cn: "${tls.common_name}", chain: "${tls.chain}"}}
"""


@dataclass(frozen=True)
class Pki:
    root: Authority
    issuing: Authority
    server: Issued
    client_ca: Path
    responder: OcspResponder
    root_responder: OcspResponder  # the root's: answers about the Issuing CA (good)
    good: Issued
    revoked: Issued
    unknown: Issued  # not in the responder's index
    unreachable: Issued  # its Authority Information Access names a port nothing listens on


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    folder = tmp_path_factory.mktemp("pki")
    root = Authority(folder, "Partners Root", path_length=1, key_ids=True)
    (folder / "root-ocsp").mkdir()
    root_responder = OcspResponder(root, folder / "root-ocsp")
    issuing = root.intermediate("Issuing CA", ocsp_url=root_responder.url)
    root_responder.write_index((issuing.ca,))
    client_ca = folder / "client-ca.pem"
    client_ca.write_bytes(issuing.ca.cert.read_bytes() + root.ca.cert.read_bytes())
    responder = OcspResponder(issuing, folder)
    pki = Pki(root, issuing, root.issue("facade", server=True), client_ca, responder, root_responder,
              issuing.issue("partner-good", ocsp_url=responder.url),
              issuing.issue("partner-revoked", ocsp_url=responder.url),
              issuing.issue("partner-unknown", ocsp_url=responder.url),
              issuing.issue("partner-unreachable", ocsp_url=f"http://127.0.0.1:{free_port()}/"))
    responder.write_index((pki.good, pki.unreachable), (pki.revoked,))
    with running(responder), running(root_responder):
        yield pki


def _args(pki: Pki, *more: str) -> list[str]:
    return ["--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key),
            "--tls-client-ca", str(pki.client_ca), "--tls-ocsp-timeout", "2", *more]


def _get(pki: Pki, engine: RunningEngine, who: Issued) -> httpx.Response:
    """One request on a new connection (each connection is checked when its handshake is done)."""
    context = ssl.create_default_context(cafile=str(pki.root.ca.cert))
    context.load_cert_chain(who.cert, who.key)
    with httpx.Client(base_url=f"https://127.0.0.1:{engine.port}", verify=context, timeout=15) as client:
        return client.get("/whoami")


def _problem(answer: httpx.Response) -> tuple[int, str]:
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["connection"] == "close"
    return answer.status_code, str(answer.json()["type"]).rsplit("/", 1)[-1]


def _metrics(engine: RunningEngine) -> str:
    return httpx.get(f"{engine.management_url}/metrics", timeout=10).text


def test_hard_fail_serves_good_and_refuses_revoked_unknown_and_unreachable(pki: Pki, tmp_path: Path) -> None:
    asked_of_root = pki.root_responder.requests
    with run_engine(write_flows(tmp_path, FLOWS), *_args(pki, "--tls-ocsp", "hard-fail")) as engine:
        good = _get(pki, engine, pki.good)
        assert good.status_code == 200
        assert good.json() == {"cn": "partner-good", "chain": [
            "CN=partner-good,O=Example Partners", "CN=Issuing CA,O=Example Partners",
            "CN=Partners Root,O=Example Partners"]}
        revoked = _get(pki, engine, pki.revoked)
        assert _problem(revoked) == (403, "certificate-revoked")
        assert revoked.json()["detail"] == "the client certificate is revoked: its CA's OCSP responder says so"
        assert _problem(_get(pki, engine, pki.unknown)) == (403, "certificate-status-unknown")
        unreachable = _get(pki, engine, pki.unreachable)
        assert _problem(unreachable) == (503, "certificate-status-unavailable")
        assert unreachable.headers["retry-after"] == "5"
        metrics = _metrics(engine)
        for answer in ("revoked", "unknown", "failed"):
            assert f'interlace_tls_ocsp_total{{answer="{answer}"}} 1.0' in metrics
        # partner-good's, and the Issuing CA's once (from the root's responder) for all four connections
        assert 'interlace_tls_ocsp_total{answer="good"} 2.0' in metrics
        assert pki.root_responder.requests == asked_of_root + 1
        assert 'interlace_http_refused_total{listener="facade",reason="certificate-revoked"} 1.0' in metrics
        assert "OCSP: no answer for the client certificate CN=partner-unreachable,O=Example Partners " \
               "(the responder http://127.0.0.1:" in engine.log()
        assert "refused (hard-fail)" in engine.log()


def test_soft_fail_serves_unknown_and_unreachable_but_never_revoked(pki: Pki, tmp_path: Path) -> None:
    with run_engine(write_flows(tmp_path, FLOWS), *_args(pki, "--tls-ocsp", "soft-fail")) as engine:
        assert _get(pki, engine, pki.unknown).json()["cn"] == "partner-unknown"
        assert _get(pki, engine, pki.unreachable).json()["cn"] == "partner-unreachable"
        assert _problem(_get(pki, engine, pki.revoked)) == (403, "certificate-revoked")
        log = engine.log()
        assert "the responder does not know the client certificate CN=partner-unknown" in log
        assert "OCSP: no answer for the client certificate CN=partner-unreachable" in log
        assert log.count("served (soft-fail)") == 2
        assert 'interlace_tls_ocsp_total{answer="failed"} 1.0' in _metrics(engine)


def test_an_answer_is_cached_until_its_next_update(pki: Pki, tmp_path: Path) -> None:
    """The responder is asked once for a certificate, however many connections it makes, and a
    cached good answer serves after the responder has gone."""
    folder = tmp_path / "pki"
    folder.mkdir()
    own = OcspResponder(pki.issuing, folder)
    first, second = (pki.issuing.issue(cn, ocsp_url=own.url) for cn in ("partner-first", "partner-second"))
    own.write_index((first, second))
    own.start()
    try:
        with run_engine(write_flows(tmp_path / "flows", FLOWS), *_args(pki, "--tls-ocsp", "hard-fail")) as engine:
            assert [_get(pki, engine, first).status_code for _ in range(3)] == [200, 200, 200]
            assert own.requests == 1
            own.stop()
            assert _get(pki, engine, first).json()["cn"] == "partner-first"  # from the cache
            # the responder is down indeed: a certificate it was never asked about is refused
            assert _problem(_get(pki, engine, second)) == (503, "certificate-status-unavailable")
            assert own.requests == 1
    finally:
        own.stop()


def _answer(pki: Pki, who: Issued, signer: Issued, *, this_update: datetime.datetime,
            next_update: datetime.datetime) -> bytes:
    """A DER answer saying ``who`` is good, signed by ``signer``'s key (not by OpenSSL)."""
    key = load_pem_private_key(signer.key.read_bytes(), None)
    builder = (ocsp.OCSPResponseBuilder()
               .add_response(who.certificate, pki.issuing.ca.certificate, hashes.SHA1(), ocsp.OCSPCertStatus.GOOD,
                             this_update, next_update, None, None)
               .responder_id(ocsp.OCSPResponderEncoding.NAME, signer.certificate).certificates([signer.certificate]))
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)  # type: ignore[arg-type]


def test_forged_and_stale_answers_are_refused(pki: Pki, tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    folder.mkdir()
    own = OcspResponder(pki.issuing, folder)
    forged_for, stale_for = (pki.issuing.issue(cn, ocsp_url=own.url) for cn in ("partner-forged", "partner-stale"))
    own.write_index((forged_for, stale_for))
    # an impostor: a responder certificate with the real one's name and the OCSP-signing usage,
    # from a CA the facade does not know
    impostor = Authority(folder, "Issuing CA").issue("ocsp-responder", usage=ExtendedKeyUsageOID.OCSP_SIGNING)
    now = datetime.datetime.now(datetime.UTC)
    with running(own), run_engine(write_flows(tmp_path / "flows", FLOWS),
                                  *_args(pki, "--tls-ocsp", "hard-fail")) as engine:
        own.forge = _answer(pki, forged_for, impostor, this_update=now,
                            next_update=now + datetime.timedelta(hours=1))
        assert _problem(_get(pki, engine, forged_for)) == (503, "certificate-status-unavailable")
        wait_for(lambda: "responder certificate is not signed by the certificate's issuer" in engine.log(),
                 "the forgery logged")
        # the real responder's key, but an answer whose nextUpdate passed an hour ago
        own.forge = _answer(pki, stale_for, own.signer, this_update=now - datetime.timedelta(hours=2),
                            next_update=now - datetime.timedelta(hours=1))
        assert _problem(_get(pki, engine, stale_for)) == (503, "certificate-status-unavailable")
        wait_for(lambda: "the answer is stale: its nextUpdate" in engine.log(), "the stale answer logged")
        assert own.requests == 2
        # the same certificates, answered by OpenSSL once the failure's 5 s have passed
        own.forge = None
        wait_for(lambda: _get(pki, engine, stale_for).status_code == 200, "the stale answer replaced", timeout=20)


def test_configuration_errors_stop_the_start(pki: Pki, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.support.engine import REPO

    flows = write_flows(tmp_path, FLOWS)
    for args, message in [
        (["--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key), "--tls-ocsp", "hard-fail"],
         "--tls-ocsp needs --tls-client-ca and client certificates"),
        (_args(pki, "--tls-ocsp", "soft-fail", "--tls-ocsp-responder", "ftp://127.0.0.1/"),
         "--tls-ocsp-responder 'ftp://127.0.0.1/': an http:// (or https://) URL"),
        (_args(pki), "--tls-ocsp-timeout needs --tls-ocsp (hard-fail or soft-fail)"),
        (_args(pki, "--tls-ocsp", "hard-fail", "--tls-ocsp-scope", "all"), "--tls-ocsp-scope: invalid choice"),
    ]:
        done = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(flows), "--port", "0",
                               "--management-port", "0", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
        assert "Traceback" not in done.stderr


def test_settings_tls_ocsp_and_a_reload_that_changes_the_policy(pki: Pki, tmp_path: Path) -> None:
    """settings.tls.ocsp with the files in the flow folder; a reload to soft-fail applies to new
    connections without a restart (OCSP is the engine's, not the listener's)."""
    flows = tmp_path / "flows"
    (flows / "tls").mkdir(parents=True)
    for name, source in (("facade.crt", pki.server.cert), ("facade.key", pki.server.key),
                         ("clients.pem", pki.client_ca)):
        (flows / "tls" / name).write_bytes(source.read_bytes())

    def settings(policy: str) -> None:
        write_flows(flows, FLOWS + f"""
settings:
  tls: {{cert: tls/facade.crt, key: tls/facade.key, client_ca: tls/clients.pem, ocsp: {policy}, ocsp_timeout: 2}}
""")

    settings("hard-fail")
    with run_engine(flows) as engine:
        assert _get(pki, engine, pki.good).json()["cn"] == "partner-good"
        assert _problem(_get(pki, engine, pki.unknown)) == (403, "certificate-status-unknown")
        settings("soft-fail")
        assert httpx.post(f"{engine.management_url}/reload", timeout=30).status_code == 200
        assert _get(pki, engine, pki.unknown).json()["cn"] == "partner-unknown"
        assert _problem(_get(pki, engine, pki.revoked)) == (403, "certificate-revoked")
        assert "takes a restart" not in engine.log()


def test_an_answer_arriving_in_pieces_is_read_whole(pki: Pki, tmp_path: Path) -> None:
    """A responder (or a proxy before it) that sends its answer in two writes a moment apart:
    the whole answer is read, the certificate served (a first read alone cut it in half, and
    hard-fail refused a good certificate 503)."""
    folder = tmp_path / "pki"
    folder.mkdir()
    own = OcspResponder(pki.issuing, folder)
    partner = pki.issuing.issue("partner-slow-answer", ocsp_url=own.url)
    own.write_index((partner,))
    own.pause_mid_answer = 0.2
    with running(own), run_engine(write_flows(tmp_path / "flows", FLOWS),
                                  *_args(pki, "--tls-ocsp", "hard-fail")) as engine:
        answer = _get(pki, engine, partner)
        assert answer.status_code == 200, answer.text
        assert answer.json()["cn"] == "partner-slow-answer"


def test_garbage_and_huge_answers_are_a_failed_lookup(pki: Pki, tmp_path: Path) -> None:
    folder = tmp_path / "pki"
    folder.mkdir()
    own = OcspResponder(pki.issuing, folder)
    garbage, huge = (pki.issuing.issue(cn, ocsp_url=own.url) for cn in ("partner-garbage", "partner-huge"))
    own.write_index((garbage, huge))
    with running(own), run_engine(write_flows(tmp_path / "flows", FLOWS),
                                  *_args(pki, "--tls-ocsp", "hard-fail")) as engine:
        own.forge = b"<html>not an OCSP answer</html>"
        assert _problem(_get(pki, engine, garbage)) == (503, "certificate-status-unavailable")
        own.forge = b"\x30" * (1024 * 1024)
        assert _problem(_get(pki, engine, huge)) == (503, "certificate-status-unavailable")
        wait_for(lambda: "answered more than 65536 bytes" in engine.log(), "the huge answer logged")
        assert "Traceback" not in engine.log()


def test_a_responder_url_with_credentials_keeps_them_out_of_the_log(pki: Pki, tmp_path: Path) -> None:
    """--tls-ocsp-responder http://user:password@host/ (a responder behind basic auth): a failed
    lookup's log line names the responder without its password (it was written out whole)."""
    responder = f"http://ocsp-reader:s3cret-pass@127.0.0.1:{free_port()}/"
    with run_engine(write_flows(tmp_path, FLOWS), *_args(pki, "--tls-ocsp", "soft-fail", "--tls-ocsp-responder",
                                                         responder)) as engine:
        assert _get(pki, engine, pki.good).json()["cn"] == "partner-good"
        wait_for(lambda: "OCSP: no answer for the client certificate CN=partner-good" in engine.log(),
                 "the failed lookup logged")
        assert "s3cret-pass" not in engine.log()
        assert "http://ocsp-reader:***@127.0.0.1:" in engine.log()
    for args in (["--tls-ocsp-responder", "ftp://ocsp-reader:s3cret-pass@127.0.0.1/"],):
        import subprocess
        import sys

        from tests.support.engine import REPO

        done = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(tmp_path), "--port", "0",
                               "--management-port", "0", *_args(pki, "--tls-ocsp", "soft-fail", *args)],
                              cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "an http:// (or https://) URL" in done.stderr, done.stderr
        assert "s3cret-pass" not in done.stderr


def test_a_certificate_whose_status_can_never_be_asked_is_403_not_a_503_to_retry(pki: Pki, tmp_path: Path) -> None:
    """No responder in its Authority Information Access and none configured: under hard-fail it
    is refused as uncheckable, without the Retry-After that would have the caller retry forever."""
    silent = pki.issuing.issue("partner-no-aia")
    with run_engine(write_flows(tmp_path, FLOWS), *_args(pki, "--tls-ocsp", "hard-fail")) as engine:
        answer = _get(pki, engine, silent)
        assert _problem(answer) == (403, "certificate-status-uncheckable")
        assert "retry-after" not in answer.headers
        assert "names no" in answer.json()["detail"]
        assert _get(pki, engine, pki.good).status_code == 200


def test_a_good_answer_is_believed_no_longer_than_the_cap(pki: Pki, tmp_path: Path) -> None:
    """A responder whose nextUpdate is an hour ahead is asked again once the cap has passed (an
    hour in the engine, half a second here), so a revocation is not hidden until its nextUpdate."""
    folder = tmp_path / "pki"
    folder.mkdir()
    own = OcspResponder(pki.issuing, folder, next_update_minutes=60)
    partner = pki.issuing.issue("partner-capped", ocsp_url=own.url)
    own.write_index((partner,))
    peer = Peer.of(partner.certificate.public_bytes(Encoding.DER), ClientCAs(pki.client_ca.read_bytes()))

    async def twice(checker: OcspChecker) -> list[object]:
        verdicts = []
        for _ in range(2):
            verdict = checker.verdict(peer)
            verdicts.append(await verdict if isinstance(verdict, asyncio.Future) else verdict)
            await asyncio.sleep(0.6)
        return verdicts

    with running(own):
        assert asyncio.run(twice(OcspChecker(OcspSettings("hard-fail"), max_kept=0.5))) == [None, None]
        assert own.requests == 2  # the second connection asked again: the cap had passed
        assert asyncio.run(twice(OcspChecker(OcspSettings("hard-fail")))) == [None, None]
        assert own.requests == 3  # the default cap (an hour): the second one was answered from the cache


def test_a_revoked_intermediate_ca_refuses_its_clients_unless_the_scope_is_leaf(pki: Pki, tmp_path: Path) -> None:
    """The root's responder says an intermediate CA is revoked: its client, good in its own
    responder's eyes, is refused 403 under both policies (the default chain scope, as nginx's
    ``ssl_ocsp on``); an intermediate that names no responder is uncheckable under hard-fail;
    ``--tls-ocsp-scope leaf`` asks about the client's certificate alone and serves both."""
    folder = tmp_path / "pki"
    for sub in ("root", "revoked", "silent"):
        (folder / sub).mkdir(parents=True)
    root = Authority(folder, "Other Root", path_length=1, key_ids=True)
    root_responder = OcspResponder(root, folder / "root")
    revoked_ca = root.intermediate("Revoked Issuing CA", ocsp_url=root_responder.url)
    silent_ca = root.intermediate("Silent Issuing CA")  # no Authority Information Access
    root_responder.write_index((), (revoked_ca.ca,))
    revoked_responder = OcspResponder(revoked_ca, folder / "revoked")
    silent_responder = OcspResponder(silent_ca, folder / "silent")
    below_revoked = revoked_ca.issue("partner-below-revoked", ocsp_url=revoked_responder.url)
    below_silent = silent_ca.issue("partner-below-silent", ocsp_url=silent_responder.url)
    revoked_responder.write_index((below_revoked,))
    silent_responder.write_index((below_silent,))
    client_ca = folder / "clients.pem"
    client_ca.write_bytes(revoked_ca.ca.cert.read_bytes() + silent_ca.ca.cert.read_bytes() + root.ca.cert.read_bytes())

    def args(*more: str) -> list[str]:
        return ["--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key), "--tls-client-ca",
                str(client_ca), "--tls-ocsp-timeout", "2", *more]

    flows = write_flows(tmp_path / "flows", FLOWS)
    with running(root_responder), running(revoked_responder), running(silent_responder):
        with run_engine(flows, *args("--tls-ocsp", "hard-fail")) as engine:
            refused = _get(pki, engine, below_revoked)
            assert _problem(refused) == (403, "certificate-revoked")
            assert refused.json()["detail"] == (
                "a CA certificate of the client certificate's chain is revoked (CN=Revoked Issuing CA,"
                "O=Example Partners): its issuer's OCSP responder says so")
            silent = _get(pki, engine, below_silent)
            assert _problem(silent) == (403, "certificate-status-uncheckable")
            assert "CN=Silent Issuing CA" in silent.json()["detail"]
            assert "retry-after" not in silent.headers
            assert _problem(_get(pki, engine, below_revoked)) == (403, "certificate-revoked")  # from the cache
            assert root_responder.requests == 1
            assert (revoked_responder.requests, silent_responder.requests) == (1, 1)  # the leaves: good
            assert "OCSP: the client's CA certificate CN=Revoked Issuing CA,O=Example Partners (serial " in engine.log()
        with run_engine(flows, *args("--tls-ocsp", "soft-fail")) as engine:
            assert _problem(_get(pki, engine, below_revoked)) == (403, "certificate-revoked")
            assert _get(pki, engine, below_silent).json()["cn"] == "partner-below-silent"
        with run_engine(flows, *args("--tls-ocsp", "hard-fail", "--tls-ocsp-scope", "leaf")) as engine:
            assert _get(pki, engine, below_revoked).json()["cn"] == "partner-below-revoked"
            assert _get(pki, engine, below_silent).json()["chain"] == [
                "CN=partner-below-silent,O=Example Partners", "CN=Silent Issuing CA,O=Example Partners",
                "CN=Other Root,O=Example Partners"]
    assert root_responder.requests == 2  # the soft-fail engine's; the leaf-scope one never asked the root


def test_the_workers_of_a_group_share_their_answers(pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two checkers with one shared folder, as two workers of a group have: the second takes the
    first's answers (good and revoked) from it and never asks the responder; a third without the
    folder (a lone engine) asks again."""
    import engine.ocsp

    folder = tmp_path / "pki"
    folder.mkdir()
    own = OcspResponder(pki.issuing, folder)
    good, revoked = (pki.issuing.issue(cn, ocsp_url=own.url) for cn in ("partner-shared", "partner-shared-revoked"))
    own.write_index((good,), (revoked,))
    cas = ClientCAs(pki.client_ca.read_bytes())
    peers = [Peer.of(issued.certificate.public_bytes(Encoding.DER), cas) for issued in (good, revoked)]

    async def verdicts(checker: OcspChecker) -> list[str | None]:
        out = []
        for peer in peers:
            verdict = checker.verdict(peer)
            settled = await verdict if isinstance(verdict, asyncio.Future) else verdict
            out.append(settled.code if settled is not None else None)
        return out

    monkeypatch.setattr(engine.ocsp, "_shared_folder", None)
    (tmp_path / "group").mkdir(mode=0o700)  # as the supervisor makes it
    engine.ocsp.share_answers_in(tmp_path / "group" / "ocsp")
    with running(own):
        assert asyncio.run(verdicts(OcspChecker(OcspSettings(scope="leaf")))) == [None, "certificate-revoked"]
        assert own.requests == 2
        assert asyncio.run(verdicts(OcspChecker(OcspSettings(scope="leaf")))) == [None, "certificate-revoked"]
        assert own.requests == 2  # from the shared folder
        assert (tmp_path / "group" / "ocsp").stat().st_mode & 0o777 == 0o700
        monkeypatch.setattr(engine.ocsp, "_shared_folder", None)
        assert asyncio.run(verdicts(OcspChecker(OcspSettings(scope="leaf")))) == [None, "certificate-revoked"]
        assert own.requests == 4


def test_two_workers_ask_the_responder_once_per_certificate(pki: Pki, tmp_path: Path) -> None:
    """--workers 2: twenty connections, which the two workers take between them, and one request
    to the responder (each worker asked for itself before the answers were shared)."""
    from tests.support.engine import wait_for_workers

    folder = tmp_path / "pki"
    folder.mkdir()
    own = OcspResponder(pki.issuing, folder)
    partner = pki.issuing.issue("partner-of-two-workers", ocsp_url=own.url)
    own.write_index((partner,))
    with running(own), run_engine(write_flows(tmp_path / "flows", FLOWS),
                                  *_args(pki, "--tls-ocsp", "hard-fail", "--tls-ocsp-scope", "leaf"),
                                  "--workers", "2") as engine:
        wait_for_workers(engine, 2)
        first = _get(pki, engine, partner)
        assert first.status_code == 200, first.text
        assert [_get(pki, engine, partner).status_code for _ in range(19)] == [200] * 19
        assert own.requests == 1
        assert 'interlace_tls_ocsp_total{answer="good"} 1.0' in _metrics(engine)
