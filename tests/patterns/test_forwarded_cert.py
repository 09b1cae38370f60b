"""A client certificate forwarded by a gateway that terminates TLS: Debian's nginx on 127.0.0.1
verifies the client's certificate (a CA made by the test) and passes it to a real engine in a
header; the engine believes it from the trusted proxy address only.  Envoy's
X-Forwarded-Client-Cert variants are also checked in process (no Envoy here)."""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.engine import RunningEngine, run_engine, write_flows
from tests.support.nginx import Nginx, nginx
from tests.support.pki import Authority, Issued

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Pki:
    ca: Authority
    gateway: Issued
    partner_a: Issued
    partner_b: Issued
    stranger: Issued  # signed by another CA: nginx refuses it


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = Authority(folder)
    return Pki(ca, ca.issue("gateway", server=True),
               ca.issue("partner-a", sans=[x509.UniformResourceIdentifier("spiffe://example.com/partner-a")]),
               ca.issue("partner-b"), Authority(folder, name="Other CA").issue("stranger"))


def _flows(header: str, form: str, trusted: str = "127.0.0.1") -> str:
    return f"""
settings:
  http:
    proxy_headers:
      trusted: [{trusted}]
      client_cert: {{header: {header}, format: {form}}}
flows:
  whoami:
    source: {{http: {{method: GET, path: /whoami}}}}
    steps:
      - authenticate: {{client_cert: {{subject: {{O: Example Partners}}}}}}
      - respond:
          json: {{cn: "${{auth.common_name}}", subject: "${{auth.subject}}", issuer: "${{auth.issuer}}",
                 serial: "${{auth.serial}}", sans: "${{auth.sans}}", fingerprint: "${{auth.fingerprint}}",
                 source: "${{auth.source}}", by: "${{auth.forwarded_by}}", version: "${{tls.version}}",
                 chain: "${{tls.chain}}"}}
  only-a:
    source: {{http: {{method: GET, path: /only-a}}}}
    steps:
      - authenticate: {{client_cert: {{subject: {{CN: partner-a}}}}}}
      - respond: {{json: {{ok: true}}}}
"""


def _gateway(pki: Pki, engine: RunningEngine, header: str, value: str) -> str:
    """nginx terminating TLS, verifying client certificates, forwarding ``value`` as ``header``."""
    return f"""
    ssl_certificate {pki.gateway.cert};
    ssl_certificate_key {pki.gateway.key};
    ssl_client_certificate {pki.ca.ca.cert};
    ssl_verify_client optional;
    location / {{
      proxy_pass http://127.0.0.1:{engine.port};
      proxy_set_header {header} {value};
    }}
"""


@dataclass
class Stack:
    engine: RunningEngine
    gateway: Nginx


@pytest.fixture(scope="module")
def nginx_pem(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """nginx forwarding $ssl_client_escaped_cert (URL-encoded PEM), as its docs suggest."""
    folder = write_flows(tmp_path_factory.mktemp("pem"), _flows("X-SSL-Client-Cert", "pem"))
    with run_engine(folder) as engine, \
            nginx(folder / "nginx", _gateway(pki, engine, "X-SSL-Client-Cert", "$ssl_client_escaped_cert")) as gw:
        yield Stack(engine, gw)


@pytest.fixture(scope="module")
def nginx_xfcc(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """nginx writing Envoy's X-Forwarded-Client-Cert shape (By, Cert, Subject)."""
    folder = write_flows(tmp_path_factory.mktemp("xfcc"), _flows("X-Forwarded-Client-Cert", "xfcc"))
    value = '"By=spiffe://example.com/gateway;Cert=\\"$ssl_client_escaped_cert\\";Subject=\\"$ssl_client_s_dn\\""'
    with run_engine(folder) as engine, \
            nginx(folder / "nginx", _gateway(pki, engine, "X-Forwarded-Client-Cert", value)) as gw:
        yield Stack(engine, gw)


def _client(pki: Pki, stack: Stack, who: Issued | None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(pki.ca.ca.cert))
    if who is not None:
        context.load_cert_chain(who.cert, who.key)
    return httpx.Client(base_url=stack.gateway.url, verify=context, timeout=10)


@pytest.mark.parametrize("stack_name", ["nginx_pem", "nginx_xfcc"])
def test_the_gateways_client_certificate_reaches_the_flow(pki: Pki, stack_name: str,
                                                          request: pytest.FixtureRequest) -> None:
    stack: Stack = request.getfixturevalue(stack_name)
    with _client(pki, stack, pki.partner_a) as client:
        answer = client.get("/whoami")
        only_a = client.get("/only-a")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "cn": "partner-a", "subject": "CN=partner-a,O=Example Partners", "issuer": "CN=Test CA,O=Example Partners",
        "serial": pki.partner_a.serial, "sans": ["spiffe://example.com/partner-a"],
        "fingerprint": pki.partner_a.fingerprint, "source": "forwarded", "by": "127.0.0.1", "version": None,
        "chain": ["CN=partner-a,O=Example Partners"],  # the certificate alone: the proxy's CAs are not known here
    }
    assert only_a.status_code == 200
    with _client(pki, stack, pki.partner_b) as client:
        other = client.get("/only-a")
    assert (other.status_code, other.headers["content-type"]) == (403, "application/problem+json")
    assert other.json()["detail"] == "the client certificate's subject (CN) is not allowed on this route"


@pytest.mark.parametrize("stack_name", ["nginx_pem", "nginx_xfcc"])
def test_without_a_client_certificate_the_route_answers_401(pki: Pki, stack_name: str,
                                                            request: pytest.FixtureRequest) -> None:
    stack: Stack = request.getfixturevalue(stack_name)
    forged = quote(pki.partner_a.cert.read_text())
    with _client(pki, stack, None) as client:
        # a client writing the header itself through the gateway: nginx replaces it
        answer = client.get("/whoami", headers={"X-SSL-Client-Cert": forged,
                                                "X-Forwarded-Client-Cert": f'Cert="{forged}"'})
    assert (answer.status_code, answer.headers["content-type"]) == (401, "application/problem+json")
    assert answer.json()["detail"].startswith("this route needs a client certificate")
    with _client(pki, stack, pki.stranger) as client:
        refused = client.get("/whoami")  # nginx verifies against the CA (optional: it answers 400 itself)
    assert refused.status_code == 400
    assert "SSL certificate error" in refused.text


def test_the_header_from_an_untrusted_address_is_403(pki: Pki, nginx_pem: Stack) -> None:
    """127.0.0.2 is loopback too, but not the trusted proxy address."""
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=transport, base_url=nginx_pem.engine.url, timeout=10) as client:
        forged = client.get("/whoami", headers={"X-SSL-Client-Cert": quote(pki.partner_a.cert.read_text())})
        none = client.get("/whoami")
    assert (forged.status_code, forged.headers["content-type"]) == (403, "application/problem+json")
    assert "not a trusted proxy" in forged.json()["detail"]
    assert "BEGIN" not in forged.text
    assert none.status_code == 401


