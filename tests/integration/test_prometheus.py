"""Metrics as a platform team sees them: Debian's Prometheus scrapes an engine running two
workers, and its HTTP API must give every worker's figures summed after a known load, with the
trace ids as exemplars; the management API answers for the whole group."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from deploy.monitoring import alert_rules
from tests.deploy.test_monitoring import dashboard_expressions
from tests.support.backends import BackendServer
from tests.support.engine import RunningEngine, run_engine, write_flows
from tests.support.otlp import OtlpHttpReceiver
from tests.support.prometheus import PrometheusServer

FLOWS = """
endpoints:
  backend:
    http: {url: "%s", breaker: {failures: 3, reset: 60s}}
flows:
  lookup:
    source: {http: {method: POST, path: "/items/{id}"}}
    steps:
      - call: {endpoint: backend, method: POST, path: "/things/${path.id}"}
  reject:
    source: {http: {method: GET, path: /reject}}
    steps:
      - fail: {status: 422, message: not today}
  version:
    source: {http: {method: GET, path: /version}}
    steps: [{respond: {text: "%s"}}]
"""
LOOKUPS, REJECTS, MISSES = 40, 5, 3
MORE_ROUNDS = 25  # rounds of 8 more lookups at most, until both workers have answered some
SENT = {"lookups": 0}  # how many lookups the engine fixture sent in all


@pytest.fixture(scope="module")
def backend() -> Iterator[BackendServer]:
    with BackendServer() as server:
        yield server


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpHttpReceiver]:
    with OtlpHttpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, backend: BackendServer,
           receiver: OtlpHttpReceiver) -> Iterator[RunningEngine]:
    folder = write_flows(tmp_path_factory.mktemp("flows"), FLOWS % (backend.url, "one"))
    with run_engine(folder, "--workers", "2", "--log-format", "json", env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "50"}) as running:
        def lookups(numbers: range) -> None:
            with ThreadPoolExecutor(8) as pool:  # new connections, several at once
                codes = list(pool.map(
                    lambda n: httpx.post(f"{running.url}/items/{n}", json={"n": n}).status_code, numbers))
            assert codes == [200] * len(numbers)

        lookups(range(LOOKUPS))
        sent = LOOKUPS
        # the kernel decides which worker takes a connection: more lookups until both have answered
        # some (a bounded number), so that the scrape below always has two workers' figures to sum
        for _ in range(MORE_ROUNDS):
            if len({line["pid"] for line in request_lines(running) if line["flow"] == "lookup"}) >= 2:
                break
            lookups(range(sent, sent + 8))
            sent += 8
        SENT["lookups"] = sent
        for _ in range(REJECTS):
            assert httpx.get(f"{running.url}/reject").status_code == 422
        for _ in range(MISSES):
            assert httpx.get(f"{running.url}/no/such/{_}").status_code == 404
        yield running


def request_lines(engine: RunningEngine) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in engine.log().splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "interlace.request"]


def test_one_scrape_sums_both_workers(engine: RunningEngine, tmp_path: Path, receiver: OtlpHttpReceiver) -> None:
    lookups = SENT["lookups"]
    served = Counter(line["pid"] for line in request_lines(engine) if line["flow"] == "lookup")
    assert sum(served.values()) == lookups
    assert len(served) == 2, f"after {lookups} lookups one worker still took every connection: {served}"
    with PrometheusServer(tmp_path / "prometheus", [f"127.0.0.1:{engine.management_port}"]) as prometheus:
        prometheus.wait_for('sum(interlace_http_request_duration_seconds_count{flow="lookup",'
                            'route="/items/{id}",method="POST",status="200"})', lookups)
        assert prometheus.value('sum(interlace_http_request_duration_seconds_count{flow="reject",'
                                'status="422"})') == REJECTS
        # unmatched paths are one series, never one per path
        assert prometheus.value('sum(interlace_http_request_duration_seconds_count{flow="",route="",'
                                'status="404"})') == MISSES
        assert prometheus.value('count(interlace_http_request_duration_seconds_count)') == 3
        assert prometheus.value('sum(interlace_backend_request_duration_seconds_count{endpoint="backend",'
                                'outcome="2xx"})') == lookups
        url = prometheus.query("interlace_backend_request_duration_seconds_count")[0]["metric"]["url"]
        assert url.startswith("http://127.0.0.1:") and "/things" not in url
        assert prometheus.value('sum(interlace_step_duration_seconds_count{flow="lookup",kind="call",'
                                'outcome="ok"})') == lookups
        assert prometheus.value('sum(interlace_http_request_body_bytes_sum{flow="lookup"})') == sum(
            len(json.dumps({"n": n}, separators=(",", ":"))) for n in range(lookups))
        assert prometheus.value("interlace_http_requests_in_flight") == 0
        assert prometheus.value('max(interlace_circuit_breaker_state{endpoint="backend"})') == 0
        assert prometheus.value("interlace_flows_loaded") == 3
        # process metrics: one series per worker, not a meaningless sum
        assert prometheus.value("count(process_resident_memory_bytes)") == 2
        assert {r["metric"]["worker"] for r in prometheus.query("process_cpu_seconds_total")} == {"0", "1"}
        # exemplars: the trace id of a request in that bucket, from the OpenMetrics scrape
        found = prometheus.exemplars('interlace_http_request_duration_seconds_bucket{flow="lookup"}')
        trace_ids = {e["labels"]["trace_id"] for series in found for e in series["exemplars"]}
        assert trace_ids, "no exemplars scraped"
        exported = {s.trace_id for s in receiver.wait_for(lambda spans: len(spans) >= lookups)}
        assert trace_ids <= exported
        # every query of the shipped dashboard and alerts runs on the scraped data
        for expression in dashboard_expressions() + [r["expr"] for g in alert_rules() for r in g["rules"]]:
            if expression.startswith("label_values("):
                continue  # a Grafana function, not PromQL
            prometheus.query(expression.replace("$__rate_interval", "1m").replace('"$namespace"', '".*"')
                             .replace('"$flow"', '".*"'))


def test_openmetrics_only_when_asked(engine: RunningEngine) -> None:
    plain = httpx.get(f"{engine.management_url}/metrics")
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# EOF" not in plain.text and "trace_id" not in plain.text
    open_metrics = httpx.get(f"{engine.management_url}/metrics",
                             headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.endswith("# EOF\n") and '# {trace_id="' in open_metrics.text


def test_management_answers_for_every_worker(engine: RunningEngine, tmp_path: Path, backend: BackendServer) -> None:
    for _ in range(4):  # whichever worker takes the connection
        flows = httpx.get(f"{engine.management_url}/flows").json()
        assert sorted(f["name"] for f in flows["flows"]) == ["lookup", "reject", "version"]
        assert [(w["worker"], w["flows"]) for w in flows["workers"]] == [(0, 3), (1, 3)]
        endpoints = httpx.get(f"{engine.management_url}/endpoints").json()
        assert [w["worker"] for w in endpoints["workers"]] == [0, 1]
        assert all(w["endpoints"]["backend"]["targets"][0]["breaker"] == "closed" for w in endpoints["workers"])
    folder = Path(engine.process.args[4])  # type: ignore[index]  # interlace run FOLDER ...
    write_flows(folder, FLOWS % (backend.url, "two"))
    reloaded = httpx.post(f"{engine.management_url}/reload", timeout=30)
    assert reloaded.status_code == 200, reloaded.text
    body = reloaded.json()
    assert body["ok"] is True and [(w["worker"], w["ok"], w["flows"]) for w in body["workers"]] == [
        (0, True, 3), (1, True, 3)]
    assert len({w["pid"] for w in body["workers"]}) == 2
    assert {httpx.get(f"{engine.url}/version").text for _ in range(20)} == {"two"}  # on both workers
    write_flows(folder, FLOWS.replace("respond:", "respnd:") % (backend.url, "three"))
    refused = httpx.post(f"{engine.management_url}/reload", timeout=30)
    assert refused.status_code == 422
    assert [w["ok"] for w in refused.json()["workers"]] == [False, False]
    assert "respnd" in refused.json()["errors"][0]
    assert {httpx.get(f"{engine.url}/version").text for _ in range(10)} == {"two"}
    metrics = httpx.get(f"{engine.management_url}/metrics").text
    assert 'interlace_reloads_total{outcome="ok"} 2.0' in metrics
    assert 'interlace_reloads_total{outcome="failed"} 2.0' in metrics
