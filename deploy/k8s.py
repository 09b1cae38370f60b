"""`interlace k8s`: Kubernetes manifests generated from the flows, as a Kustomize base and one
overlay per environment (dev, stage, prod), for GitOps promotion.

What the flows say decides what the manifests hold: the environment variables they read
become the ConfigMap's keys, the secrets they read become items of a Secret that is referenced,
never written; ports, probes and the drain come from the runtime's own defaults.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from deploy import monitoring
from deploy.k8s_data import DATA_DIR, DATA_VOLUME, LocalDatabase, local_databases
from engine.loader import LoadErrors, load_project
from engine.model import Project

FACADE_PORT = 8290
MANAGEMENT_PORT = 9201
DRAIN_SECONDS = 20
PRE_STOP_SECONDS = 5  # lets the endpoints controller and the gateway stop sending before the drain
SECRETS_DIR = "/var/run/secrets/interlace"
TLS_DIR = "/var/run/secrets/interlace-tls"  # the facade's certificate and the client CA (--tls-secret)
RUNTIME_UID = 10001
# the Secret holding the management token (key `token`): created per namespace, never written here
MANAGEMENT_TOKEN_KEY = "token"
ENVIRONMENTS = ("dev", "stage", "prod")


@dataclass(frozen=True)
class Sizing:
    replicas: int
    min_replicas: int
    max_replicas: int
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str
    log_level: str


SIZING = {
    "dev": Sizing(1, 1, 2, "50m", "500m", "64Mi", "256Mi", "debug"),
    "stage": Sizing(2, 2, 4, "250m", "1", "128Mi", "256Mi", "info"),
    "prod": Sizing(3, 3, 12, "500m", "1", "128Mi", "384Mi", "info"),
}
BASE_SIZING = Sizing(2, 2, 6, "250m", "1", "128Mi", "256Mi", "info")  # the base, before an overlay's patches


@dataclass
class Options:
    name: str = "interlace"
    image: str = "interlace-facade:latest"
    gateway_labels: dict[str, str] = field(default_factory=lambda: {"app.kubernetes.io/name": "gateway"})
    monitoring_namespace: str = "monitoring"
    namespace_prefix: str | None = None  # overlays use NAME-ENV by default
    monitoring: bool = False  # the Prometheus Operator's ServiceMonitor and PrometheusRule, as a component
    # a Secret (tls.crt, tls.key and, for mutual TLS, ca.crt) the facade serves TLS with; None: plain HTTP
    tls_secret: str | None = None
    tls_client_cert: str = "required"  # with ca.crt: required or optional (engine/tls.py)
    tls_crl: bool = False  # the Secret's ca.crl: CRL checks of the client certificates
    tls_ocsp: str | None = None  # hard-fail | soft-fail: OCSP checks of the client certificates (engine/ocsp.py)
    tls_ocsp_responder: str | None = None  # the responder asked instead of each certificate's own
    tls_ocsp_scope: str | None = None  # chain (the engine's default) | leaf
    replicas: int | None = None  # every environment's replicas (default: SIZING's)
    env: dict[str, str] = field(default_factory=dict)  # values of the flows' ${env.X} in every ConfigMap
    # the SQLite files the flows keep beside them (deploy/k8s_data.py): one replica, an emptyDir
    local_databases: tuple[LocalDatabase, ...] = ()

    def replicas_of(self, sizing: Sizing) -> tuple[int, int, int]:
        """(replicas, HPA min, HPA max) of an environment: one with a local SQLite file."""
        if self.local_databases:
            return 1, 1, 1
        if self.replicas is not None:
            return self.replicas, self.replicas, max(self.replicas, sizing.max_replicas)
        return sizing.replicas, sizing.min_replicas, sizing.max_replicas

    def settings(self, names: set[str]) -> dict[str, str]:
        """The ConfigMap's value of each variable the flows read: given, a local database's
        place in the data volume, or empty (the flow's own default)."""
        values = dict.fromkeys(sorted(names), "")
        for database in self.local_databases:
            for variable in database.variables:
                values[variable] = database.pod_url()
        values.update({k: v for k, v in self.env.items() if k in names})
        return values


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """(name, tag, digest) of an image reference."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    tag = None
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        image, tag = image.rsplit(":", 1)
    return image, tag, digest


def _labels(options: Options) -> dict[str, str]:
    return {"app.kubernetes.io/name": options.name, "app.kubernetes.io/component": "facade",
            "app.kubernetes.io/part-of": "interlace"}


def _selector(options: Options) -> dict[str, str]:
    return {"app.kubernetes.io/name": options.name}


def deployment(project: Project, options: Options) -> dict[str, Any]:
    probe_port = "management"
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if project.secret_refs:
        volumes.append({"name": "secrets", "secret": {
            "secretName": f"{options.name}-secrets", "defaultMode": 0o440,
            "items": [{"key": key, "path": key} for key in sorted(project.secret_refs)]}})
        mounts.append({"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True})
    tls_env: list[dict[str, Any]] = []
    if options.tls_secret:
        # a kubernetes.io/tls Secret (cert-manager writes ca.crt beside tls.crt and tls.key); the
        # kubelet updates the mounted files when the Secret is renewed and the engine serves new
        # connections with them without a rollout (engine/tls_live.py)
        volumes.append({"name": "tls", "secret": {"secretName": options.tls_secret, "defaultMode": 0o440}})
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
        tls_env = [{"name": "INTERLACE_TLS_CERT", "value": f"{TLS_DIR}/tls.crt"},
                   {"name": "INTERLACE_TLS_KEY", "value": f"{TLS_DIR}/tls.key"}]
        if options.tls_client_cert != "none":
            tls_env += [{"name": "INTERLACE_TLS_CLIENT_CA", "value": f"{TLS_DIR}/ca.crt"},
                        {"name": "INTERLACE_TLS_CLIENT_CERT", "value": options.tls_client_cert}]
            if options.tls_crl:
                tls_env.append({"name": "INTERLACE_TLS_CRL", "value": f"{TLS_DIR}/ca.crl"})
            if options.tls_ocsp:  # the responder is reached through the pod's egress (the policy admits ingress only)
                tls_env.append({"name": "INTERLACE_TLS_OCSP", "value": options.tls_ocsp})
                if options.tls_ocsp_responder:
                    tls_env.append({"name": "INTERLACE_TLS_OCSP_RESPONDER", "value": options.tls_ocsp_responder})
                if options.tls_ocsp_scope:
                    tls_env.append({"name": "INTERLACE_TLS_OCSP_SCOPE", "value": options.tls_ocsp_scope})
    if options.local_databases:  # the root filesystem is read-only: SQLite files live here
        volumes.append({"name": DATA_VOLUME, "emptyDir": {"sizeLimit": "1Gi"}})
        mounts.append({"name": DATA_VOLUME, "mountPath": DATA_DIR})
    container = {
        "name": "interlace",
        "image": "interlace-facade",
        "ports": [{"name": "http", "containerPort": FACADE_PORT, "protocol": "TCP"},
                  {"name": "management", "containerPort": MANAGEMENT_PORT, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": f"{options.name}-config"}}],
        "env": [{"name": "INTERLACE_SECRETS_DIR", "value": SECRETS_DIR},
                # management listens on the pod's address (the kubelet probes it there) and so needs a
                # token; the probes' /health paths answer without it. A missing Secret keeps the pod
                # from starting, rather than starting it open.
                {"name": "INTERLACE_MANAGEMENT_TOKEN", "valueFrom": {"secretKeyRef": {
                    "name": management_secret(options), "key": MANAGEMENT_TOKEN_KEY}}}, *tls_env],
        "startupProbe": {"httpGet": {"path": "/health/ready", "port": probe_port},
                         "periodSeconds": 1, "failureThreshold": 30},
        "readinessProbe": {"httpGet": {"path": "/health/ready", "port": probe_port},
                           "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": "/health/live", "port": probe_port},
                          "periodSeconds": 10, "failureThreshold": 3},
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUNTIME_UID, "runAsGroup": RUNTIME_UID,
                            "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": options.name, "labels": _labels(options)},
        "spec": {
            "replicas": options.replicas_of(BASE_SIZING)[0],
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": _selector(options)},
            # a local SQLite file is one pod's: never two at once, not even during a rollout
            "strategy": {"type": "Recreate"} if options.local_databases else
            {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": _labels(options),
                             "annotations": {"prometheus.io/scrape": "true",
                                             "prometheus.io/port": str(MANAGEMENT_PORT),
                                             "prometheus.io/path": "/metrics"}},
                "spec": {
                    # longer than the preStop pause plus the drain, so SIGKILL never cuts a request
                    "terminationGracePeriodSeconds": PRE_STOP_SECONDS + DRAIN_SECONDS + 10,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": RUNTIME_UID, "runAsGroup": RUNTIME_UID,
                                        "fsGroup": RUNTIME_UID, "seccompProfile": {"type": "RuntimeDefault"}},
                    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                                   "whenUnsatisfiable": "ScheduleAnyway",
                                                   "labelSelector": {"matchLabels": _selector(options)}}],
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def management_secret(options: Options) -> str:
    return f"{options.name}-management"


def service(options: Options) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": options.name, "labels": _labels(options)},
        "spec": {"type": "ClusterIP", "selector": _selector(options),
                 "ports": [{"name": "http", "port": FACADE_PORT, "targetPort": "http", "protocol": "TCP"},
                           {"name": "management", "port": MANAGEMENT_PORT, "targetPort": "management",
                            "protocol": "TCP"}]},
    }


def config_map(project: Project, options: Options) -> dict[str, Any]:
    data = {"INTERLACE_HOST": "0.0.0.0", "INTERLACE_PORT": str(FACADE_PORT),
            # the kubelet's probes and the monitoring namespace reach management on the pod's address;
            # the runtime serves it there only with INTERLACE_MANAGEMENT_TOKEN (the Secret reference)
            "INTERLACE_MANAGEMENT_HOST": "0.0.0.0",
            "INTERLACE_MANAGEMENT_PORT": str(MANAGEMENT_PORT), "INTERLACE_LOG_FORMAT": "json",
            "INTERLACE_LOG_LEVEL": "info",
            "INTERLACE_DRAIN_TIMEOUT": str(DRAIN_SECONDS), "INTERLACE_MAX_BODY": "10MiB"}
    # the flows' own settings: empty means "use the flow's default" (${env.X || 'default'})
    for name, value in options.settings(project.env_refs).items():
        data.setdefault(name, value)
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"{options.name}-config", "labels": _labels(options)}, "data": data}


def autoscaler(options: Options) -> dict[str, Any]:
    _, least, most = options.replicas_of(BASE_SIZING)
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": options.name, "labels": _labels(options)},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": options.name},
                 "minReplicas": least, "maxReplicas": most,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                                               "target": {"type": "Utilization",
                                                                          "averageUtilization": 70}}}],
                 "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}},
    }


def disruption_budget(options: Options) -> dict[str, Any]:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": options.name, "labels": _labels(options)},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(options)}}}


def network_policy(options: Options) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": options.name, "labels": _labels(options)},
        "spec": {
            "podSelector": {"matchLabels": _selector(options)},
            "policyTypes": ["Ingress"],
            "ingress": [
                # the API gateway's pods, in any namespace, to the facade port only
                {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": dict(options.gateway_labels)}}],
                 "ports": [{"protocol": "TCP", "port": FACADE_PORT}]},
                # the cluster's monitoring to the management port only (metrics; probes come from the kubelet)
                {"from": [{"namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": options.monitoring_namespace}}}],
                 "ports": [{"protocol": "TCP", "port": MANAGEMENT_PORT}]},
            ],
        },
    }


BASE_FILES = ("deployment.yaml", "service.yaml", "configmap.yaml", "hpa.yaml", "pdb.yaml", "networkpolicy.yaml")


def base_resources(project: Project, options: Options) -> dict[str, dict[str, Any]]:
    resources = [deployment(project, options), service(options), config_map(project, options), autoscaler(options),
                 disruption_budget(options), network_policy(options)]
    return dict(zip(BASE_FILES, resources, strict=True))


def overlay(environment: str, project: Project, options: Options) -> dict[str, dict[str, Any]]:
    sizing = SIZING[environment]
    name, tag, digest = split_image(options.image)
    image: dict[str, Any] = {"name": "interlace-facade", "newName": name}
    if digest:
        image["digest"] = digest
    else:
        image["newTag"] = tag or "latest"
    namespace = f"{options.namespace_prefix or options.name}-{environment}"
    replicas, least, most = options.replicas_of(sizing)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": namespace,
        "resources": ["../../base"],
        "labels": [{"pairs": {"app.kubernetes.io/instance": f"{options.name}-{environment}",
                              "environment": environment}, "includeSelectors": False}],
        "images": [image],
        "replicas": [{"name": options.name, "count": replicas}],
        "patches": [{"path": "resources.yaml"}, {"path": "autoscaling.yaml"}, {"path": "config.yaml"}],
    }
    if options.monitoring:
        kustomization["components"] = ["../../components/monitoring"]
    resources_patch = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": options.name},
        "spec": {"template": {"spec": {"containers": [{
            "name": "interlace",
            "resources": {"requests": {"cpu": sizing.cpu_request, "memory": sizing.memory_request},
                          "limits": {"cpu": sizing.cpu_limit, "memory": sizing.memory_limit}}}]}}},
    }
    autoscaling_patch = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": options.name},
        "spec": {"minReplicas": least, "maxReplicas": most},
    }
    config_patch = {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{options.name}-config"},
        "data": {"INTERLACE_LOG_LEVEL": sizing.log_level, **options.settings(project.env_refs)},
    }
    return {"kustomization.yaml": kustomization, "resources.yaml": resources_patch,
            "autoscaling.yaml": autoscaling_patch, "config.yaml": config_patch}


def _yaml_text(document: dict[str, Any], header: str = "") -> str:
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096
    out = io.StringIO()
    yaml.dump(document, out)
    return header + out.getvalue()


HEADER = "# Generated by `interlace k8s` from the flows; regenerate rather than edit.\n"
CONFIG_HEADER = ("# Per-environment values of the settings the flows read (${env.NAME}); empty keeps the\n"
                 "# flow's own default. Generated once: edit the values, keep the keys.\n")


def write_manifests(project: Project, options: Options, out: Path) -> list[Path]:
    written: list[Path] = []
    base = out / "base"
    base.mkdir(parents=True, exist_ok=True)
    for file, resource in base_resources(project, options).items():
        (base / file).write_text(_yaml_text(resource, HEADER), encoding="utf-8")
        written.append(base / file)
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                     "resources": list(BASE_FILES)}
    (base / "kustomization.yaml").write_text(_yaml_text(kustomization, HEADER), encoding="utf-8")
    written.append(base / "kustomization.yaml")
    if options.monitoring:
        folder = out / "components" / "monitoring"
        folder.mkdir(parents=True, exist_ok=True)
        # Prometheus scrapes with the management token the pods require (the same Secret and key)
        token = (management_secret(options), MANAGEMENT_TOKEN_KEY)
        for file, document in monitoring.component(options.name, _labels(options), _selector(options),
                                                   token).items():
            (folder / file).write_text(_yaml_text(document, HEADER), encoding="utf-8")
            written.append(folder / file)
    for environment in ENVIRONMENTS:
        folder = out / "overlays" / environment
        folder.mkdir(parents=True, exist_ok=True)
        for file, document in overlay(environment, project, options).items():
            path = folder / file
            if file == "config.yaml" and path.exists():
                continue  # the operator's values survive regeneration
            path.write_text(_yaml_text(document, CONFIG_HEADER if file == "config.yaml" else HEADER),
                            encoding="utf-8")
            written.append(path)
    return written


# Kubernetes' own rules for the names the manifests are made of: kubectl refused what broke them
# only at apply time, after the manifests were written and committed
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LONGEST_SUFFIX = {"name": len("-management"), "namespace prefix": len("-stage")}


def _name_of(what: str, pattern: re.Pattern[str], rule: str, longest: int = 63) -> Any:
    """An argparse type: ``what`` must be a Kubernetes name (``rule`` says which), with room for
    the longest suffix the manifests add to it."""
    room = longest - _LONGEST_SUFFIX.get(what, 0)

    def check(text: str) -> str:
        if not pattern.fullmatch(text) or len(text) > room:
            raise argparse.ArgumentTypeError(f"{what} {text[:80]!r} is not {rule} of at most {room} characters "
                                             "(Kubernetes refuses it)")
        return text
    return check


def _label(text: str) -> dict[str, str]:
    key, _, value = text.partition("=")
    if not key or not value:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    prefix, slash, name = key.rpartition("/")
    if (slash and (not _DNS_SUBDOMAIN.fullmatch(prefix) or len(prefix) > 253)) \
            or not _LABEL_NAME.fullmatch(name) or len(name) > 63 \
            or not _LABEL_NAME.fullmatch(value) or len(value) > 63:
        raise argparse.ArgumentTypeError(f"{text[:120]!r} is not a Kubernetes label: KEY=VALUE, each at most 63 of "
                                         "letters, digits, '-', '_', '.' (a KEY may start with a DNS prefix/)")
    return {key: value}


def _image(text: str) -> str:
    if not text or any(c.isspace() or not c.isprintable() for c in text):
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is not an image reference (REGISTRY/NAME:TAG, no spaces)")
    return text


def _refusal(database: LocalDatabase, options: Options) -> str | None:
    """Why the manifests cannot run this local SQLite database, or None (one replica can)."""
    where = f"{database.location}: endpoint {database.endpoint!r} keeps its data in the SQLite file {database.file}"
    if not database.variables:
        return (f"{where}, named in the flow itself: a pod cannot write beside the flows (its root filesystem is "
                f"read-only). Read the URL from a variable, e.g. url: ${{env.DATABASE_URL || "
                f"'sqlite:///{database.file}'}}, so that the deployment can place the file or point it at "
                f"PostgreSQL")
    if options.replicas is not None and options.replicas > 1:
        variable = database.variables[0]
        return (f"{where} (its URL from {variable}): {options.replicas} replicas would each have a copy of their "
                f"own. Point {variable} at a shared database, --env {variable}=postgresql://USER@HOST:5432/DB, "
                f"or deploy one replica (--replicas 1, the file in an emptyDir)")
    return None


def _setting(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    if not key or not _:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key, value


def _k8s(args: argparse.Namespace) -> int:
    try:
        project = load_project(Path(args.dir))
    except LoadErrors as exc:
        print(exc, file=sys.stderr)
        return 1
    options = Options(name=args.name, image=args.image, gateway_labels=args.gateway_label,
                      monitoring_namespace=args.monitoring_namespace, namespace_prefix=args.namespace_prefix,
                      monitoring=args.monitoring, tls_secret=args.tls_secret, tls_client_cert=args.tls_client_cert,
                      tls_crl=args.tls_crl, tls_ocsp=args.tls_ocsp, tls_ocsp_responder=args.tls_ocsp_responder,
                      tls_ocsp_scope=args.tls_ocsp_scope, replicas=args.replicas, env=dict(args.env))
    client_certificates = options.tls_secret and options.tls_client_cert != "none"
    if (options.tls_ocsp or options.tls_ocsp_responder) and not client_certificates:
        print("interlace k8s: --tls-ocsp and --tls-ocsp-responder need --tls-secret with client certificates "
              "(--tls-client-cert required or optional)", file=sys.stderr)
        return 2
    if (options.tls_ocsp_responder or options.tls_ocsp_scope) and not options.tls_ocsp:
        print("interlace k8s: --tls-ocsp-responder and --tls-ocsp-scope need --tls-ocsp (hard-fail or soft-fail)",
              file=sys.stderr)
        return 2
    local = local_databases(project, options.env)
    refusals = [refusal for database in local if (refusal := _refusal(database, options))]
    if refusals:
        for refusal in refusals:
            print(f"interlace k8s: {refusal}", file=sys.stderr)
        return 1
    options.local_databases = tuple(local)
    written = write_manifests(project, options, Path(args.out))
    print(f"wrote {len(written)} files under {args.out} (base, overlays {', '.join(ENVIRONMENTS)})")
    print(f"management needs a token: create it per namespace, e.g. kubectl create secret generic "
          f"{management_secret(options)} --from-literal={MANAGEMENT_TOKEN_KEY}=\"$(openssl rand -hex 32)\"")
    if options.tls_secret:
        print(f"the facade serves TLS from a Secret: create it per namespace, e.g. kubectl create secret generic "
              f"{options.tls_secret} --from-file=tls.crt=facade.crt --from-file=tls.key=facade.key"
              + (" --from-file=ca.crt=clients-ca.crt" if options.tls_client_cert != "none" else "")
              + (" --from-file=ca.crl=clients.crl" if options.tls_crl and options.tls_client_cert != "none" else ""))
    for database in local:
        variable = database.variables[0]
        print(f"note: endpoint {database.endpoint!r} keeps its data in the SQLite file {database.file}: "
              f"{variable}={database.pod_url()} (in the ConfigMap) puts it in the emptyDir volume "
              f"{DATA_VOLUME!r}, writable but lost whenever the pod is replaced, and every environment runs "
              f"one replica (strategy Recreate). For data that lasts, or replicas, point {variable} at a "
              f"shared database: --env {variable}=postgresql://USER@HOST:5432/DB")
    if project.secret_refs:
        keys = " ".join(f"--from-literal={k}=..." for k in sorted(project.secret_refs))
        print(f"the flows read secrets: create them per namespace, e.g. "
              f"kubectl create secret generic {args.name}-secrets {keys}")
    return 0


def add_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "k8s", help="write Kubernetes manifests (Kustomize base and dev/stage/prod overlays)",
        description="Write a Kustomize base (Deployment, Service, ConfigMap, Secret references, HPA, PDB, "
                    "NetworkPolicy) and overlays dev, stage and prod for the flows of DIR.")
    parser.add_argument("dir", metavar="DIR")
    parser.add_argument("--image", required=True, type=_image,
                        help="the image built by `interlace build` (REGISTRY/NAME:TAG)")
    parser.add_argument("--out", required=True, help="output folder (DIR/base, DIR/overlays/ENV)")
    parser.add_argument("--name", default="interlace",
                        type=_name_of("name", _DNS_1035, "a DNS-1035 label (a-z, 0-9, '-', starting with a letter)"),
                        help="name of the Deployment, Service, ... (default interlace)")
    parser.add_argument("--gateway-label", type=_label, default={"app.kubernetes.io/name": "gateway"},
                        help="label of the gateway's pods, admitted to the facade port (KEY=VALUE)")
    parser.add_argument("--monitoring-namespace", default="monitoring",
                        type=_name_of("namespace", _DNS_LABEL, "a DNS-1123 label (a-z, 0-9, '-')"),
                        help="namespace admitted to the management port (metrics)")
    parser.add_argument("--namespace-prefix",
                        type=_name_of("namespace prefix", _DNS_LABEL, "a DNS-1123 label (a-z, 0-9, '-')"),
                        help="overlay namespaces are PREFIX-ENV (default: NAME-ENV)")
    parser.add_argument("--monitoring", action="store_true",
                        help="also a ServiceMonitor and a PrometheusRule (alerts: error ratio, p99 latency, breaker "
                             "open, store depth) for the Prometheus Operator, as the component components/monitoring "
                             "that every overlay includes")
    parser.add_argument("--tls-secret", metavar="SECRET",
                        type=_name_of("secret", _DNS_SUBDOMAIN, "a DNS-1123 subdomain (a-z, 0-9, '-', '.')", 253),
                        help="serve the facade over TLS with this kubernetes.io/tls Secret (tls.crt, tls.key), "
                             "and mutual TLS with its ca.crt, the CA of the clients' certificates")
    parser.add_argument("--tls-client-cert", choices=["required", "optional", "none"], default="required",
                        help="with --tls-secret: client certificates required (default), optional (flows decide "
                             "with authenticate: {client_cert: ...}) or none (TLS only, no ca.crt)")
    parser.add_argument("--tls-crl", action="store_true",
                        help="with --tls-secret: check client certificates against the CRLs in the Secret's ca.crl")
    parser.add_argument("--tls-ocsp", choices=["hard-fail", "soft-fail"],
                        help="with --tls-secret: ask each client certificate's OCSP responder whether it is revoked "
                             "(hard-fail: a responder that cannot answer refuses the client; soft-fail: serves it)")
    parser.add_argument("--tls-ocsp-responder", metavar="URL",
                        help="with --tls-ocsp: the OCSP responder asked instead of each certificate's own")
    parser.add_argument("--tls-ocsp-scope", choices=["chain", "leaf"],
                        help="with --tls-ocsp: chain (the default) asks about every intermediate CA of the client's "
                             "chain too, leaf about the client's certificate alone")
    parser.add_argument("--replicas", type=int, choices=range(1, 101), metavar="N",
                        help="replicas of every environment (default: dev 1, stage 2, prod 3); a flow keeping its "
                             "data in a local SQLite file gets one, and more are refused")
    parser.add_argument("--env", type=_setting, action="append", default=[], metavar="NAME=VALUE",
                        help="the value of a variable the flows read (${env.NAME}) in every ConfigMap, e.g. "
                             "--env INVENTORY_DB=postgresql://inventory@db:5432/inventory (repeatable)")
    parser.set_defaults(func=_k8s)
