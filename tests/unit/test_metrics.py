"""How several workers' samples combine into one scrape (engine/metrics.py)."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from engine import metrics


def family(name: str, kind: str, samples: list[list[Any]]) -> dict[str, Any]:
    return {"name": name, "type": kind, "help": "h", "unit": "", "samples": samples}


def worker(in_flight: float, breaker: float, requests: float, cpu: float, exemplar: list[Any] | None) -> list[Any]:
    return [
        family("interlace_http_requests_in_flight", "gauge", [["interlace_http_requests_in_flight", {}, in_flight,
                                                               None, None]]),
        family("interlace_circuit_breaker_state", "gauge", [["interlace_circuit_breaker_state",
                                                             {"endpoint": "e", "url": "u"}, breaker, None, None]]),
        family("interlace_backend_retries", "counter", [
            ["interlace_backend_retries_total", {"endpoint": "e"}, requests, None, exemplar],
            ["interlace_backend_retries_created", {"endpoint": "e"}, 100 + requests, None, None]]),
        family("process_cpu_seconds", "counter", [["process_cpu_seconds_total", {}, cpu, None, None]]),
    ]


def test_counters_add_up_gauges_follow_their_mode_process_metrics_stay_per_worker() -> None:
    merged = {m.name: m for m in metrics.merge_families([
        worker(2, 0, 3, 1.5, None), worker(1, 1, 4, 2.5, [{"trace_id": "ab"}, 1.0, 5.0])])}
    assert [s.value for s in merged["interlace_http_requests_in_flight"].samples] == [3]
    assert [s.value for s in merged["interlace_circuit_breaker_state"].samples] == [1]  # the worst
    total, created = merged["interlace_backend_retries"].samples
    assert (total.value, created.value) == (7, 103)
    assert total.exemplar is not None and total.exemplar.labels == {"trace_id": "ab"}
    assert [(s.labels, s.value) for s in merged["process_cpu_seconds"].samples] == [
        ({"worker": "0"}, 1.5), ({"worker": "1"}, 2.5)]


def test_the_merged_exposition_is_valid_prometheus_text() -> None:
    body, content_type = metrics.exposition([metrics.local_families(), metrics.local_families()], None)
    assert content_type.startswith("text/plain; version=0.0.4")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"interlace_http_request_duration_seconds", "interlace_reloads", "process_cpu_seconds"} <= names


def test_label_values_stay_bounded() -> None:
    assert metrics.request_method("PROPFIND") == "other" and metrics.request_method("GET") == "GET"
    assert [metrics.outcome_of_status(s) for s in (101, 204, 302, 404, 503, 999)] == [
        "1xx", "2xx", "3xx", "4xx", "5xx", "5xx"]


def test_a_scrape_sees_every_observation_tallied_before_it() -> None:
    """The request histograms count in plain tallies first; any collection pushes them."""
    tally = metrics.request_seconds("tallied", "/t", "GET", "200")
    labels = {"flow": "tallied", "route": "/t", "method": "GET", "status": "200"}
    name = "interlace_http_request_duration_seconds"
    before = metrics.REGISTRY.get_sample_value(f"{name}_count", labels) or 0.0
    for seconds in (0.0005, 0.003, 0.003, 40.0):
        tally.observe(seconds)
    assert metrics.REGISTRY.get_sample_value(f"{name}_count", labels) == before + 4
    assert metrics.REGISTRY.get_sample_value(f"{name}_bucket", {**labels, "le": "0.001"}) == 1
    assert metrics.REGISTRY.get_sample_value(f"{name}_bucket", {**labels, "le": "0.005"}) == 3
    assert metrics.REGISTRY.get_sample_value(f"{name}_bucket", {**labels, "le": "+Inf"}) == 4
    assert metrics.REGISTRY.get_sample_value(f"{name}_sum", labels) == 40.0065
    families = {f["name"]: f for f in metrics.local_families()}  # what a peer worker sends
    counts = [s for s in families[name]["samples"] if s[0] == f"{name}_count" and s[1] == labels]
    assert [s[2] for s in counts] == [before + 4]
    tally.observe(0.02)
    body, _ = metrics.exposition(None, None)
    assert f'{name}_count{{flow="tallied",method="GET",route="/t",status="200"}} 5.0' in body.decode()
