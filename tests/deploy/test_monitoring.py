"""`interlace k8s --monitoring`: the ServiceMonitor and PrometheusRule validate against the
Prometheus Operator's CRD schemas (no API server here), the alerts pass promtool, and the Grafana
dashboard queries only series the runtime exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from deploy import monitoring
from engine import metrics
from tests.deploy.test_manifests import IMAGE, KUBERNETES_VERSION, interlace, kustomize
from tests.support.services import require_command

CRDS = Path(__file__).parent / "crds"
SERIES = re.compile(r"\b((?:interlace|process|python)_[a-z_]+)\b")


def crd_schema(kind: str) -> dict[str, Any]:
    crd = YAML(typ="safe").load((CRDS / f"monitoring.coreos.com_{kind}.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return dict(version["schema"]["openAPIV3Schema"])


def crd_validator(schema: dict[str, Any]) -> jsonschema.Draft4Validator:
    # OpenAPI v3 schemas are JSON Schema draft 4 with extensions (x-kubernetes-*, ignored here); the
    # schema itself is not checked: a few patterns are Go regular expressions Python cannot compile
    # (none of them on a field these manifests set)
    return jsonschema.Draft4Validator(schema)


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("k8s")
    result = interlace("k8s", "flows", "--image", IMAGE, "--out", str(out), "--monitoring")
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_every_overlay_carries_the_monitoring_component(manifests: Path, environment: str) -> None:
    resources = kustomize(manifests / "overlays" / environment)
    by_kind = {r["kind"]: r for r in resources}
    assert {"ServiceMonitor", "PrometheusRule", "Deployment", "Service"} <= set(by_kind)
    schemas = {"ServiceMonitor": crd_schema("servicemonitors"), "PrometheusRule": crd_schema("prometheusrules")}
    for resource in resources:
        if resource["kind"] in schemas:
            crd_validator(schemas[resource["kind"]]).validate(resource)
            assert resource["metadata"]["namespace"] == f"interlace-{environment}"
        else:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    monitor = by_kind["ServiceMonitor"]
    service = by_kind["Service"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]} and endpoint["path"] == "/metrics"
    # Prometheus sends the management token the pods require: the Secret and key their env reads
    (container,) = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"]
    (token,) = [e for e in container["env"] if e["name"] == "INTERLACE_MANAGEMENT_TOKEN"]
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": token["valueFrom"]["secretKeyRef"]}
    assert "bearerTokenSecret" not in endpoint  # the deprecated field; the CRD allows one of the two
    alerts = {r["alert"] for g in by_kind["PrometheusRule"]["spec"]["groups"] for r in g["rules"]}
    assert alerts == {"InterlaceHighErrorRatio", "InterlaceHighLatencyP99", "InterlaceCircuitBreakerOpen",
                      "InterlaceStoreBacklog", "InterlaceTlsFilesRefused", "InterlaceOcspLookupsFailing"}


def test_a_schema_breach_is_caught() -> None:
    monitor = monitoring.service_monitor("x", {}, {"a": "b"})
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"  # the CRD's duration pattern refuses it
    with pytest.raises(jsonschema.ValidationError):
        crd_validator(crd_schema("servicemonitors")).validate(monitor)
    monitor = monitoring.service_monitor("x", {}, {"a": "b"}, ("x-management", "token"))
    del monitor["spec"]["endpoints"][0]["authorization"]["credentials"]["key"]  # the CRD requires the key
    with pytest.raises(jsonschema.ValidationError):
        crd_validator(crd_schema("servicemonitors")).validate(monitor)


def test_without_the_flag_no_component(tmp_path: Path) -> None:
    assert interlace("k8s", "flows", "--image", IMAGE, "--out", str(tmp_path)).returncode == 0
    assert not (tmp_path / "components").exists()
    assert "components" not in (tmp_path / "overlays" / "prod" / "kustomization.yaml").read_text()


def test_the_alerts_pass_promtool(tmp_path: Path) -> None:
    promtool = require_command("promtool", "prometheus")
    rules = tmp_path / "rules.yaml"
    rules.write_text(json.dumps({"groups": monitoring.alert_rules()}))
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def queried_series(texts: list[str]) -> set[str]:
    return {name for text in texts for name in SERIES.findall(text)}


def dashboard_expressions() -> list[str]:
    document = json.loads(monitoring.DASHBOARD_FILE.read_text())
    return [t["expr"] for p in document["panels"] for t in p["targets"]] + [
        v["query"] for v in document["templating"]["list"] if v["type"] == "query"]


def test_the_dashboard_and_alerts_query_only_what_the_runtime_exports() -> None:
    assert monitoring.DASHBOARD_FILE.read_text() == monitoring.dashboard_text(), (
        "deploy/grafana/interlace.json is stale: run python -m deploy.monitoring")
    alert_exprs = [r["expr"] for g in monitoring.alert_rules() for r in g["rules"]]
    queried = queried_series(dashboard_expressions() + alert_exprs)
    exported = metrics.series_names()
    assert queried - exported == set()
    # and the dashboard shows every family the engine has (a new metric gets a panel)
    families = {m.name for m in metrics.REGISTRY.collect()  # the flows' own gauges (interlace_flow_*) aside
                if m.name.startswith("interlace_") and not m.name.startswith("interlace_flow_")}
    shown = {name for name in families if any(name in q for q in queried)}
    assert shown == families
