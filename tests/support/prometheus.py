"""Debian's Prometheus on 127.0.0.1 for tests, scraping given targets every two seconds.

    with PrometheusServer(tmp_path, targets=["127.0.0.1:9201"]) as prometheus:
        prometheus.wait_for("sum(interlace_http_request_duration_seconds_count)", 30)
        prometheus.query("up")            # the API's result list
        prometheus.exemplars("interlace_http_request_duration_seconds_bucket")

Storage and config live in a temp folder; exemplar storage is on, so exemplars scraped in
the OpenMetrics format can be queried back.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.services import free_port, require_command


class PrometheusServer:
    def __init__(self, folder: Path, targets: list[str], metrics_path: str = "/metrics",
                 headers: dict[str, str] | None = None) -> None:
        self.binary = require_command("prometheus", "prometheus")
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        folder.mkdir(parents=True, exist_ok=True)
        quoted = ", ".join(f'"{t}"' for t in targets)
        auth = ""
        if headers and "authorization" in headers:
            kind, _, credentials = headers["authorization"].partition(" ")
            auth = f"    authorization: {{type: {kind}, credentials: '{credentials}'}}\n"
        (folder / "prometheus.yml").write_text(
            # a scrape of two workers (fan-out and merge) took over a second on the loaded 2-core
            # machine: a shorter timeout marked the target down and every series stale
            "global: {scrape_interval: 2s, scrape_timeout: 1900ms, evaluation_interval: 2s}\n"
            "scrape_configs:\n"
            "  - job_name: interlace\n"
            f"    metrics_path: {metrics_path}\n"
            f"{auth}"
            f"    static_configs: [{{targets: [{quoted}]}}]\n")
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        log = (self.folder / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [self.binary, f"--config.file={self.folder / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.folder / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--enable-feature=exemplar-storage", "--web.enable-lifecycle"],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready:\n{self.log()}")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log(self) -> str:
        return (self.folder / "prometheus.log").read_text(errors="replace")

    def query(self, expression: str) -> list[dict[str, Any]]:
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=5).json()
        assert reply["status"] == "success", reply
        return list(reply["data"]["result"])

    def value(self, expression: str) -> float | None:
        result = self.query(expression)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expression: str, expected: float, timeout: float = 30) -> float:
        """Query until the expression's (single) value equals ``expected``; its last value."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.value(expression)
            if value == expected:
                return value
            time.sleep(0.25)
        raise AssertionError(f"{expression} = {value}, expected {expected} within {timeout}s")

    def exemplars(self, expression: str) -> list[dict[str, Any]]:
        end = time.time() + 1
        reply = httpx.get(f"{self.url}/api/v1/query_exemplars",
                          params={"query": expression, "start": end - 600, "end": end}, timeout=5).json()
        assert reply["status"] == "success", reply
        return list(reply["data"])
