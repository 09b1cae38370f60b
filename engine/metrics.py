"""What the engine counts, through the Prometheus client library, and one scrape for every worker.

Every name starts with ``interlace_``; label values are bounded by the flow files (flow names,
route templates, step ids, endpoint names and their base URLs), never raw paths or ids:

======================================================  =====================================  =========
metric                                                  labels                                 kind
======================================================  =====================================  =========
interlace_http_request_duration_seconds                 flow, route, method, status            histogram
interlace_http_requests_in_flight                       (none)                                 gauge
interlace_http_request_body_bytes                       flow, route                            histogram
interlace_http_response_body_bytes                      flow, route                            histogram
interlace_step_duration_seconds                         flow, step, kind, outcome              histogram
interlace_backend_request_duration_seconds              endpoint, url, outcome                 histogram
interlace_backend_retries_total                         endpoint                               counter
interlace_circuit_breaker_state                         endpoint, url  (0 closed, 1 open,      gauge
                                                        2 half-open)
interlace_circuit_breaker_transitions_total             endpoint, url, state                   counter
interlace_reloads_total                                 outcome (ok, failed)                   counter
interlace_http_refused_total                            listener, reason                       counter
interlace_http_client_disconnects_total                 stage (in_flight, queued)              counter
interlace_flows_loaded                                  (none)                                 gauge
interlace_worker_restarts_total                         worker (its place, 0..N-1)             counter
interlace_source_messages_total                         source, outcome                        counter
interlace_source_lag_seconds                            source                                 gauge
interlace_store_depth                                   store                                  gauge
interlace_load_balance_response_time_seconds            flow, step, endpoint, url              gauge
process_*, python_*                                     worker                                 (library)
======================================================  =====================================  =========

A histogram's ``_count`` is the number of requests (or calls); its buckets carry the trace id
as an exemplar when the request was traced (OpenMetrics exposition, asked for with
``Accept: application/openmetrics-text``).

Sources and stores report through :func:`source_message`, :func:`source_lag` and
:func:`store_depth`; connectors' resilience layer through :func:`backend_call`,
:func:`backend_retry` and :func:`breaker_changed`.

Each worker counts in memory (the library's default values: a lock and a float, exemplars
kept).  The histograms a request observes (request, body sizes, steps, backend calls) count in
plain per-worker ``Tally`` objects first and are pushed into the library's metrics in batches:
before every collection of the registry (a scrape, a peer's ``/metrics/families``, any
``REGISTRY.collect()``), so every scrape is exact, and while observations come at least once a
second.  With ``--workers N`` the worker that takes the scrape asks its peers for their samples
(engine/workers.py) and merges them here: counters and histograms add up, each gauge follows
the mode declared with it (sum or max), and the process and Python families keep one series per
worker (label ``worker``).  benchmarks/metrics_cost.py measured this against the library's
multiprocess mode (an mmap write per observation, and no exemplars).
"""

from __future__ import annotations

import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from time import monotonic, time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.samples import Exemplar

REGISTRY = CollectorRegistry(auto_describe=True)


class Tally:
    """One histogram child's observations, counted in plain Python and pushed into the child in
    batches.  The library's ``observe`` takes a lock twice and scans the buckets (1-2 µs, five
    times a request); this is a ``bisect`` and two additions.  One event loop per worker
    observes (no lock); ``push()`` runs on that loop too (before a collection, see ``_Pusher``,
    or from ``observe`` once a second)."""

    __slots__ = ("bounds", "child", "counts", "due", "pending", "total")

    def __init__(self, child: Histogram) -> None:
        self.child = child
        self.bounds: list[float] = child._upper_bounds
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        self.pending = False
        self.due: list[float] | None = None  # per bucket: when its exemplar may next be replaced (monotonic)

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.total += amount
        if not self.pending:
            self.pending = True
            _PENDING.append(self)
        if monotonic() >= _next_push:
            push()

    def observe_traced(self, amount: float, trace_id: str) -> None:
        """``observe``, and the trace id as its bucket's exemplar, at most once a second per
        bucket (a scrape keeps only the last one anyway).  The library's ``observe(amount,
        exemplar)`` checks the exemplar's labels on every call; ours are always the one valid
        label ``trace_id`` with 32 hex digits."""
        index = bisect_left(self.bounds, amount)
        self.counts[index] += 1
        self.total += amount
        if not self.pending:
            self.pending = True
            _PENDING.append(self)
        now = monotonic()
        if now >= _next_push:
            push()
        due = self.due
        if due is None:
            due = self.due = [0.0] * len(self.bounds)
        if now >= due[index]:
            due[index] = now + EXEMPLAR_INTERVAL
            self.child._buckets[index].set_exemplar(Exemplar({"trace_id": trace_id}, amount, time()))

    def push(self) -> None:
        counts, total = self.counts, self.total
        self.counts, self.total, self.pending = [0] * len(counts), 0.0, False
        child = self.child
        child._sum.inc(total)
        buckets = child._buckets
        for index, count in enumerate(counts):
            if count:
                buckets[index].inc(count)


