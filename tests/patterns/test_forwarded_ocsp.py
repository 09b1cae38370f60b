"""OCSP of a client certificate forwarded by a proxy that terminates TLS: Debian's nginx on
127.0.0.1 verifies the partners' certificates and forwards them ($ssl_client_escaped_cert) to a
real engine, which asks OpenSSL's responders (tests/support/ocsp.py) about them and about the
intermediate CA above them (``proxy_headers.client_cert.ocsp``).  XFCC headers with a ``Chain``,
and with neither Cert nor Chain, are checked in process against the same responders."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from engine.loader import LoadErrors, load_project
from tests.support.engine import RunningEngine, run_engine, write_flows
from tests.support.nginx import Nginx, nginx
from tests.support.ocsp import OcspResponder, running
from tests.support.pki import Authority, Issued

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Pki:
    root: Authority
    issuing: Authority
    fallen: Authority  # an intermediate CA the root's responder says is revoked
    gateway: Issued
    ca_file: Path  # both intermediates and the root: what nginx verifies against, and the engine's ca
    root_only: Path
    good: Issued
    revoked: Issued
    below_fallen: Issued
    issuing_responder: OcspResponder


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    folder = tmp_path_factory.mktemp("pki")
    for sub in ("root", "issuing", "fallen"):
        (folder / sub).mkdir()
    root = Authority(folder, "Partners Root", path_length=1, key_ids=True)
    root_responder = OcspResponder(root, folder / "root")
    issuing = root.intermediate("Issuing CA", ocsp_url=root_responder.url)
    fallen = root.intermediate("Fallen CA", ocsp_url=root_responder.url)
    root_responder.write_index((issuing.ca,), (fallen.ca,))
    issuing_responder = OcspResponder(issuing, folder / "issuing")
    fallen_responder = OcspResponder(fallen, folder / "fallen")
    good = issuing.issue("partner-good", ocsp_url=issuing_responder.url)
    revoked = issuing.issue("partner-revoked", ocsp_url=issuing_responder.url)
    below_fallen = fallen.issue("partner-below-fallen", ocsp_url=fallen_responder.url)
    issuing_responder.write_index((good,), (revoked,))
    fallen_responder.write_index((below_fallen,))
    ca_file = folder / "partners.pem"
    ca_file.write_bytes(issuing.ca.cert.read_bytes() + fallen.ca.cert.read_bytes() + root.ca.cert.read_bytes())
    root_only = folder / "root.pem"
    root_only.write_bytes(root.ca.cert.read_bytes())
    with running(root_responder), running(issuing_responder), running(fallen_responder):
        yield Pki(root, issuing, fallen, root.issue("gateway", server=True), ca_file, root_only, good, revoked,
                  below_fallen, issuing_responder)


def _flows(folder: Path, ca: Path, header: str, form: str, policy: str = "hard-fail") -> Path:
    (folder / "tls").mkdir(parents=True, exist_ok=True)
    (folder / "tls" / "partners.pem").write_bytes(ca.read_bytes())
    return write_flows(folder, f"""
settings:
  http:
    proxy_headers:
      trusted: [127.0.0.1]
      client_cert: {{header: {header}, format: {form}, ocsp: {policy}, ca: tls/partners.pem, ocsp_timeout: 2}}
flows:
  whoami:
    source: {{http: {{method: GET, path: /whoami}}}}
    steps:
      - authenticate: {{client_cert: {{subject: {{O: Example Partners}}}}}}
      - respond: {{json: {{cn: "${{auth.common_name}}", source: "${{auth.source}}"}}}}
""")


@dataclass
class Stack:
    engine: RunningEngine
    gateway: Nginx


@pytest.fixture(scope="module")
def stack(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """nginx verifying the partners' chains (depth 2: leaf, intermediate, root) and forwarding the
    certificate as URL-encoded PEM to an engine checking it under hard-fail."""
    folder = _flows(tmp_path_factory.mktemp("flows"), pki.ca_file, "X-SSL-Client-Cert", "pem")
    with run_engine(folder) as engine, nginx(folder / "nginx", f"""
    ssl_certificate {pki.gateway.cert};
    ssl_certificate_key {pki.gateway.key};
    ssl_client_certificate {pki.ca_file};
    ssl_verify_client on;
    ssl_verify_depth 2;
    location / {{
      proxy_pass http://127.0.0.1:{engine.port};
      proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;
    }}
