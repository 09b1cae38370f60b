"""Body sizes are counted whatever the request or the answer looks like: a streamed answer (a
backend's reply passed through, chunked), a request without Content-Length (chunked, or no
body at all), as the scrape of a real engine shows them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.backends import BackendServer
from tests.support.engine import run_engine, write_flows

FLOWS = """
endpoints:
  backend:
    http: {url: "%s"}
flows:
  relay:
    source: {http: {method: POST, path: /relay}}
    steps:
      - call: {endpoint: backend, method: POST, path: /echo}
  big:
    source: {http: {method: GET, path: "/big/{n}"}}
    steps:
      - call: {endpoint: backend, method: GET, path: "/big/${path.n}"}
  ping:
    source: {http: {method: GET, path: /ping}}
    steps: [{respond: {text: pong}}]
"""


def histogram(text: str, name: str, flow: str) -> tuple[float, float]:
    """(sum, count) of a body-size histogram's series for ``flow``."""
    found = {}
    for part in ("sum", "count"):
        match = re.search(rf'^{name}_{part}\{{flow="{flow}",route="[^"]*"\}} (\S+)$', text, re.M)
        found[part] = float(match[1]) if match else 0.0
    return found["sum"], found["count"]


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_streamed_answers_and_bodies_without_content_length_are_counted(tmp_path: Path) -> None:
    body = b'{"order": "' + b"7" * 3000 + b'"}'
    with BackendServer() as backend:
        folder = write_flows(tmp_path / "flows", FLOWS % backend.url)
        with run_engine(folder) as engine, httpx.Client(base_url=engine.url) as client:
            # a chunked request (no Content-Length), relayed to the backend and echoed back
            sent = client.post("/relay", content=chunks(body, 700), headers={"content-type": "application/json"})
            assert sent.status_code == 200 and sent.content == body
            # the same with a Content-Length
            assert client.post("/relay", content=body, headers={"content-type": "application/json"}).content == body
            # a backend's answer of 200,000 bytes passed through as a stream
            big = client.get("/big/200000")
            assert big.status_code == 200 and len(big.content) == 200_000
            # no body at all, no Content-Length: a 0-byte request
            assert client.get("/ping").text == "pong"
            scrape = httpx.get(f"{engine.management_url}/metrics").text

    assert histogram(scrape, "interlace_http_request_body_bytes", "relay") == (2 * len(body), 2)
    assert histogram(scrape, "interlace_http_response_body_bytes", "relay") == (2 * len(body), 2)
    assert histogram(scrape, "interlace_http_response_body_bytes", "big") == (200_000, 1)
    assert histogram(scrape, "interlace_http_request_body_bytes", "big") == (0, 1)
    assert histogram(scrape, "interlace_http_request_body_bytes", "ping") == (0, 1)
    assert histogram(scrape, "interlace_http_response_body_bytes", "ping") == (4, 1)
