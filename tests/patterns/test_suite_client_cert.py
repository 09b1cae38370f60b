"""A flow-test case presents a client certificate (a PEM file beside the suite, or its fields):
`interlace test` runs flows that require one, and the designer's try-it runs those cases too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from starlette.testclient import TestClient

from designer.app import build_designer_app
from tests.support.engine import REPO, write_flows
from tests.support.pki import Authority

FLOWS = """
flows:
  whoami:
    source: {http: {method: GET, path: /whoami}}
    steps:
      - authenticate: {client_cert: {subject: {O: Example Partners, CN: [partner-a, partner-c]}}}
      - respond: {json: {cn: "${auth.common_name}", sans: "${auth.sans}", fingerprint: "${auth.fingerprint}",
                         chain: "${tls.chain}"}}
"""

SUITE = """
cases:
  - name: a partner's certificate file is accepted
    request: {path: /whoami, client_cert: partner-a.crt}
    expect:
      status: 200
      json: {cn: partner-a, sans: [partner-a.example.com], fingerprint: FINGERPRINT,
             chain: ["CN=partner-a,O=Example Partners"]}
  - name: the certificate's fields alone are enough
    request:
      path: /whoami
      client_cert: {subject: "CN=partner-c,O=Example Partners", sans: ["spiffe://example.com/c"], fingerprint: "AB:CD"}
    expect:
      status: 200
      json: {cn: partner-c, sans: ["spiffe://example.com/c"], fingerprint: abcd,
             chain: ["CN=partner-c,O=Example Partners"]}
  - name: without a certificate the route answers 401
    request: {path: /whoami}
    expect:
      status: 401
      json_subset:
        detail: "this route needs a client certificate: connect over TLS with a certificate signed by the facade's \\
          client CA"
  - name: another subject is 403
    request: {path: /whoami, client_cert: {subject: "CN=partner-b,O=Example Partners"}}
    expect: {status: 403}
"""


def _folder(tmp_path: Path) -> Path:
    from cryptography import x509

    folder = write_flows(tmp_path / "flows", FLOWS)
    partner = Authority(tmp_path).issue("partner-a", sans=[x509.DNSName("partner-a.example.com")])
    (folder / "partner-a.crt").write_bytes(partner.cert.read_bytes())
    (folder / "flows.test.yaml").write_text(SUITE.replace("FINGERPRINT", partner.fingerprint))
    return folder


def test_a_suite_presents_client_certificates(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    done = subprocess.run([sys.executable, "-m", "engine.cli", "test", str(folder)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed, 0 failed" in done.stdout


def test_a_missing_certificate_file_names_its_line(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "flows.test.yaml").write_text("cases:\n  - name: gone\n    request: {path: /whoami, "
                                            "client_cert: nowhere.crt}\n    expect: {status: 200}\n")
    done = subprocess.run([sys.executable, "-m", "engine.cli", "test", str(folder)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "flows.test.yaml:3:" in done.stdout + done.stderr
    assert "client_cert nowhere.crt: no such file beside the suite" in done.stdout + done.stderr


def test_the_designer_tries_a_case_with_a_client_certificate(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    change = {"x-interlace-designer": "1"}
    with TestClient(build_designer_app(folder), base_url="http://127.0.0.1:9290") as client:
        saved = client.post("/api/try", headers=change, json={"file": "flows.yaml", "suite": "flows.test.yaml",
                                                              "case": 0}).json()
        typed = client.post("/api/try", headers=change, json={"file": "flows.yaml", "request": {
            "path": "/whoami", "client_cert": {"subject": "CN=partner-c,O=Example Partners"}}}).json()
        none = client.post("/api/try", headers=change, json={"file": "flows.yaml",
                                                             "request": {"path": "/whoami"}}).json()
    assert saved["response"]["status"] == 200, saved
    assert '"cn":"partner-a"' in saved["response"]["body"].replace(" ", "")
    assert typed["response"]["status"] == 200, typed
    assert none["response"]["status"] == 401