""") as gateway:
        yield Stack(engine, gateway)


def _through_nginx(pki: Pki, stack: Stack, who: Issued) -> httpx.Response:
    context = ssl.create_default_context(cafile=str(pki.root.ca.cert))
    context.load_cert_chain(who.cert, who.key)
    with httpx.Client(base_url=stack.gateway.url, verify=context, timeout=15) as client:
        return client.get("/whoami")


def _problem(answer: httpx.Response) -> tuple[int, str]:
    assert answer.headers["content-type"] == "application/problem+json", answer.text
    return answer.status_code, str(answer.json()["type"]).rsplit("/", 1)[-1]


def test_a_revoked_forwarded_certificate_is_refused_and_a_good_one_served(pki: Pki, stack: Stack) -> None:
    asked = pki.issuing_responder.requests
    assert [_through_nginx(pki, stack, pki.good).json() for _ in range(3)] == \
        [{"cn": "partner-good", "source": "forwarded"}] * 3
    assert pki.issuing_responder.requests == asked + 1  # once for the certificate, not per request
    refused = _through_nginx(pki, stack, pki.revoked)
    assert _problem(refused) == (403, "certificate-revoked")
    assert refused.json()["detail"] == "the client certificate is revoked: its CA's OCSP responder says so"
    below = _through_nginx(pki, stack, pki.below_fallen)
    assert _problem(below) == (403, "certificate-revoked")
    assert "(CN=Fallen CA,O=Example Partners)" in below.json()["detail"]
    metrics = httpx.get(f"{stack.engine.management_url}/metrics", timeout=10).text
    assert 'interlace_http_refused_total{listener="facade",reason="certificate-revoked"} 2.0' in metrics
    assert 'interlace_tls_ocsp_total{answer="revoked"} 2.0' in metrics  # partner-revoked and the Fallen CA


def _pem(issued: Issued | Authority) -> str:
    certificate = issued.ca.certificate if isinstance(issued, Authority) else issued.certificate
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


async def _whoami(folder: Path, header: str) -> httpx.Response:
    from engine.app import create_app

    app = create_app(folder)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
                                 base_url="http://facade") as client:
        return await client.get("/whoami", headers={"X-Forwarded-Client-Cert": header})


async def test_an_xfcc_chain_gives_the_issuers_the_ca_file_lacks(pki: Pki, tmp_path: Path) -> None:
    """ca holds the root alone; Envoy's Chain carries the intermediate: the Fallen CA is found
    there, asked about of the root's responder, and its client refused."""
    folder = _flows(tmp_path / "flows", pki.root_only, "X-Forwarded-Client-Cert", "xfcc")
    fallen = f'By=spiffe://gateway;Cert="{quote(_pem(pki.below_fallen))}";' \
             f'Chain="{quote(_pem(pki.below_fallen) + _pem(pki.fallen))}"'
    refused = await _whoami(folder, fallen)
    assert _problem(refused) == (403, "certificate-revoked")
    assert "(CN=Fallen CA,O=Example Partners)" in refused.json()["detail"]
    good = f'By=spiffe://gateway;Chain="{quote(_pem(pki.good) + _pem(pki.issuing))}"'  # Chain alone: its first
    served = await _whoami(folder, good)
    assert served.json() == {"cn": "partner-good", "source": "forwarded"}
    # without the Chain the Issuing CA is not known here: no OCSP request can name its issuer (a
    # certificate already answered about, as partner-good now is, is served from the cache)
    lone = await _whoami(folder, f'By=spiffe://gateway;Cert="{quote(_pem(pki.revoked))}"')
    assert _problem(lone) == (403, "certificate-status-uncheckable")
    assert (await _whoami(folder, f'By=spiffe://gateway;Cert="{quote(_pem(pki.good))}"')).status_code == 200
    # ca holds another root: the Chain's Issuing CA tops the chain without being a root, and
    # nothing known vouches for it: it is not taken for a trust anchor but is uncheckable
    (tmp_path / "other").mkdir()
    other_root = tmp_path / "other" / "other-root.pem"
    other_root.write_bytes(Authority(tmp_path / "other", "Other Root").ca.cert.read_bytes())
    elsewhere = _flows(tmp_path / "elsewhere", other_root, "X-Forwarded-Client-Cert", "xfcc")
    unanchored = await _whoami(elsewhere, good)
    assert _problem(unanchored) == (403, "certificate-status-uncheckable")
    assert "(CN=Issuing CA,O=Example Partners)" in unanchored.json()["detail"]


async def test_a_header_without_a_certificate_is_uncheckable_under_hard_fail_only(pki: Pki, tmp_path: Path) -> None:
    """Istio's default XFCC (Subject, URI, Hash; no Cert): nothing to ask a responder about."""
    header = 'By=spiffe://gateway;Hash=abcd;Subject="CN=partner-c,O=Example Partners";URI=spiffe://p/partner-c'
    hard = _flows(tmp_path / "hard", pki.ca_file, "X-Forwarded-Client-Cert", "xfcc")
    refused = await _whoami(hard, header)
    assert _problem(refused) == (403, "certificate-status-uncheckable")
    assert "retry-after" not in refused.headers
    soft = _flows(tmp_path / "soft", pki.ca_file, "X-Forwarded-Client-Cert", "xfcc", policy="soft-fail")
    assert (await _whoami(soft, header)).json() == {"cn": "partner-c", "source": "forwarded"}


@pytest.mark.parametrize(("client_cert", "message", "where"), [
    ("{header: X-SSL-Client-Cert, format: pem, ocsp: hard-fail}", "ocsp needs ca: the PEM CA certificates", "5:67"),
    ("{header: X-SSL-Client-Cert, ca: tls/partners.pem}", "ca needs ocsp (hard-fail or soft-fail)", "5:52"),
    ("{header: X-SSL-Client-Cert, ocsp: soft-fail, ca: tls/missing.pem}", "ca tls/missing.pem: no such file", "5:69"),
    ("{header: X-SSL-Client-Cert, ocsp: soft-fail, ca: flows.yaml}", "ca flows.yaml: no PEM certificate", "5:69"),
])
def test_ocsp_settings_of_a_forwarded_certificate_that_cannot_serve_are_load_errors(
        pki: Pki, tmp_path: Path, client_cert: str, message: str, where: str) -> None:
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "partners.pem").write_bytes(pki.ca_file.read_bytes())
    write_flows(tmp_path, f"""
settings:
  http:
    proxy_headers:
      trusted: [127.0.0.1]
      client_cert: {client_cert}
flows:
  f:
    source: {{http: {{path: /f}}}}
    steps:
      - respond: {{json: {{}}}}
""")
    with pytest.raises(LoadErrors) as caught:
        load_project(tmp_path)
    text = str(caught.value)
    assert message in text, text
    assert f"flows.yaml:{where}:" in text, text
