"""The client's chain as ${tls.chain}: rebuilt over the facade's client CA file (a root and an
intermediate CA), on a real `interlace run` over mutual TLS on 127.0.0.1, and ClientCAs' choice
among CAs that share a name."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from engine.tls_chain import ClientCAs
from tests.support.engine import RunningEngine, run_engine, write_flows
from tests.support.pki import Authority, Issued

FLOWS = """
flows:
  chain:
    source: {http: {method: GET, path: /chain}}
    steps:
      - authenticate: {client_cert: {}}
      - respond:
          json: {chain: "${tls.chain}", issuing: "${tls.chain_fields[1].CN}", root: "${tls.chain[-1]}",
                 auth_chain: "${auth.chain}"}
"""


@dataclass(frozen=True)
class Chain:
    root: Authority
    issuing: Authority  # an intermediate CA below root
    server: Issued
    below_intermediate: Issued
    below_root: Issued
    client_ca: Path  # root and intermediate in one file, as --tls-client-ca takes them


def _pki(folder: Path, key_ids: bool) -> Chain:
    root = Authority(folder, "Partners Root", path_length=1, key_ids=key_ids)
    issuing = root.intermediate("Issuing CA")
    client_ca = folder / "client-ca.pem"
    client_ca.write_bytes(issuing.ca.cert.read_bytes() + root.ca.cert.read_bytes())
    return Chain(root, issuing, root.issue("facade", server=True), issuing.issue("partner-a"),
                 root.issue("partner-b"), client_ca)


@pytest.fixture(scope="module", params=[True, False], ids=["key-ids", "names-only"])
def chain(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Chain:
    return _pki(tmp_path_factory.mktemp("pki"), key_ids=request.param)


@pytest.fixture(scope="module")
def engine(chain: Chain, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    folder = write_flows(tmp_path_factory.mktemp("flows"), FLOWS)
    with run_engine(folder, "--tls-cert", str(chain.server.cert), "--tls-key", str(chain.server.key),
                    "--tls-client-ca", str(chain.client_ca)) as running:
        yield running


def _get(chain: Chain, engine: RunningEngine, who: Issued) -> httpx.Response:
    context = ssl.create_default_context(cafile=str(chain.root.ca.cert))
    context.load_cert_chain(who.cert, who.key)
    with httpx.Client(base_url=f"https://127.0.0.1:{engine.port}", verify=context, timeout=10) as client:
        return client.get("/chain")


def test_a_certificate_below_the_intermediate_has_the_whole_chain(chain: Chain, engine: RunningEngine) -> None:
    answer = _get(chain, engine, chain.below_intermediate)
    expected = ["CN=partner-a,O=Example Partners", "CN=Issuing CA,O=Example Partners",
                "CN=Partners Root,O=Example Partners"]
    assert answer.json() == {"chain": expected, "issuing": "Issuing CA", "root": "CN=Partners Root,O=Example Partners",
                             "auth_chain": expected}


def test_a_certificate_of_the_root_has_the_root_alone_above_it(chain: Chain, engine: RunningEngine) -> None:
    answer = _get(chain, engine, chain.below_root)
    expected = ["CN=partner-b,O=Example Partners", "CN=Partners Root,O=Example Partners"]
    assert answer.json() == {"chain": expected, "issuing": "Partners Root", "root": expected[-1],
                             "auth_chain": expected}


def test_of_two_cas_with_one_name_the_one_that_signed_is_chosen(tmp_path: Path) -> None:
    """A renewed CA (same name, new key) beside the old one, without key identifiers: each
    certificate's chain names the CA whose key signed it, whichever comes first in the file."""
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old, new = Authority(tmp_path / "old", "Partners CA"), Authority(tmp_path / "new", "Partners CA")
    by_old, by_new = old.issue("partner-old"), new.issue("partner-new")
    for order in ((old, new), (new, old)):
        cas = ClientCAs(b"".join(ca.ca.cert.read_bytes() for ca in order))
        assert cas.chain_of(by_old.certificate)[0].certificate == old.ca.certificate
        assert cas.chain_of(by_new.certificate)[0].certificate == new.ca.certificate
    stranger = Authority(tmp_path, "Other CA").issue("stranger")
    assert ClientCAs(old.ca.cert.read_bytes()).chain_of(stranger.certificate) == ()
    assert ClientCAs(b"").chain_of(by_old.certificate) == ()
    # the intermediate's own chain is worked out when the file is read
    root = Authority(tmp_path, "Root", path_length=1)
    issuing = root.intermediate("Issuing")
    cas = ClientCAs(root.ca.certificate.public_bytes(Encoding.PEM) + issuing.ca.cert.read_bytes())
    [found] = [ca for ca in cas.cas if ca.certificate == issuing.ca.certificate]
    assert [ca.subject for ca in found.above] == ["CN=Root,O=Example Partners"]


def test_a_rotated_client_ca_file_rebuilds_the_chain_of_a_certificate_seen_before(tmp_path: Path) -> None:
    """The chain of a certificate is kept per TLS context: the same partner reconnecting after the
    CA file changed gets the chain over the new file.  The partner sends its intermediate itself;
    the first file holds the root alone (the chain stops at the certificate), the second both."""
    chain = _pki(tmp_path, key_ids=True)
    live = tmp_path / "live-ca.pem"
    live.write_bytes(chain.root.ca.cert.read_bytes())
    sent = tmp_path / "partner-with-intermediate.pem"
    sent.write_bytes(chain.below_intermediate.cert.read_bytes() + chain.issuing.ca.cert.read_bytes())
    partner = Issued(sent, chain.below_intermediate.key, chain.below_intermediate.certificate)
    flows = write_flows(tmp_path / "flows", FLOWS)
    with run_engine(flows, "--tls-cert", str(chain.server.cert), "--tls-key", str(chain.server.key),
                    "--tls-client-ca", str(live), "--tls-reload-interval", "0") as engine:
        alone = ["CN=partner-a,O=Example Partners"]
        assert _get(chain, engine, partner).json()["chain"] == alone
        assert _get(chain, engine, partner).json()["chain"] == alone  # kept, the same
        live.write_bytes(chain.client_ca.read_bytes())
        assert httpx.post(f"{engine.management_url}/reload", timeout=30).status_code == 200
        assert _get(chain, engine, partner).json()["chain"] == [
            *alone, "CN=Issuing CA,O=Example Partners", "CN=Partners Root,O=Example Partners"]
