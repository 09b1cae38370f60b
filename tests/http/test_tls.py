"""https endpoints against a real TLS backend on loopback: trusted authorities, verify, mutual TLS."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from connectors.http import HttpEndpoint
from engine.errors import BackendUnreachable
from tests.http.conftest import MakeEndpoint
from tests.support.backends import BackendServer
from tests.support.services import require_command

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Pem:
    cert: Path
    key: Path


def self_signed(openssl: str, folder: Path, name: str) -> Pem:
    pem = Pem(folder / f"{name}.crt", folder / f"{name}.key")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(pem.key), "-out", str(pem.cert)],
                   check=True, capture_output=True)
    return pem


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pem]:
    openssl = require_command("openssl", "openssl")
    folder = tmp_path_factory.mktemp("tls")
    return {name: self_signed(openssl, folder, name) for name in ("server", "client", "stranger")}


def server_context(server: Pem, client_ca: Path | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server.cert, server.key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    return context


@pytest.fixture
def tls_backend(pems: dict[str, Pem]) -> Iterator[BackendServer]:
    with BackendServer(tls=server_context(pems["server"])) as server:
        yield server


@pytest.fixture
def mtls_backend(pems: dict[str, Pem]) -> Iterator[BackendServer]:
    with BackendServer(tls=server_context(pems["server"], client_ca=pems["client"].cert)) as server:
        yield server


async def test_a_backend_signed_by_the_given_authority_is_trusted(tls_backend: BackendServer, pems: dict[str, Pem],
                                                                  make_endpoint: MakeEndpoint) -> None:
    assert tls_backend.url.startswith("https://")
    endpoint = make_endpoint({"url": tls_backend.url, "tls": {"ca_file": str(pems["server"].cert)}})
    reply = await endpoint.request("POST", "/secure", body=b"over tls")
    assert reply.status == 200 and reply.body == b"over tls"


async def test_an_untrusted_certificate_is_refused(tls_backend: BackendServer, pems: dict[str, Pem],
                                                   make_endpoint: MakeEndpoint) -> None:
    for tls in (None, {"ca_file": str(pems["stranger"].cert)}):
        endpoint = make_endpoint({"url": tls_backend.url, **({"tls": tls} if tls else {})}, name="bank")
        with pytest.raises(BackendUnreachable) as caught:
            await endpoint.request("GET", "/")
        assert str(caught.value) == "endpoint 'bank' is unreachable"
        assert "certificate is not trusted" in (caught.value.internal or "")
    assert tls_backend.requests == []


async def test_verify_false_skips_the_check(tls_backend: BackendServer, make_endpoint: MakeEndpoint) -> None:
    endpoint = make_endpoint({"url": tls_backend.url, "tls": {"verify": False}})
    assert (await endpoint.request("GET", "/")).status == 200


async def test_mutual_tls_presents_the_client_certificate(mtls_backend: BackendServer, pems: dict[str, Pem],
                                                          make_endpoint: MakeEndpoint) -> None:
    ca = str(pems["server"].cert)
    with_cert = make_endpoint({"url": mtls_backend.url, "tls": {
        "ca_file": ca, "cert_file": str(pems["client"].cert), "key_file": str(pems["client"].key)}})
    assert (await with_cert.request("GET", "/mine")).status == 200
    without = make_endpoint({"url": mtls_backend.url, "tls": {"ca_file": ca}})
    with pytest.raises(BackendUnreachable):
        await without.request("GET", "/anonymous")
    assert [r.path for r in mtls_backend.requests] == ["/mine"]


def test_unreadable_tls_files_are_load_errors(tmp_path: Path, pems: dict[str, Pem]) -> None:
    with pytest.raises(ValueError, match=r"tls\.ca_file: cannot read certificate authorities from .*missing\.pem"):
        HttpEndpoint("e", {"url": "https://127.0.0.1", "tls": {"ca_file": str(tmp_path / "missing.pem")}})
    with pytest.raises(ValueError, match=r"tls\.cert_file: cannot load the client certificate"):
        HttpEndpoint("e", {"url": "https://127.0.0.1", "tls": {"cert_file": str(pems["client"].cert),
                                                               "key_file": str(pems["server"].key)}})
    with pytest.raises(ValueError, match=r"tls\.key_file needs tls\.cert_file"):
        HttpEndpoint("e", {"url": "https://127.0.0.1", "tls": {"key_file": str(pems["client"].key)}})