# --- Envoy's X-Forwarded-Client-Cert forms, in process (the test client's address is 127.0.0.1) ---


def _pem(issued: Issued) -> str:
    return issued.certificate.public_bytes(serialization.Encoding.PEM).decode()


async def _whoami(tmp_path: Path, header: str, form: str = "xfcc", trusted: str = "127.0.0.1") -> httpx.Response:
    from engine.app import create_app

    name = "X-Forwarded-Client-Cert" if form == "xfcc" else "X-Client-Cert"
    app = create_app(write_flows(tmp_path / "flows", _flows(name, form, trusted)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
                                 base_url="http://facade") as client:
        return await client.get("/whoami", headers={name: header})


async def test_xfcc_with_several_hops_takes_the_last_and_checks_its_hash(pki: Pki, tmp_path: Path) -> None:
    der = pki.partner_b.certificate.public_bytes(serialization.Encoding.DER)
    good = hashlib.sha256(der).hexdigest()
    header = (f'By=spiffe://a;Cert="{quote(_pem(pki.partner_a))}";Subject="CN=partner-a,O=Example Partners",'
              f'By=spiffe://b;Hash={good};Cert="{quote(_pem(pki.partner_b))}";Subject="CN=x\\";y,O=z";DNS=b.example')
    answer = await _whoami(tmp_path, header)
    assert (answer.status_code, answer.json()["cn"]) == (200, "partner-b")
    forged = header.replace(good, "0" * 64)
    refused = await _whoami(tmp_path, forged)
    assert refused.status_code == 401
    assert refused.json()["detail"].endswith("its Hash is not the SHA-256 of its Cert")


async def test_xfcc_without_cert_gives_the_subject_uri_and_hash(tmp_path: Path) -> None:
    """Istio's default: By, Hash, Subject and URI, no Cert."""
    header = 'By=spiffe://cluster.local/ns/f/sa/facade;Hash=ABCD;Subject="CN=partner-c,O=Example Partners";' \
             "URI=spiffe://cluster.local/ns/p/sa/partner-c"
    answer = await _whoami(tmp_path, header)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["cn"], body["sans"], body["fingerprint"], body["issuer"], body["chain"]) == (
        "partner-c", ["spiffe://cluster.local/ns/p/sa/partner-c"], "abcd", None, ["CN=partner-c,O=Example Partners"])


@pytest.mark.parametrize(("header", "detail"), [
    ('Cert="not base64!"', "neither PEM nor base64 DER"),
    ('Subject="unterminated', "an unterminated quoted value"),
    ("By=spiffe://gateway", "neither Cert, Subject, URI, DNS nor Hash"),
    ("Cert", "a part without '=' ('Cert')"),
])
async def test_an_xfcc_that_does_not_parse_is_401(tmp_path: Path, header: str, detail: str) -> None:
    answer = await _whoami(tmp_path, header)
    assert (answer.status_code, answer.headers["content-type"]) == (401, "application/problem+json")
    assert answer.json()["detail"].endswith(detail)


@pytest.mark.parametrize("shape", ["url-encoded", "one-line", "base64-der"])
async def test_the_pem_format_reads_what_gateways_send(pki: Pki, tmp_path: Path, shape: str) -> None:
    pem = _pem(pki.partner_a)
    der = pki.partner_a.certificate.public_bytes(serialization.Encoding.DER)
    import base64

    header = {"url-encoded": quote(pem), "one-line": pem.replace("\n", " "),
              "base64-der": base64.b64encode(der).decode()}[shape]
    answer = await _whoami(tmp_path, header, form="pem")
    assert (answer.status_code, answer.json()["fingerprint"]) == (200, pki.partner_a.fingerprint)


async def test_an_untrusted_address_in_process_is_403(pki: Pki, tmp_path: Path) -> None:
    answer = await _whoami(tmp_path, f'Cert="{quote(_pem(pki.partner_a))}"', trusted="10.0.0.0/8")
    assert answer.status_code == 403
