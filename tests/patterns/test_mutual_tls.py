"""Mutual TLS on the facade port: a real `interlace run` over TLS on loopback, with a CA and client
certificates made by the test; the certificate's subject, issuer, serial, SANs and fingerprint in
${tls.*} and ${auth.*}; 401/403 problem+json from authenticate: {client_cert: ...}."""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.support.engine import REPO, RunningEngine, facade_client, run_engine, write_flows
from tests.support.pki import Authority, Issued

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Pki:
    ca: Authority
    server: Issued
    partner_a: Issued
    partner_b: Issued
    stranger: Issued  # signed by another CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = Authority(folder)
    other = Authority(folder, name="Other CA", organisation="Example Partners")
    return Pki(ca, ca.issue("facade", server=True),
               ca.issue("partner-a", sans=[x509.DNSName("partner-a.example.com"),
                                           x509.UniformResourceIdentifier("spiffe://example.com/partner-a")]),
               ca.issue("partner-b"), other.issue("stranger"))


FLOWS = """
flows:
  whoami:
    source: {http: {method: GET, path: /whoami}}
    steps:
      - authenticate: {client_cert: {subject: {O: Example Partners, CN: [partner-a]}}}
      - respond:
          json: {subject: "${auth.subject}", cn: "${auth.common_name}", issuer: "${auth.issuer}",
                 serial: "${auth.serial}", sans: "${auth.sans}", fingerprint: "${auth.fingerprint}",
                 method: "${auth.method}", version: "${tls.version}"}
  by-san:
    source: {http: {method: GET, path: /by-san}}
    steps:
      - authenticate: {client_cert: {sans: ["spiffe://example.com/partner-a"]}}
      - respond: {json: {ok: true}}
  pinned:
    source: {http: {method: GET, path: /pinned}}
    steps:
      - authenticate: {client_cert: {fingerprints: ["PIN"]}}
      - respond: {json: {cn: "${auth.common_name}"}}
  open:
    source: {http: {method: GET, path: /open}}
    steps:
      - respond: {json: {subject: "${tls.subject}", version: "${tls.version}", tls: "${tls != `null`}"}}
"""


def _flows(folder: Path, pki: Pki) -> Path:
    pin = ":".join(pki.partner_b.fingerprint.upper()[i:i + 2] for i in range(0, 64, 2))  # colons, upper case
    return write_flows(folder, FLOWS.replace("PIN", pin))


def _client(pki: Pki, engine: RunningEngine, who: Issued | None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(pki.ca.ca.cert))
    if who is not None:
        context.load_cert_chain(who.cert, who.key)
    return httpx.Client(base_url=f"https://127.0.0.1:{engine.port}", verify=context, timeout=10)


def _tls_args(pki: Pki, mode: str) -> list[str]:
    return ["--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key),
            "--tls-client-ca", str(pki.ca.ca.cert), "--tls-client-cert", mode]


