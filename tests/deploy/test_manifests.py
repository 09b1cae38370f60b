"""`interlace k8s` and `interlace openapi`: every overlay builds with kubectl kustomize and every
resource validates against a pinned Kubernetes version's schemas; the OpenAPI 3.1 document
validates against the OpenAPI schema."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from openapi_spec_validator import validate as validate_openapi
from ruamel.yaml import YAML

from deploy.k8s import ENVIRONMENTS, Options, base_resources
from engine.loader import load_project
from tests.support.services import require_command

REPO = Path(__file__).resolve().parents[2]
KUBERNETES_VERSION = "1.33.0"  # the oldest supported release the manifests must apply to
IMAGE = "127.0.0.1:5000/shop/orders:1.4.2"


def interlace(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


# the inventory example keeps its table in a SQLite file unless INVENTORY_DB says otherwise
SHARED_DB = "INVENTORY_DB=postgresql://inventory@db.internal:5432/inventory"


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("k8s")
    result = interlace("k8s", "flows", "--image", IMAGE, "--out", str(out), "--env", SHARED_DB)
    assert result.returncode == 0, result.stderr
    assert "SQLite" not in result.stdout
    return out


def kustomize(folder: Path) -> list[dict[str, Any]]:
    kubectl = require_command("kubectl", "kubectl")
    result = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in YAML(typ="safe").load_all(result.stdout) if doc]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_overlay_builds_and_validates(manifests: Path, environment: str) -> None:
    resources = kustomize(manifests / "overlays" / environment)
    kinds = sorted(r["kind"] for r in resources)
    assert kinds == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "NetworkPolicy", "PodDisruptionBudget",
                     "Service"]
    for resource in resources:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        assert resource["metadata"]["namespace"] == f"interlace-{environment}"
    deployment = next(r for r in resources if r["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE
    expected_replicas = {"dev": 1, "stage": 2, "prod": 3}[environment]
    assert deployment["spec"]["replicas"] == expected_replicas


def test_the_deployment_runs_locked_down_and_drains(manifests: Path) -> None:
    resources = kustomize(manifests / "overlays" / "prod")
    deployment = next(r for r in resources if r["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "management"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "management"}
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    config = next(r for r in resources if r["kind"] == "ConfigMap")["data"]
    assert pod["terminationGracePeriodSeconds"] > pause + int(config["INTERLACE_DRAIN_TIMEOUT"])
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "384Mi"}


def test_config_holds_what_the_flows_read_and_secrets_are_only_referenced(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "f.yaml").write_text(
        "endpoints:\n  crm:\n    http:\n      url: ${env.CRM_URL || 'http://127.0.0.1:9'}\n"
        "      headers: {X-Key: \"${secret.\\\"crm-key\\\" || 'none'}\"}\n"
        "flows:\n  f:\n    source: {http: {path: /f}}\n    steps: [{call: {endpoint: crm}}]\n")
    out = tmp_path / "k8s"
    result = interlace("k8s", str(flows), "--image", IMAGE, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "kubectl create secret generic interlace-secrets --from-literal=crm-key=..." in result.stdout
    resources = kustomize(out / "overlays" / "dev")
    assert "Secret" not in {r["kind"] for r in resources}
    config = next(r for r in resources if r["kind"] == "ConfigMap")
    assert "CRM_URL" in config["data"]
    pod = next(r for r in resources if r["kind"] == "Deployment")["spec"]["template"]["spec"]
    secret_volume = next(v for v in pod["volumes"] if v["name"] == "secrets")["secret"]
    assert secret_volume == {"secretName": "interlace-secrets", "defaultMode": 0o440,
                             "items": [{"key": "crm-key", "path": "crm-key"}]}
    assert "none" not in json.dumps(resources)  # values stay out of the manifests


def test_network_policy_admits_only_the_gateway_and_monitoring(manifests: Path) -> None:
    policy = next(r for r in kustomize(manifests / "base") if r["kind"] == "NetworkPolicy")
    facade, management = policy["spec"]["ingress"]
    assert facade["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "gateway"}
    assert facade["ports"] == [{"protocol": "TCP", "port": 8290}]
    assert management["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert management["ports"] == [{"protocol": "TCP", "port": 9201}]


def test_schema_validation_catches_a_deliberate_mistake() -> None:
    deployment = copy.deepcopy(base_resources(load_project(REPO / "flows"), Options())["deployment.yaml"])
    kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["prot"] = container["readinessProbe"]["httpGet"].pop("port")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_regenerating_keeps_the_operators_config_values(manifests: Path) -> None:
    config = manifests / "overlays" / "prod" / "config.yaml"
    text = config.read_text()
    assert "ORDERS_API_URL: ''" in text
    config.write_text(text.replace("ORDERS_API_URL: ''", "ORDERS_API_URL: http://orders.prod"))
    assert interlace("k8s", "flows", "--image", IMAGE, "--out", str(manifests), "--env", SHARED_DB).returncode == 0
    data = next(r for r in kustomize(manifests / "overlays" / "prod") if r["kind"] == "ConfigMap")["data"]
    assert data["ORDERS_API_URL"] == "http://orders.prod"
    assert data["INVENTORY_DB"] == SHARED_DB.split("=", 1)[1]


def test_a_local_sqlite_file_gets_a_writable_emptydir_and_one_replica(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    result = interlace("k8s", "flows", "--image", IMAGE, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert ("note: endpoint 'inventory-db' keeps its data in the SQLite file inventory.db: "
            "INVENTORY_DB=sqlite:////var/lib/interlace/inventory.db (in the ConfigMap) puts it in the emptyDir "
            "volume 'data'") in result.stdout
    assert "--env INVENTORY_DB=postgresql://USER@HOST:5432/DB" in result.stdout
    for environment in ENVIRONMENTS:
        resources = kustomize(out / "overlays" / environment)
        for resource in resources:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        deployment = next(r for r in resources if r["kind"] == "Deployment")
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
        autoscaler = next(r for r in resources if r["kind"] == "HorizontalPodAutoscaler")["spec"]
        assert (autoscaler["minReplicas"], autoscaler["maxReplicas"]) == (1, 1)
        pod = deployment["spec"]["template"]["spec"]
        assert {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}} in pod["volumes"]
        container = pod["containers"][0]
        assert {"name": "data", "mountPath": "/var/lib/interlace"} in container["volumeMounts"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        data = next(r for r in resources if r["kind"] == "ConfigMap")["data"]
        assert data["INVENTORY_DB"] == "sqlite:////var/lib/interlace/inventory.db"


def test_more_replicas_than_one_with_a_local_sqlite_file_are_refused(tmp_path: Path) -> None:
    result = interlace("k8s", "flows", "--image", IMAGE, "--out", str(tmp_path / "k8s"), "--replicas", "3")
    assert result.returncode == 1
    assert ("interlace k8s: flows/inventory-data.yaml:21:12: endpoint 'inventory-db' keeps its data in the SQLite "
            "file inventory.db (its URL from INVENTORY_DB): 3 replicas would each have a copy of their own. Point "
            "INVENTORY_DB at a shared database, --env INVENTORY_DB=postgresql://USER@HOST:5432/DB") in result.stderr
    assert not (tmp_path / "k8s").exists()
    shared = interlace("k8s", "flows", "--image", IMAGE, "--out", str(tmp_path / "k8s"), "--replicas", "3",
                       "--env", SHARED_DB)
    assert shared.returncode == 0, shared.stderr
    deployment = next(r for r in kustomize(tmp_path / "k8s" / "overlays" / "stage") if r["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert "data" not in {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]}


def test_a_sqlite_file_named_in_the_flow_itself_is_refused_with_the_fix(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "f.yaml").write_text("endpoints:\n  db:\n    sql: {url: 'sqlite:///local.db'}\nflows:\n  f:\n"
                                  "    source: {http: {path: /f}}\n    steps: [{call: {endpoint: db, operation: query, "
                                  "sql: SELECT 1}}]\n")
    result = interlace("k8s", str(flows), "--image", IMAGE, "--out", str(tmp_path / "k8s"))
    assert result.returncode == 1
    assert "f.yaml:3:16: endpoint 'db' keeps its data in the SQLite file local.db, named in the flow itself" \
        in result.stderr
    assert "url: ${env.DATABASE_URL || 'sqlite:///local.db'}" in result.stderr


def test_openapi_document_is_valid_3_1_and_matches_the_flows(tmp_path: Path) -> None:
    result = interlace("openapi", "flows")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    validate_openapi(document)
    assert document["openapi"] == "3.1.0"
    get_order = document["paths"]["/orders/{id}"]["get"]
    assert get_order["operationId"] == "get-order"
    # no control character: the front refuses one in a path parameter (400 bad-path-parameter)
    assert get_order["parameters"] == [{"name": "id", "in": "path", "required": True,
                                        "schema": {"type": "string", "pattern": "^[^\\x00-\\x1f\\x7f]*$"}}]
    assert "stock" in get_order["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
    create = document["paths"]["/orders"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["required"] == ["customer", "items"]
    assert document["paths"]["/hello"]["get"]["parameters"][0]["in"] == "query"
    assert interlace("openapi", "flows", "-o", str(tmp_path / "api.yaml")).returncode == 0
    assert YAML(typ="safe").load((tmp_path / "api.yaml").read_text()) == document


def test_invalid_flows_export_nothing(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text("flows:\n  f:\n    source: {http: {path: /f}}\n    steps: [{nope: {}}]\n")
    for command in (("openapi", str(tmp_path)), ("k8s", str(tmp_path), "--image", IMAGE, "--out", str(tmp_path / "o"))):
        result = interlace(*command)
        assert result.returncode == 1
        assert "f.yaml:4:14: unknown step kind 'nope'" in result.stderr


@pytest.mark.parametrize(("option", "value", "says"), [
    ("--name", "Orders_API", "name 'Orders_API' is not a DNS-1035 label"),
    ("--name", "9lives", "is not a DNS-1035 label"),
    ("--name", "a" * 53, "of at most 52 characters"),  # orders-...-management must fit in 63
    ("--namespace-prefix", "Team-A", "namespace prefix 'Team-A' is not a DNS-1123 label"),
    ("--monitoring-namespace", "kube system", "is not a DNS-1123 label"),
    ("--gateway-label", "app name=gateway", "is not a Kubernetes label"),
    ("--gateway-label", "app=gate way", "is not a Kubernetes label"),
    ("--tls-secret", "Facade_TLS", "secret 'Facade_TLS' is not a DNS-1123 subdomain"),
    ("--image", "registry.example/interlace: 1.0", "is not an image reference"),
])
def test_names_kubernetes_refuses_are_refused_before_anything_is_written(tmp_path: Path, option: str, value: str,
                                                                          says: str) -> None:
    # they were written into every manifest, and kubectl refused them only at apply time
    out = tmp_path / "k8s"
    result = interlace("k8s", "flows", "--image", IMAGE, "--out", str(out), "--env", SHARED_DB, option, value)
    assert result.returncode == 2, result.stdout + result.stderr
    assert says in result.stderr
    assert not out.exists()
