"""The facade's TLS from the flow folder's settings.tls: served over real TLS on 127.0.0.1, new
paths applied by a reload to new connections, what takes a restart said in the log, a bad file
refused at start with the setting's name."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.engine import REPO, run_engine, wait_for, write_flows
from tests.support.pki import Authority, Issued

SETTINGS = """
settings:
  tls:
    cert: DIR/tls.crt
    key: DIR/tls.key
    client_ca: DIR/ca.crt
    client_cert: MODE
    reload_interval: 0
flows:
  whoami:
    source: {http: {method: GET, path: /whoami}}
    steps:
      - respond: {json: {cn: "${tls.common_name}"}}
"""


def _install(folder: Path, ca: Authority, server: Issued) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in (("tls.crt", server.cert), ("tls.key", server.key), ("ca.crt", ca.ca.cert)):
        shutil.copyfile(source, folder / name)


def _settings(folder: Path, directory: str, mode: str = "optional") -> None:
    write_flows(folder, SETTINGS.replace("DIR", directory).replace("MODE", mode))


def _server_name(ca: Authority, port: int) -> str:
    context = ssl.create_default_context(cafile=str(ca.ca.cert))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return str(dict(pair[0] for pair in tls.getpeercert()["subject"])["commonName"])  # type: ignore[index, misc]


def test_settings_tls_serves_and_a_reload_applies_new_paths(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    flows = tmp_path / "flows"
    _install(flows / "tls-a", ca, ca.issue("facade-a", server=True))
    _install(flows / "tls-b", ca, ca.issue("facade-b", server=True))
    partner = ca.issue("partner")
    _settings(flows, "tls-a")
    context = ssl.create_default_context(cafile=str(ca.ca.cert))
    context.load_cert_chain(partner.cert, partner.key)
    with run_engine(flows) as engine:
        with httpx.Client(base_url=f"https://127.0.0.1:{engine.port}", verify=context, timeout=10) as client:
            assert client.get("/whoami").json() == {"cn": "partner"}
        assert _server_name(ca, engine.port) == "facade-a"
        assert "facade serves TLS from settings.tls (client certificates optional)" in engine.log()

        _settings(flows, "tls-b")
        assert httpx.post(f"{engine.management_url}/reload", timeout=30).status_code == 200
        assert _server_name(ca, engine.port) == "facade-b"

        _settings(flows, "tls-b", mode="required")  # the verify mode is the listener's: a restart
        assert httpx.post(f"{engine.management_url}/reload", timeout=30).status_code == 200
        wait_for(lambda: "settings.tls changed (client certificates optional -> required): that takes a restart"
                 in engine.log(), "the restart warning")
        bare_context = ssl.create_default_context(cafile=str(ca.ca.cert))
        with httpx.Client(base_url=f"https://127.0.0.1:{engine.port}", verify=bare_context, timeout=10) as bare:
            assert bare.get("/whoami").json() == {"cn": None}  # still optional


def test_the_command_line_wins_and_a_bad_settings_file_stops_the_start(tmp_path: Path) -> None:
    ca = Authority(tmp_path)
    flows = tmp_path / "flows"
    _install(flows / "tls", ca, ca.issue("facade-settings", server=True))
    cli = ca.issue("facade-cli", server=True)
    _settings(flows, "tls")
    with run_engine(flows, "--tls-cert", str(cli.cert), "--tls-key", str(cli.key)) as engine:
        assert _server_name(ca, engine.port) == "facade-cli"
        assert "settings.tls is not used: the --tls-* options" in engine.log()
    _settings(flows, "missing")
    done = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(flows), "--port", "0",
                           "--management-port", "0"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"settings.tls.cert {flows / 'missing' / 'tls.crt'}: no such file" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("tls", "message"), [
    ("{key: a.key}", "missing required key 'cert' in settings.tls"),
    ("{cert: a.crt, client_cert: sometimes}", "expected one of none, optional, required in settings.tls.client_cert"),
    ("{cert: a.crt, reload_interval: -1}", "-1 is less than the minimum of 0"),
    ("{cert: a.crt, ocsp: sometimes}", "expected one of hard-fail, soft-fail in settings.tls.ocsp"),
    ("{cert: a.crt, ocsp_responder: ocsp.example.com}", "settings.tls.ocsp_responder"),
    ("{cert: a.crt, ocsp_timeout: 0}", "settings.tls.ocsp_timeout"),
])
def test_settings_tls_is_checked_by_the_schema(tmp_path: Path, tls: str, message: str) -> None:
    from engine.loader import LoadErrors, load_project

    folder = write_flows(tmp_path / "flows", f"settings:\n  tls: {tls}\nflows: {{}}\n")
    with pytest.raises(LoadErrors) as caught:
        load_project(folder)
    assert message in str(caught.value)
    assert "flows.yaml:2:" in str(caught.value)


def test_settings_tls_ocsp_contradictions_name_the_setting(tmp_path: Path) -> None:
    from engine.tls import FacadeTls, TlsConfigError

    with pytest.raises(TlsConfigError, match=r"^settings.tls.ocsp needs settings.tls.client_ca"):
        FacadeTls.from_settings({"tls": {"cert": "a.crt", "ocsp": "hard-fail"}}, tmp_path)
    tls = FacadeTls.from_settings({"tls": {"cert": "a.crt", "client_ca": "ca.pem", "ocsp": "soft-fail",
                                           "ocsp_responder": "http://127.0.0.1:8/", "ocsp_timeout": 1.5}}, tmp_path)
    assert tls is not None and tls.ocsp is not None
    assert (tls.ocsp.policy, tls.ocsp.responder, tls.ocsp.timeout) == ("soft-fail", "http://127.0.0.1:8/", 1.5)