_PENDING: list[Tally] = []
PUSH_INTERVAL = 1.0  # seconds: the longest the library's values lag behind the tallies
_next_push = 0.0


def push() -> None:
    """Every tally's observations into the library's metrics (before a collection; once a second)."""
    global _next_push
    _next_push = monotonic() + PUSH_INTERVAL
    pending = _PENDING[:]
    _PENDING.clear()
    for tally in pending:
        tally.push()


class _Pusher:
    """Registered first, so that a collection of the registry pushes the tallies before the
    histograms are read: a scrape is exact, whatever the batching."""

    def collect(self) -> Iterator[Metric]:
        push()
        return iter(())


REGISTRY.register(_Pusher())
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (0, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)

REQUEST_SECONDS = Histogram(
    "interlace_http_request_duration_seconds", "Facade requests: time from the request's arrival to the "
    "last byte of the answer, by flow, route template, method and status (the _count is the request count).",
    ("flow", "route", "method", "status"), buckets=LATENCY_BUCKETS, registry=REGISTRY)


class _InFlight:
    """Requests being served, counted in a plain int (one event loop per worker: no lock needed,
    where the library's gauge takes one on every change) and reported as a gauge at scrape."""

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("interlace_http_requests_in_flight", "Facade requests being served now.",
                                value=self.value)


IN_FLIGHT = _InFlight()
REGISTRY.register(IN_FLIGHT)


class _ResponseTimeAverages:
    """load_balance's least_response_time averages, read from the steps' own lists at scrape (an
    answer costs no gauge update).  Held by (flow, step) through a weak reference: a reloaded
    step replaces its predecessor's series, a removed one's go when its flow is collected."""

    NAME = "interlace_load_balance_response_time_seconds"

    def __init__(self) -> None:
        self.steps: dict[tuple[str, str], tuple[weakref.ref[Any], list[str], list[str]]] = {}

    def add(self, flow: str, step: str, members: list[str], urls: list[str], holder: Any) -> None:
        self.steps[(flow, step)] = (weakref.ref(holder), members, urls)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            self.NAME, "The decaying average response time of each endpoint of a load_balance step with strategy "
            "least_response_time, by flow, step, endpoint and its base URL: what the step picks by (failures "
            "count as slow); with several workers the highest of them.", labels=("flow", "step", "endpoint", "url"))
        for (flow, step), (held, members, urls) in list(self.steps.items()):
            holder = held()
            if holder is None:
                del self.steps[(flow, step)]
                continue
            for member, url, average in zip(members, urls, holder.averages, strict=True):
                if average is not None:  # never answered: no time to show
                    family.add_metric((flow, step, member, url), average)
        yield family


RESPONSE_TIME_AVERAGES = _ResponseTimeAverages()
REGISTRY.register(RESPONSE_TIME_AVERAGES)
REQUEST_BYTES = Histogram("interlace_http_request_body_bytes", "Request body sizes, by flow and route: the "
                          "Content-Length, else the bytes that arrived (0 without a body; a chunked body the "
                          "flow never read to its end is not counted).",
                          ("flow", "route"), buckets=SIZE_BUCKETS, registry=REGISTRY)
