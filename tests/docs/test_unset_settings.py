"""Snag 1: ${env.X}/${secret.X} without a default in endpoint settings, where they are unset.

Only `interlace run` needs their values; validate notes them, k8s and openapi work, and the
manifests name what the cluster must provide (never a value)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[2]


def first_yaml_block(doc: str) -> str:
    match = re.search(r"```yaml\n(.*?)```", (REPO / doc).read_text(encoding="utf-8"), re.S)
    assert match, doc
    return match.group(1)


def interlace(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("ORDERS_API_URL", "CRM_TOKEN")}
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**clean, "INTERLACE_SECRETS_DIR": "/nonexistent", **(env or {})})


def project(tmp_path: Path) -> Path:
    """The opening example of docs/flows.md, verbatim, and an endpoint reading a secret."""
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "orders.yaml").write_text(first_yaml_block("docs/flows.md"), encoding="utf-8")
    (folder / "crm.yaml").write_text("""endpoints:
  crm:
    http:
      url: http://127.0.0.1:9
      headers: {Authorization: "Bearer ${secret.CRM_TOKEN}"}
""", encoding="utf-8")
    return folder


def test_validate_notes_the_unset_ones_and_succeeds(tmp_path: Path) -> None:
    folder = project(tmp_path)
    result = interlace("validate", str(folder))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: 1 flows")
    notes = result.stderr.splitlines()
    assert any(re.match(r"note: .*orders\.yaml:\d+:\d+: endpoint 'orders-api': \$\{env\.ORDERS_API_URL\} "
                        r"is not set here", n) for n in notes), result.stderr
    assert any("${secret.CRM_TOKEN} is not set here" in n for n in notes), result.stderr


def test_validate_still_checks_the_syntax_of_the_references(tmp_path: Path) -> None:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "a.yaml").write_text("endpoints:\n  a: {http: {url: '${env.}'}}\n", encoding="utf-8")
    result = interlace("validate", str(folder))
    assert result.returncode == 1 and "a.yaml:2:3: endpoint 'a'" in result.stderr


def test_k8s_names_every_env_and_secret_the_flows_read(tmp_path: Path) -> None:
    folder = project(tmp_path)
    out = tmp_path / "k8s"
    result = interlace("k8s", str(folder), "--image", "127.0.0.1:5000/facade:1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    yaml = YAML(typ="safe")
    docs = {}
    for file in (out / "base").glob("*.yaml"):
        for doc in yaml.load_all(file.read_text()):
            if doc:
                docs[doc["kind"]] = doc
    assert docs["ConfigMap"]["data"]["ORDERS_API_URL"] == ""
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert {"configMapRef": {"name": "interlace-config"}} in container["envFrom"]
    volumes = {v["name"]: v for v in docs["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["secrets"]["secret"]["items"] == [{"key": "CRM_TOKEN", "path": "CRM_TOKEN"}]
    assert "kubectl create secret generic interlace-secrets --from-literal=CRM_TOKEN=..." in result.stdout
    assert "http://unset.invalid" not in "".join(f.read_text() for f in out.rglob("*.yaml"))


def test_openapi_works_where_they_are_unset(tmp_path: Path) -> None:
    folder = project(tmp_path)
    result = interlace("openapi", str(folder))
    assert result.returncode == 0, result.stderr
    assert "/orders/{id}" in json.loads(result.stdout)["paths"]


def test_run_needs_them(tmp_path: Path) -> None:
    folder = project(tmp_path)
    from tests.support.services import free_port

    result = interlace("run", str(folder), "--port", str(free_port()), "--management-port", str(free_port()))
    assert result.returncode == 2
    assert "${env.ORDERS_API_URL} is not set: no such environment variable" in result.stderr
