"""No message shows a password or a secret: validate, run's stderr, the reload body, GET /flows,
GET /endpoints, problem bodies and the log.

Before: an endpoint URL with credentials but no scheme (``svcuser:Hunter2Pass@orders.internal:8080/api``)
was quoted whole in every one of them, and a setting read from ``${secret.X}`` was quoted back
when the connector refused it.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from engine.cli import main
from engine.redact import mask, url_for_display, without_userinfo
from tests.support.backends import closed_port
from tests.support.engine import run_engine, write_flows

pytestmark = pytest.mark.timeout(120)

PASSWORD = "Hunter2Pass"
SECRET = "Sup3rSecretValue"

PING = """
flows:
  ping:
    source: {http: {method: GET, path: /ping}}
    steps: [{respond: {text: pong}}]
"""

# each of these makes the loader (the http connector) format a URL or a secret-fed setting in an error
BAD_ENDPOINTS = {
    "no-scheme": f"url: 'svcuser:{PASSWORD}@orders.internal:8080/api'",
    "other-scheme": f"url: 'ftp://svcuser:{PASSWORD}@orders.internal/api'",
    "bad-port": f"url: 'http://svcuser:{PASSWORD}@orders.internal:99999/api'",
    "query": f"url: 'http://svcuser:{PASSWORD}@orders.internal/api?x=1'",
    "ipv6": f"url: 'http://svcuser:{PASSWORD}@[::1/api'",
    "in-urls": f"urls: ['http://127.0.0.1:1', 'svcuser:{PASSWORD}@orders.internal:8080/api']",
    "secret-url": "url: '${secret.ORDERS_URL}'",
    "secret-in-url": "url: 'notaurl-${secret.ORDERS_URL}'",
}


def secrets_dir(tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / "secrets"
    folder.mkdir(exist_ok=True)
    (folder / "ORDERS_URL").write_text(f"{SECRET}\n", encoding="utf-8")
    return {"INTERLACE_SECRETS_DIR": str(folder)}


def endpoint_file(setting: str) -> str:
    return f"endpoints:\n  orders:\n    http: {{{setting}}}\n"


def assert_clean(text: str) -> None:
    assert PASSWORD not in text and SECRET not in text, text[-3000:]


def test_the_redaction_helpers() -> None:
    assert url_for_display(f"svcuser:{PASSWORD}@orders.internal:8080/api") == "orders.internal:8080/api"
    assert url_for_display(f"http://u:{PASSWORD}@h:1/a?token=x#f") == "http://h:1/a"
    assert url_for_display(f"http://u:pa/{PASSWORD}@h/a") == "http://h/a"  # an unescaped / in the password
    assert without_userinfo(f"see 'svcuser:{PASSWORD}@orders:1/x' and https://u:{PASSWORD}@h/") == \
        "see 'orders:1/x' and https://h/"
    assert mask(f"got {SECRET}!", [SECRET, ""]) == "got ***!"


@pytest.mark.parametrize("case", sorted(BAD_ENDPOINTS))
def test_validate_names_the_endpoint_but_not_its_credentials(tmp_path: Path, case: str,
                                                            capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in secrets_dir(tmp_path).items():
        monkeypatch.setenv(name, value)
    folder = write_flows(tmp_path / "flows", PING)
    write_flows(folder, endpoint_file(BAD_ENDPOINTS[case]), name="endpoints.yaml")
    assert main(["validate", str(folder)]) == 1
    out, err = capsys.readouterr()
    assert f"{folder / 'endpoints.yaml'}:2:3: endpoint 'orders': " in err, err
    assert_clean(out + err)


def test_run_reload_flows_endpoints_and_the_log_never_show_them(tmp_path: Path) -> None:
    env = secrets_dir(tmp_path)
    folder = write_flows(tmp_path / "flows", PING)
    write_flows(folder, endpoint_file(BAD_ENDPOINTS["no-scheme"]), name="endpoints.yaml")
    with run_engine(folder, env=env, wait_ready=False) as engine:  # run's stderr at start
        assert engine.process.wait(30) == 2
        assert "endpoint 'orders'" in engine.log()
        assert_clean(engine.log())
    # a URL that is valid, with credentials, towards a port where nothing listens
    dead = closed_port()
    write_flows(folder, endpoint_file(f"url: 'http://svcuser:{PASSWORD}@127.0.0.1:{dead}/api'") + """
flows:
  down:
    source: {http: {method: GET, path: /down}}
    steps: [{call: {endpoint: orders, path: /x}}]
""", name="endpoints.yaml")
    with run_engine(folder, "--log-level", "debug", env=env) as engine, httpx.Client(timeout=10) as client:
        failed = client.get(f"{engine.url}/down")
        assert failed.status_code == 502
        assert_clean(failed.text)
        health = client.get(f"{engine.management_url}/endpoints").text
        assert f"http://127.0.0.1:{dead}/api" in health
        assert_clean(health)
        for case in sorted(BAD_ENDPOINTS):
            write_flows(folder, endpoint_file(BAD_ENDPOINTS[case]), name="endpoints.yaml")
            refused = client.post(f"{engine.management_url}/reload")
            assert refused.status_code == 422 and "endpoint 'orders'" in refused.text, (case, refused.text)
            assert_clean(refused.text)
            listing = client.get(f"{engine.management_url}/flows")
            assert listing.status_code == 200 and listing.json()["last_reload"]["ok"] is False
            assert_clean(listing.text)
        assert "endpoint 'orders'" in engine.log()
        assert_clean(engine.log())


def test_schema_errors_quoting_a_value_leave_its_credentials_out(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # found by the loader fuzz: a credentialed URL where a mapping belongs was quoted whole
    folder = write_flows(tmp_path / "flows", f"""
    flows:
      f:
        source: 'svcuser:{PASSWORD}@orders.internal:8080/api'
        steps: [{{respond: {{text: x}}}}]
    """)
    assert main(["validate", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "flows.yaml:3:13: expected a mapping in flows.f.source, got the string 'orders.internal:8080/api'" in err
    assert_clean(err)