RESPONSE_BYTES = Histogram("interlace_http_response_body_bytes", "Response body sizes, by flow and route "
                           "(answers sent whole or streamed; an answer cut off midway is not counted).",
                           ("flow", "route"), buckets=SIZE_BUCKETS, registry=REGISTRY)
STEP_SECONDS = Histogram("interlace_step_duration_seconds", "Steps that do work (calls, transforms, SQL, "
                         "store), by flow, step id, step kind and outcome (ok, error).",
                         ("flow", "step", "kind", "outcome"), buckets=LATENCY_BUCKETS, registry=REGISTRY)
BACKEND_SECONDS = Histogram(
    "interlace_backend_request_duration_seconds", "Calls to backends, each attempt once, by endpoint, base URL "
    "and outcome (2xx, 3xx, 4xx, 5xx, timeout, unreachable, error); the _count is the call count.",
    ("endpoint", "url", "outcome"), buckets=LATENCY_BUCKETS, registry=REGISTRY)
BACKEND_RETRIES = Counter("interlace_backend_retries", "Retry rounds started after a failed attempt, by endpoint.",
                          ("endpoint",), registry=REGISTRY)
BREAKER_STATE = Gauge("interlace_circuit_breaker_state", "Circuit breaker of each endpoint URL: 0 closed, 1 open, "
                      "2 half-open (a probe is out); with several workers the worst of them.",
                      ("endpoint", "url"), registry=REGISTRY)
BREAKER_TRANSITIONS = Counter("interlace_circuit_breaker_transitions", "Circuit breaker changes, by the state "
                              "entered (open, half_open, closed).", ("endpoint", "url", "state"), registry=REGISTRY)
RELOADS = Counter("interlace_reloads", "Reloads of the flow folder, by outcome (ok, failed: the previous flows "
                  "kept serving).", ("outcome",), registry=REGISTRY)
TLS_RELOADS = Counter("interlace_tls_reloads", "Changes of the facade's TLS files (certificate, key, client CA, "
                      "CRL), by outcome (ok: new connections use them; refused: they cannot serve, the previous "
                      "ones still do).", ("outcome",), registry=REGISTRY)
TLS_OCSP = Counter("interlace_tls_ocsp", "OCSP lookups of client certificates (engine/ocsp.py), by answer: good, "
                   "revoked, unknown, failed (no believable answer: unreachable, a timeout, forged, stale); "
                   "answers served from the cache are not counted.", ("answer",), registry=REGISTRY)
HTTP_REFUSED = Counter("interlace_http_refused", "Connections and request heads refused before reaching a flow "
                       "(engine/httpguard.py), by listener (facade, management) and reason (header-too-large, "
                       "too-many-headers, uri-too-long, header-timeout, first-byte-timeout, max-connections, "
                       "bad-request, bad-transfer-encoding; certificate-revoked, certificate-status-unknown and "
                       "certificate-status-unavailable: a client certificate refused by OCSP).",
                       ("listener", "reason"), registry=REGISTRY)
CLIENT_DISCONNECTS = Counter("interlace_http_client_disconnects", "Requests whose client closed the connection "
                             "before the answer was complete: in_flight (a flow was serving it), queued (pipelined "
                             "behind another, never started).", ("stage",), registry=REGISTRY)
FLOWS_LOADED = Gauge("interlace_flows_loaded", "Flows being served.", registry=REGISTRY)
WORKER_RESTARTS = Counter("interlace_worker_restarts", "Workers the supervisor (--workers N) started again after "
                          "one died, by worker place (0 to N-1).", ("worker",), registry=REGISTRY)
SOURCE_MESSAGES = Counter("interlace_source_messages", "Messages taken from sources (schedule, file, queue), by "
                          "source and outcome (ok, failed, dead_lettered).", ("source", "outcome"), registry=REGISTRY)
SOURCE_LAG = Gauge("interlace_source_lag_seconds", "How far behind a source is: the age of the oldest message "
                   "it has not yet taken, or of its last poll (the source says).", ("source",), registry=REGISTRY)
STORE_DEPTH = Gauge("interlace_store_depth", "Messages waiting in a store (message store, dead letters).",
                    ("store",), registry=REGISTRY)
