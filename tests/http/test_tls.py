"""https endpoints against a real TLS backend on loopback: trusted authorities, verify, mutual TLS."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
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


DEFERRED_TLS = """
import asyncio, ssl, sys
from connectors._tls import deferred, import_aiohttp
import_aiohttp()
import aiohttp.connector
system = ssl.create_default_context().cert_store_stats()["x509_ca"]  # the usual method again
assert system == 1, system  # SSL_CERT_FILE names the one test authority
assert deferred() == 2 and aiohttp.connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"] == 0
from connectors.http import HttpEndpoint

async def main() -> int:
    plain = HttpEndpoint("plain", {"url": "http://127.0.0.1:9"})
    await plain.open()
    assert deferred() == 2  # no https endpoint: nothing read
    secure = HttpEndpoint("secure", {"url": sys.argv[1]})
    await secure.open()
    assert deferred() == 0 and aiohttp.connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"] == 1
    try:
        return (await secure.request("POST", "/default-trust", body=b"x")).status
    finally:
        await plain.close()
        await secure.close()

print(asyncio.run(main()))
"""


def test_the_servers_deferred_authorities_are_read_before_an_https_endpoint_calls(
        tls_backend: BackendServer, pems: dict[str, Pem]) -> None:
    """``interlace run`` imports aiohttp without reading the system's authorities (connectors/_tls.py);
    an https endpoint with the default trust reads them when it opens, so it trusts what the system
    trusts (here SSL_CERT_FILE, the test's authority) exactly as before."""
    env = {**os.environ, "SSL_CERT_FILE": str(pems["server"].cert)}
    result = subprocess.run([sys.executable, "-c", DEFERRED_TLS, tls_backend.url], env=env, capture_output=True,
                            text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "200"
    assert [r.path for r in tls_backend.requests] == ["/default-trust"]
