"""A flow-test case says the address its request comes from (``client``): `interlace test` and
the designer's try-it run it as that connection's peer, for ${client.*} and the throttle's
policies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from starlette.testclient import TestClient

from designer.app import build_designer_app
from tests.support.engine import REPO, write_flows

FLOWS = """
flows:
  partners:
    source: {http: {method: GET, path: /partners}}
    steps:
      - throttle:
          policies:
            - {cidr: 203.0.113.0/24, access: deny}
          others: allow
      - respond: {json: {caller: "${client.address}"}}
"""

SUITE = """
cases:
  - name: the request comes from the case's address
    request: {path: /partners, client: 198.51.100.4}
    expect: {status: 200, json: {caller: 198.51.100.4}}
  - name: an IPv6 one
    request: {path: /partners, client: "2001:db8::7"}
    expect: {status: 200, json: {caller: "2001:db8::7"}}
  - name: a denied network
    request: {path: /partners, client: 203.0.113.9}
    expect: {status: 403}
  - name: by default, loopback
    request: {path: /partners}
    expect: {status: 200, json: {caller: 127.0.0.1}}
"""


def _test(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", "test", str(folder)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_a_case_says_the_address_its_request_comes_from(tmp_path: Path) -> None:
    folder = write_flows(tmp_path, FLOWS)
    (folder / "flows.test.yaml").write_text(SUITE)
    done = _test(folder)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed, 0 failed" in done.stdout


def test_a_client_that_is_no_address_names_its_line(tmp_path: Path) -> None:
    folder = write_flows(tmp_path, FLOWS)
    (folder / "flows.test.yaml").write_text("cases:\n  - name: bad\n    request:\n      path: /partners\n"
                                            "      client: gateway.internal\n    expect: {status: 200}\n")
    done = _test(folder)
    assert done.returncode == 1
    assert "flows.test.yaml:5:15:" in done.stdout + done.stderr, done.stdout + done.stderr
    assert "'gateway.internal' is not one" in done.stdout + done.stderr


def test_the_designer_tries_a_request_from_an_address(tmp_path: Path) -> None:
    folder = write_flows(tmp_path, FLOWS)
    change = {"x-interlace-designer": "1"}
    with TestClient(build_designer_app(folder), base_url="http://127.0.0.1:9290") as client:
        allowed = client.post("/api/try", headers=change, json={"file": "flows.yaml", "request": {
            "path": "/partners", "client": "198.51.100.4"}}).json()
        denied = client.post("/api/try", headers=change, json={"file": "flows.yaml", "request": {
            "path": "/partners", "client": "203.0.113.9"}}).json()
    assert allowed["response"]["status"] == 200 and "198.51.100.4" in allowed["response"]["body"], allowed
    assert denied["response"]["status"] == 403, denied


def test_a_network_written_as_ipv4_mapped_ipv6_holds_those_ipv4_clients(tmp_path: Path) -> None:
    """A dual-stack listener sees an IPv4 caller as ::ffff:203.0.113.9, which the policies take
    as 203.0.113.9; a cidr written the same way (::ffff:203.0.113.0/120) names those IPv4
    addresses too (it matched nobody: the deny let everyone through)."""
    folder = write_flows(tmp_path, FLOWS.replace("203.0.113.0/24", '"::ffff:203.0.113.0/120"'))
    (folder / "flows.test.yaml").write_text("""
cases:
  - name: a mapped caller in the mapped network
    request: {path: /partners, client: "::ffff:203.0.113.9"}
    expect: {status: 403}
  - name: the same caller over IPv4
    request: {path: /partners, client: 203.0.113.9}
    expect: {status: 403}
  - name: outside it
    request: {path: /partners, client: "::ffff:203.0.114.9"}
    expect: {status: 200}
""")
    done = _test(folder)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed, 0 failed" in done.stdout
