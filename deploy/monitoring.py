"""Monitoring built from the metric names the runtime exports (engine/metrics.py): a
ServiceMonitor and a PrometheusRule for the Prometheus Operator, and a Grafana dashboard.

``interlace k8s --monitoring`` writes the first two as a Kustomize component
(``components/monitoring``) that every overlay includes; ``deploy/grafana/interlace.json`` is
the dashboard, regenerated with ``python -m deploy.monitoring`` (a test checks that the file
matches and that every series it or the alerts query is one the runtime exports).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REQUESTS = "interlace_http_request_duration_seconds"
BACKEND = "interlace_backend_request_duration_seconds"
BREAKER = "interlace_circuit_breaker_state"
STORE_DEPTH = "interlace_store_depth"
DASHBOARD_FILE = Path(__file__).parent / "grafana" / "interlace.json"

# alert thresholds: a page-worthy default each, the rule's annotations say what to look at
ERROR_RATIO = 0.05
P99_SECONDS = 1.0
STORE_BACKLOG = 1000


def service_monitor(name: str, labels: dict[str, str], selector: dict[str, str],
                    token: tuple[str, str] | None = None) -> dict[str, Any]:
    """The ServiceMonitor of the management port; ``token``: (Secret name, key) of the management
    token, sent by Prometheus as ``Authorization: Bearer`` (the operator reads the Secret, which
    lives in the monitor's namespace: the overlay's, where the Deployment reads it too)."""
    endpoint: dict[str, Any] = {"port": "management", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s",
                                "honorLabels": False}
    if token is not None:
        secret, key = token
        endpoint["authorization"] = {"type": "Bearer", "credentials": {"name": secret, "key": key}}
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": {"name": name, "labels": labels},
        # one scrape per pod gives all of its workers' figures (the management port merges them)
        "spec": {"selector": {"matchLabels": selector}, "endpoints": [endpoint]},
    }


def alert_rules() -> list[dict[str, Any]]:
    """The alerting rules (the ``groups`` of a PrometheusRule, also a Prometheus rule file)."""
    per_pod = "namespace, job"
    rules = [
        {"alert": "InterlaceHighErrorRatio",
         "expr": f'sum by ({per_pod}) (rate({REQUESTS}_count{{status=~"5.."}}[5m]))\n'
                 f"  / sum by ({per_pod}) (rate({REQUESTS}_count[5m])) > {ERROR_RATIO}",
         "for": "5m", "labels": {"severity": "critical"},
         "annotations": {"summary": "More than 5% of facade requests fail with a 5xx",
                         "description": "{{ $value | humanizePercentage }} of the requests of {{ $labels.job }} in "
                                        "{{ $labels.namespace }} answered 5xx over 5 minutes; the request log "
                                        "(logger interlace.request) names the flow and backend."}},
        {"alert": "InterlaceHighLatencyP99",
         "expr": f"histogram_quantile(0.99, sum by ({per_pod}, flow, le) (rate({REQUESTS}_bucket[5m])))"
                 f" > {P99_SECONDS}",
         "for": "10m", "labels": {"severity": "warning"},
         "annotations": {"summary": "p99 latency of a flow above 1 s",
                         "description": "Flow {{ $labels.flow }} in {{ $labels.namespace }}: p99 {{ $value }} s; "
                                        "see interlace_backend_request_duration_seconds for the backend."}},
        {"alert": "InterlaceCircuitBreakerOpen",
         "expr": f"max by (namespace, endpoint, url) ({BREAKER}) == 1",
         "for": "1m", "labels": {"severity": "warning"},
         "annotations": {"summary": "A backend's circuit breaker is open",
                         "description": "Endpoint {{ $labels.endpoint }} ({{ $labels.url }}) in "
                                        "{{ $labels.namespace }} is not being called: its breaker is open."}},
        {"alert": "InterlaceStoreBacklog",
         "expr": f"max by (namespace, store) ({STORE_DEPTH}) > {STORE_BACKLOG}",
         "for": "10m", "labels": {"severity": "warning"},
         "annotations": {"summary": "Messages pile up in a store",
                         "description": "Store {{ $labels.store }} in {{ $labels.namespace }} holds {{ $value }} "
                                        "messages for 10 minutes."}},
        {"alert": "InterlaceTlsFilesRefused",
         "expr": f'sum by ({per_pod}) (increase(interlace_tls_reloads_total{{outcome="refused"}}[15m])) > 0',
         "labels": {"severity": "warning"},
         "annotations": {"summary": "Renewed TLS files cannot serve; the previous certificates still do",
                         "description": "{{ $labels.job }} in {{ $labels.namespace }} found changed TLS files "
                                        "(certificate, key, client CA or CRL) it cannot serve with and keeps the "
                                        "previous ones, which will expire: the log (logger interlace.tls) says "
                                        "why."}},
        {"alert": "InterlaceOcspLookupsFailing",
         "expr": f'sum by ({per_pod}) (increase(interlace_tls_ocsp_total{{answer="failed"}}[15m])) > 0',
         "labels": {"severity": "warning"},
         "annotations": {"summary": "Client certificates' OCSP responders give no believable answer",
                         "description": "{{ $labels.job }} in {{ $labels.namespace }} could not check client "
                                        "certificates with OCSP (unreachable, timed out, or a forged or stale "
                                        "answer): with --tls-ocsp hard-fail those clients are refused (503), "
                                        "with soft-fail served unchecked. The log (logger interlace.tls.ocsp) "
                                        "says why."}},
    ]
    return [{"name": "interlace", "rules": rules}]


def prometheus_rule(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": name, "labels": labels}, "spec": {"groups": alert_rules()}}


def component(name: str, labels: dict[str, str], selector: dict[str, str],
              token: tuple[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """The files of the Kustomize component ``components/monitoring`` (``token``: the management
    token's Secret name and key, see :func:`service_monitor`)."""
    return {
        "kustomization.yaml": {"apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component",
                               "resources": ["servicemonitor.yaml", "prometheusrule.yaml"]},
        "servicemonitor.yaml": service_monitor(name, labels, selector, token),
        "prometheusrule.yaml": prometheus_rule(name, labels),
    }


# -- the dashboard --------------------------------------------------------------------------------

SELECT = 'namespace=~"$namespace", flow=~"$flow"'


def _panel(index: int, title: str, targets: list[tuple[str, str]], unit: str, width: int = 12,
           kind: str = "timeseries") -> dict[str, Any]:
    return {
        "id": index + 1, "type": kind, "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": width, "x": (index % 2) * 12 if width == 12 else 0, "y": (index // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(targets)],
    }


def dashboard() -> dict[str, Any]:
    rate = "$__rate_interval"
    panels = [
        ("Requests per second by flow and status",
         [(f"sum by (flow, status) (rate({REQUESTS}_count{{{SELECT}}}[{rate}]))", "{{flow}} {{status}}")], "reqps"),
        ("Error ratio (5xx)",
         [(f'sum(rate({REQUESTS}_count{{{SELECT}, status=~"5.."}}[{rate}])) / '
           f"sum(rate({REQUESTS}_count{{{SELECT}}}[{rate}]))", "5xx")], "percentunit"),
        ("Latency p50 / p99 by flow",
         [(f"histogram_quantile(0.5, sum by (flow, le) (rate({REQUESTS}_bucket{{{SELECT}}}[{rate}])))",
           "p50 {{flow}}"),
          (f"histogram_quantile(0.99, sum by (flow, le) (rate({REQUESTS}_bucket{{{SELECT}}}[{rate}])))",
           "p99 {{flow}}")], "s"),
        ("Requests in flight",
         [('sum(interlace_http_requests_in_flight{namespace=~"$namespace"})', "in flight")], "short"),
        ("Backend calls per second by endpoint and outcome",
         [(f'sum by (endpoint, outcome) (rate({BACKEND}_count{{namespace=~"$namespace"}}[{rate}]))',
           "{{endpoint}} {{outcome}}")], "reqps"),
        ("Backend latency p99 by endpoint",
         [(f'histogram_quantile(0.99, sum by (endpoint, le) (rate({BACKEND}_bucket{{namespace=~"$namespace"}}'
           f"[{rate}])))", "{{endpoint}}")], "s"),
        ("Retries per second by endpoint",
         [(f'sum by (endpoint) (rate(interlace_backend_retries_total{{namespace=~"$namespace"}}[{rate}]))',
           "{{endpoint}}")], "reqps"),
        ("Circuit breakers (0 closed, 1 open, 2 half-open)",
         [(f'max by (endpoint, url) ({BREAKER}{{namespace=~"$namespace"}})', "{{endpoint}} {{url}}"),
          (f'sum by (endpoint, state) (increase(interlace_circuit_breaker_transitions_total{{namespace=~"$namespace"}}'
           f"[{rate}]))", "{{endpoint}} to {{state}}")], "short"),
        ("Step time p99 by flow and step",
         [(f"histogram_quantile(0.99, sum by (flow, step, le) (rate(interlace_step_duration_seconds_bucket"
           f"{{{SELECT}}}[{rate}])))", "{{flow}} {{step}}")], "s"),
        ("Body sizes p90 (request, response)",
         [(f"histogram_quantile(0.9, sum by (flow, le) (rate(interlace_http_request_body_bytes_bucket"
           f"{{{SELECT}}}[{rate}])))", "request {{flow}}"),
          (f"histogram_quantile(0.9, sum by (flow, le) (rate(interlace_http_response_body_bytes_bucket"
           f"{{{SELECT}}}[{rate}])))", "response {{flow}}")], "bytes"),
        ("Sources: lag and messages per second",
         [('max by (source) (interlace_source_lag_seconds{namespace=~"$namespace"})', "lag {{source}}"),
          (f'sum by (source, outcome) (rate(interlace_source_messages_total{{namespace=~"$namespace"}}[{rate}]))',
           "{{source}} {{outcome}}")], "short"),
        ("Wire taps per second by step and outcome",
         [(f'sum by (flow, step, outcome) (rate(interlace_wire_taps_total{{namespace=~"$namespace"}}[{rate}]))',
           "{{flow}} {{step}} {{outcome}}")], "reqps"),
        ("Load-balanced calls per second by endpoint and outcome",
         [(f'sum by (step, endpoint, outcome) (rate(interlace_load_balanced_calls_total{{namespace=~"$namespace"}}'
           f"[{rate}]))", "{{step}} {{endpoint}} {{outcome}}")], "reqps"),
        ("least_response_time: average response time by endpoint (what the balancer picks by)",
         [(f"max by (flow, step, endpoint) (interlace_load_balance_response_time_seconds{{{SELECT}}})",
           "{{flow}} {{step}} {{endpoint}}")], "s"),
        ("Aggregated groups completed per second by step and reason",
         [(f'sum by (step, completed_by) (rate(interlace_aggregated_groups_total{{namespace=~"$namespace"}}'
           f"[{rate}]))", "{{step}} {{completed_by}}"),
          (f'sum by (step, outcome) (rate(interlace_aggregated_messages_total{{outcome="refused",'
           f'namespace=~"$namespace"}}[{rate}]))', "{{step}} refused"),
          (f'sum by (step, outcome) (rate(interlace_aggregate_deliveries_total{{outcome!="sent",'
           f'namespace=~"$namespace"}}[{rate}]))', "{{step}} delivery {{outcome}}")], "reqps"),
        ("Resequenced messages per second by step and outcome",
         [(f'sum by (step, outcome) (rate(interlace_resequenced_messages_total{{namespace=~"$namespace"}}'
           f"[{rate}]))", "{{step}} {{outcome}}"),
          (f'sum by (step, outcome) (rate(interlace_resequence_deliveries_total{{outcome="failed",'
           f'namespace=~"$namespace"}}[{rate}]))', "{{step}} send failed")], "reqps"),
        ("Store depth",
         [(f'max by (store) ({STORE_DEPTH}{{namespace=~"$namespace"}})', "{{store}}")], "short"),
        ("Refused before a flow, and clients gone mid-request",
         [(f'sum by (listener, reason) (rate(interlace_http_refused_total{{namespace=~"$namespace"}}[{rate}]))',
           "refused {{listener}} {{reason}}"),
          (f'sum by (stage) (rate(interlace_http_client_disconnects_total{{namespace=~"$namespace"}}[{rate}]))',
           "client gone {{stage}}")], "reqps"),
        ("Reloads and worker restarts",
         [(f'sum by (outcome) (increase(interlace_reloads_total{{namespace=~"$namespace"}}[{rate}]))',
           "{{outcome}}"),
          ('max(interlace_flows_loaded{namespace=~"$namespace"})', "flows loaded"),
          (f'sum by (outcome) (increase(interlace_tls_reloads_total{{namespace=~"$namespace"}}[{rate}]))',
           "TLS files {{outcome}}"),
          (f'sum by (answer) (increase(interlace_tls_ocsp_total{{namespace=~"$namespace"}}[{rate}]))',
           "OCSP {{answer}}"),
          (f'sum by (pod) (increase(interlace_worker_restarts_total{{namespace=~"$namespace"}}[{rate}]))',
           "worker restarts {{pod}}")], "short"),
        ("CPU and memory per pod",
         [(f'sum by (pod) (rate(process_cpu_seconds_total{{namespace=~"$namespace"}}[{rate}]))', "cpu {{pod}}"),
          ('sum by (pod) (process_resident_memory_bytes{namespace=~"$namespace"})', "rss {{pod}}")], "short"),
    ]
    return {
        "title": "Interlace",
        "uid": "interlace-facade",
        "tags": ["interlace"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
            {"name": "namespace", "type": "query", "label": "Namespace", "multi": True, "includeAll": True,
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": f"label_values({REQUESTS}_count, namespace)", "refresh": 2},
            {"name": "flow", "type": "query", "label": "Flow", "multi": True, "includeAll": True,
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": f'label_values({REQUESTS}_count{{namespace=~"$namespace"}}, flow)', "refresh": 2},
        ]},
        "panels": [_panel(i, title, targets, unit) for i, (title, targets, unit) in enumerate(panels)],
    }


def dashboard_text() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main() -> int:
    DASHBOARD_FILE.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD_FILE.write_text(dashboard_text(), encoding="utf-8")
    print(f"wrote {DASHBOARD_FILE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