WIRE_TAPS = Counter("interlace_wire_taps", "Copies sent by wire_tap steps, by flow, step and outcome (sent, "
                    "failed: the tap failed or timed out, dropped: max_in_flight was reached).",
                    ("flow", "step", "outcome"), registry=REGISTRY)
LOAD_BALANCED = Counter("interlace_load_balanced_calls", "Calls made by load_balance steps, by flow, step, the "
                        "endpoint called and outcome (answered, failed_over: the next endpoint was tried, failed).",
                        ("flow", "step", "endpoint", "outcome"), registry=REGISTRY)
AGGREGATED_GROUPS = Counter("interlace_aggregated_groups", "Groups completed by aggregate steps, by flow, step and "
                            "what completed them (size, timeout, idle, predicate, max_size, max_groups, stopped).",
                            ("flow", "step", "completed_by"), registry=REGISTRY)
AGGREGATED_MESSAGES = Counter("interlace_aggregated_messages", "Messages reaching aggregate steps, by flow, step and "
                              "outcome (gathered, refused: max_groups reached with on_full: refuse, or too many "
                              "groups on their way).", ("flow", "step", "outcome"), registry=REGISTRY)
AGGREGATE_DELIVERIES = Counter("interlace_aggregate_deliveries", "Completed groups sent by aggregate steps, by flow, "
                               "step and outcome (sent, failed: the target failed or timed out, dropped).",
                               ("flow", "step", "outcome"), registry=REGISTRY)
RESEQUENCED = Counter("interlace_resequenced_messages", "Messages reaching resequence steps, by flow, step and "
                      "outcome: released in_order, after_gap_timeout (a gap was skipped), after_capacity (the buffer "
                      "was full), batch_size, batch_timeout, stopped (the flows stopped); or late, duplicate, refused.",
                      ("flow", "step", "outcome"), registry=REGISTRY)
RESEQUENCE_DELIVERIES = Counter("interlace_resequence_deliveries", "Messages sent in order by resequence steps, by "
                                "flow, step and outcome (sent, failed).", ("flow", "step", "outcome"),
                                registry=REGISTRY)


class Children:
    """A labelled histogram's tallies by label values, ``labels()`` called once per label set
    (it costs ~10 µs a call against ~1 µs for an observation; the label sets are bounded)."""

    __slots__ = ("cache", "metric")

    def __init__(self, metric: Histogram) -> None:
        self.metric = metric
        self.cache: dict[tuple[str, ...], Tally] = {}

    def __call__(self, *values: str) -> Tally:
        child = self.cache.get(values)
        if child is None:
            child = self.cache[values] = Tally(self.metric.labels(*values))
        return child


def tally(metric: Histogram, *values: str) -> Tally:
    """A tally of ``metric``'s child with these label values (for a caller that keeps it, such
    as a compiled step)."""
    return Tally(metric.labels(*values))


request_seconds = Children(REQUEST_SECONDS)
request_bytes = Children(REQUEST_BYTES)
response_bytes = Children(RESPONSE_BYTES)
backend_seconds = Children(BACKEND_SECONDS)

# How a gauge's values from several workers combine; counters and histograms always add up.
GAUGE_MODES: dict[str, str] = {
    "interlace_http_requests_in_flight": "sum",
    "interlace_circuit_breaker_state": "max",
    "interlace_flows_loaded": "max",
    "interlace_source_lag_seconds": "max",
    "interlace_store_depth": "max",  # one shared store, seen by every worker
    "interlace_load_balance_response_time_seconds": "max",  # each worker's own average: show the worst
}
PER_WORKER_PREFIXES = ("process_", "python_")

BREAKER_STATES = {"closed": 0, "open": 1, "half_open": 2}
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_method(method: str) -> str:
    """The method as a label value: the standard ones, every other one as ``other``."""
    return method if method in _METHODS else "other"