@pytest.fixture(scope="module")
def optional_engine(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    with run_engine(_flows(tmp_path_factory.mktemp("optional"), pki), *_tls_args(pki, "optional")) as engine:
        yield engine


def test_the_certificate_is_in_tls_and_auth(pki: Pki, optional_engine: RunningEngine) -> None:
    with _client(pki, optional_engine, pki.partner_a) as client:
        answers = [client.get("/whoami") for _ in range(3)]  # one connection, kept alive: each request has it
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[0].json() == {
        "subject": "CN=partner-a,O=Example Partners", "cn": "partner-a",
        "issuer": "CN=Test CA,O=Example Partners", "serial": pki.partner_a.serial,
        "sans": ["partner-a.example.com", "spiffe://example.com/partner-a"],
        "fingerprint": pki.partner_a.fingerprint, "method": "client_cert", "version": "TLSv1.3",
    }
    assert "facade on https://127.0.0.1" in optional_engine.log()


def test_no_certificate_is_401_and_another_subject_403(pki: Pki, optional_engine: RunningEngine) -> None:
    with _client(pki, optional_engine, None) as client:
        missing = client.get("/whoami")
        open_route = client.get("/open")
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["detail"] == "this route needs a client certificate, and the connection presented none"
    assert open_route.json() == {"subject": None, "version": "TLSv1.3", "tls": True}
    with _client(pki, optional_engine, pki.partner_b) as client:
        other = client.get("/whoami")
        by_san = client.get("/by-san")
        pinned = client.get("/pinned")
    assert (other.status_code, other.json()["detail"]) == (
        403, "the client certificate's subject (CN) is not allowed on this route")
    assert other.headers["content-type"] == "application/problem+json"
    assert by_san.status_code == 403
    assert (pinned.status_code, pinned.json()) == (200, {"cn": "partner-b"})
    with _client(pki, optional_engine, pki.partner_a) as client:
        assert client.get("/by-san").status_code == 200
        assert client.get("/pinned").status_code == 403


def test_a_certificate_of_another_ca_fails_the_handshake(pki: Pki, optional_engine: RunningEngine) -> None:
    with _client(pki, optional_engine, pki.stranger) as client, pytest.raises(httpx.TransportError):
        client.get("/open")
    with _client(pki, optional_engine, None) as client:  # the engine serves on
        assert client.get("/open").status_code == 200


def test_required_client_certificates_and_a_project_policy(pki: Pki, tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", """
        settings:
          policies:
            - authenticate: {client_cert: {issuer: {CN: Test CA}}}
        flows:
          hello:
            source: {http: {method: GET, path: /hello}}
            steps:
              - respond: {json: {hello: "${auth.common_name}"}}
    """)
    with run_engine(folder, *_tls_args(pki, "required")) as engine:
        with _client(pki, engine, pki.partner_b) as client:
            assert client.get("/hello").json() == {"hello": "partner-b"}
        with _client(pki, engine, None) as client, pytest.raises(httpx.TransportError):
            client.get("/hello")  # required: no handshake without a certificate
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{engine.port}/hello", timeout=5)  # plain HTTP on the TLS port
        with _client(pki, engine, pki.partner_a) as client:
            assert client.get("/hello").status_code == 200


async def test_over_plain_http_the_route_answers_401_not_500(pki: Pki, tmp_path: Path) -> None:
    async with facade_client(_flows(tmp_path / "flows", pki)) as client:
        answer = await client.get("/whoami")
        open_route = await client.get("/open")
    assert answer.status_code == 401
    assert answer.json()["detail"].startswith("this route needs a client certificate: connect over TLS")
    assert open_route.json() == {"subject": None, "version": None, "tls": False}


@pytest.mark.parametrize(("args", "message"), [
    (["--tls-client-ca", "ca.pem"], "--tls-key, --tls-client-ca and --tls-crl need --tls-cert"),
    (["--tls-cert", "SERVER", "--tls-crl", "KEY"], "--tls-crl needs --tls-client-ca"),
    (["--tls-cert", "SERVER", "--tls-key", "KEY", "--tls-client-ca", "CA", "--tls-crl", "CA"],
     "no PEM CRL in the file"),
    (["--tls-cert", "SERVER", "--tls-client-cert", "required"], "--tls-client-cert required needs --tls-client-ca"),
    (["--tls-cert", "/nonexistent/server.pem"], "--tls-cert /nonexistent/server.pem: no such file"),
    (["--tls-cert", "SERVER", "--tls-key", "OTHERKEY"], "--tls-cert/--tls-key: cannot use"),
    (["--tls-cert", "SERVER", "--tls-key", "KEY", "--tls-client-ca", "KEY"], "--tls-client-ca"),
])
def test_bad_tls_options_are_one_line(pki: Pki, tmp_path: Path, args: list[str], message: str) -> None:
    folder = write_flows(tmp_path / "flows", "flows: {}\n")
    files = {"SERVER": pki.server.cert, "OTHERKEY": pki.partner_a.key, "KEY": pki.server.key, "CA": pki.ca.ca.cert}
    args = [str(files.get(a, a)) for a in args]
    done = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(folder), "--port", "0", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_the_openapi_export_declares_mutual_tls(pki: Pki, tmp_path: Path) -> None:
    from openapi_spec_validator import validate

    from deploy.openapi import openapi_document
    from engine.loader import load_project

    document = openapi_document(load_project(_flows(tmp_path / "flows", pki)))
    validate(document)
    assert document["components"]["securitySchemes"]["mutualTLS"]["type"] == "mutualTLS"
    assert document["paths"]["/whoami"]["get"]["security"] == [{"mutualTLS": []}]
    assert "security" not in document["paths"]["/open"]["get"]


def test_the_manifests_mount_the_certificates_from_a_secret(pki: Pki, tmp_path: Path) -> None:
    import kubernetes_validate

    from tests.deploy.test_manifests import KUBERNETES_VERSION, interlace, kustomize

    out = tmp_path / "k8s"
    done = interlace("k8s", str(_flows(tmp_path / "flows", pki)), "--image", "127.0.0.1:5000/facade:1",
                     "--out", str(out), "--tls-secret", "facade-tls", "--tls-client-cert", "optional",
                     "--tls-crl", "--tls-ocsp", "soft-fail", "--tls-ocsp-scope", "leaf")
    assert done.returncode == 0, done.stderr
    assert "kubectl create secret generic facade-tls --from-file=tls.crt=" in done.stdout
    assert "--from-file=ca.crl=clients.crl" in done.stdout
    resources = kustomize(out / "overlays" / "prod")
    for resource in resources:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    pod = next(r for r in resources if r["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "facade-tls", "defaultMode": 0o440}} in pod["volumes"]
    container = pod["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")
    env = {e["name"]: e.get("value") for e in container["env"]}
    # the files the Secret's keys become are what the runtime reads: serve from such a folder
    secret_dir = tmp_path / "mounted"
    secret_dir.mkdir()
    for key, source in (("tls.crt", pki.server.cert), ("tls.key", pki.server.key), ("ca.crt", pki.ca.ca.cert)):
        (secret_dir / key).write_bytes(source.read_bytes())
    pki.ca.crl(secret_dir / "ca.crl", (pki.partner_b,))
    assert env["INTERLACE_TLS_CLIENT_CERT"] == "optional"
    assert env["INTERLACE_TLS_CRL"] == f"{mount['mountPath']}/ca.crl"
    # partner_a names no OCSP responder: soft-fail serves it and says so
    assert env["INTERLACE_TLS_OCSP"] == "soft-fail"
    assert env["INTERLACE_TLS_OCSP_SCOPE"] == "leaf"
    local = {name: value.replace(mount["mountPath"], str(secret_dir)) for name, value in env.items()
             if name.startswith("INTERLACE_TLS_") and value}
    with run_engine(tmp_path / "flows", env=local) as engine:
        with _client(pki, engine, pki.partner_a) as client:
            assert client.get("/whoami").json()["cn"] == "partner-a"
        with _client(pki, engine, pki.partner_b) as client, pytest.raises(httpx.TransportError):
            client.get("/whoami")  # revoked by the Secret's ca.crl
        assert "names no OCSP responder" in engine.log()
    refused = interlace("k8s", str(tmp_path / "flows"), "--image", "127.0.0.1:5000/facade:1", "--out", str(out),
                        "--tls-ocsp", "hard-fail")
    assert refused.returncode == 2
    assert "--tls-ocsp and --tls-ocsp-responder need --tls-secret with client certificates" in refused.stderr