def outcome_of_status(status: int) -> str:
    return ("1xx", "2xx", "3xx", "4xx", "5xx")[min(max(status // 100, 1), 5) - 1]


def observe(child: Tally, amount: float, trace_id: str | None = None) -> None:
    """``child.observe(amount)``, with the trace id as its bucket's exemplar when the request is
    traced (``Tally.observe_traced``)."""
    if trace_id:
        child.observe_traced(amount, trace_id)
    else:
        child.observe(amount)


EXEMPLAR_INTERVAL = 1.0  # seconds


# -- what other layers call --------------------------------------------------------------------

# the backend calls of the request being served, for its log line (engine/telemetry.py sets it)
request_backends: ContextVar[list[tuple[str, str, str, float]] | None] = ContextVar("request_backends",
                                                                                   default=None)


def backend_call(endpoint: str, url: str, outcome: str, seconds: float, trace_id: str | None = None) -> None:
    """One attempt at a backend: ``url`` is the endpoint's base URL (never the request's path),
    ``outcome`` a status class (``2xx``...) or ``timeout``, ``unreachable``, ``error``."""
    observe(backend_seconds(endpoint, url, outcome), seconds, trace_id)
    calls = request_backends.get()
    if calls is not None:
        calls.append((endpoint, url, outcome, seconds))


def worker_started(index: int, restarts: int) -> None:
    """A worker of a group is up; ``restarts``: how often its place was started again before it
    (the supervisor says, engine/server.py).  The new worker carries the count on, so the group's
    sum never goes down when a worker is replaced."""
    WORKER_RESTARTS.labels(str(index)).inc(restarts)


def backend_retry(endpoint: str) -> None:
    BACKEND_RETRIES.labels(endpoint).inc()


def breaker_changed(endpoint: str, url: str, state: str) -> None:
    """A circuit breaker entered ``state`` (open, half_open, closed)."""
    BREAKER_STATE.labels(endpoint, url).set(BREAKER_STATES[state])
    BREAKER_TRANSITIONS.labels(endpoint, url, state).inc()


def breaker_known(endpoint: str, url: str) -> None:
    """Show a breaker from the start (closed), before its first transition."""
    BREAKER_STATE.labels(endpoint, url)


def source_message(source: str, outcome: str) -> None:
    """A source took a message and the flow ended with ``outcome`` (ok, failed, dead_lettered)."""
    SOURCE_MESSAGES.labels(source, outcome).inc()


def source_lag(source: str, seconds: float) -> None:
    SOURCE_LAG.labels(source).set(seconds)


def store_depth(store: str, depth: int) -> None:
    STORE_DEPTH.labels(store).set(depth)


def wire_tap_counter(flow: str, step: str) -> Callable[[str], None]:
    """Counting one wire_tap step's copies by outcome; the label sets are made once, at load."""
    children = {outcome: WIRE_TAPS.labels(flow, step, outcome) for outcome in ("sent", "failed", "dropped")}
    return lambda outcome: children[outcome].inc()


def aggregate_counters(flow: str, step: str) -> tuple[Callable[[str], None], Callable[[str], None],
                                                     Callable[[str], None]]:
    """Counting one aggregate step's groups (by completed_by), messages and deliveries (by outcome)."""
    groups = {reason: AGGREGATED_GROUPS.labels(flow, step, reason) for reason in
              ("size", "timeout", "idle", "predicate", "max_size", "max_groups", "stopped")}
    messages = {outcome: AGGREGATED_MESSAGES.labels(flow, step, outcome) for outcome in ("gathered", "refused")}
    deliveries = {outcome: AGGREGATE_DELIVERIES.labels(flow, step, outcome)
                  for outcome in ("sent", "failed", "dropped")}
    return (lambda reason: groups[reason].inc(), lambda outcome: messages[outcome].inc(),
            lambda outcome: deliveries[outcome].inc())


def resequence_counter(flow: str, step: str) -> Callable[[str], None]:
    """Counting one resequence step's messages (by outcome) and sends (sent, failed), label sets made at load."""
    children = {outcome: RESEQUENCED.labels(flow, step, outcome) for outcome in (
        "in_order", "after_gap_timeout", "after_capacity", "batch_size", "batch_timeout", "stopped", "late",
        "duplicate", "refused")}
    children.update({outcome: RESEQUENCE_DELIVERIES.labels(flow, step, outcome) for outcome in ("sent", "failed")})
    return lambda outcome: children[outcome].inc()


def load_balance_counter(flow: str, step: str, endpoints: list[str]) -> Callable[[int, str], None]:
    """Counting one load_balance step's calls by endpoint (its index) and outcome, label sets made at load."""
    children = [{outcome: LOAD_BALANCED.labels(flow, step, endpoint, outcome)
                 for outcome in ("answered", "failed_over", "failed")} for endpoint in endpoints]
    return lambda index, outcome: children[index][outcome].inc()


def response_time_averages(flow: str, step: str, endpoints: list[str], urls: list[str], holder: Any) -> None:
    """Show ``holder.averages`` (seconds, or None, per endpoint) as the response time gauge of a
    least_response_time step; ``urls``: each endpoint's base URL(s), from its declaration."""
    RESPONSE_TIME_AVERAGES.add(flow, step, endpoints, urls, holder)


def reloaded(ok: bool, flows: int) -> None:
    RELOADS.labels("ok" if ok else "failed").inc()
    FLOWS_LOADED.set(flows)


# -- one worker's samples, and many workers' merged ---------------------------------------------

Family = dict[str, Any]


def local_families() -> list[Family]:
    """This process's metrics as JSON-able dicts (what a peer sends the worker taking the scrape)."""
    families: list[Family] = []
    for metric in REGISTRY.collect():
        samples = [[s.name, s.labels, s.value, s.timestamp,
                    None if s.exemplar is None else [s.exemplar.labels, s.exemplar.value, s.exemplar.timestamp]]
                   for s in metric.samples]
        families.append({"name": metric.name, "type": metric.type, "help": metric.documentation,
                         "unit": metric.unit, "samples": samples})
    return families


def merge_families(workers: Iterable[list[Family]]) -> list[Metric]:
    """Combine the families of several workers (in worker order) into one set of metrics."""
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[Any, ...], list[Any]]] = {}
    for index, families in enumerate(workers):
        for family in families:
            name = family["name"]
            metric = merged.get(name)
            if metric is None:
                metric = merged[name] = Metric(name, family["help"], family["type"], family["unit"])
                values[name] = {}
            table = values[name]
            per_worker = name.startswith(PER_WORKER_PREFIXES)
            mode = GAUGE_MODES.get(name, "sum") if family["type"] == "gauge" else "sum"
            if family["type"] in ("info", "stateset", "unknown"):
                mode = "first"
            for sample_name, labels, value, timestamp, exemplar in family["samples"]:
                if per_worker:
                    labels = {**labels, "worker": str(index)}
                key = (sample_name, tuple(sorted(labels.items())))
                held = table.get(key)
                if held is None:
                    table[key] = [sample_name, labels, value, timestamp, exemplar]
                    continue
                if sample_name.endswith("_created"):
                    held[2] = min(held[2], value)
                elif mode == "sum":
                    held[2] += value
                elif mode == "max":
                    held[2] = max(held[2], value)
                if exemplar is not None and (held[4] is None or (exemplar[2] or 0) >= (held[4][2] or 0)):
                    held[4] = exemplar
    for name, metric in merged.items():
        for sample_name, labels, value, timestamp, exemplar in values[name].values():
            metric.add_sample(sample_name, labels, value, timestamp,
                              None if exemplar is None else Exemplar(exemplar[0], exemplar[1], exemplar[2]))
    return list(merged.values())


class _Fixed:
    """A collector that yields metrics already gathered (the merged ones)."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def exposition(workers: list[list[Family]] | None, accept: str | None) -> tuple[bytes, str]:
    """The scrape's body and content type: Prometheus text, or OpenMetrics (with exemplars) when
    the scraper's Accept header asks for it.  ``workers`` None: this process alone."""
    encoder, content_type = choose_encoder(accept or "")
    if workers is None:
        return encoder(REGISTRY), content_type
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(merge_families(workers)))
    return encoder(registry), content_type


_SERIES_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum"),
                    "info": ("_info",)}


def series_names() -> set[str]:
    """Every series name this engine exports, labelled or not yet seen (``..._bucket``,
    ``..._total``...): what the dashboard and the alerts may query (a test holds them to it)."""
    return {metric.name + suffix for metric in REGISTRY.collect()
            for suffix in _SERIES_SUFFIXES.get(metric.type, ("",))}
