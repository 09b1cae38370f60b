"""Issue 9, item 14: the smaller defects.  A busy port is one line naming the flag; a request
that is not HTTP gets a problem+json 400 (it was uvicorn's text/plain)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security import rawhttp
from tests.support.engine import REPO, RunningEngine, run_engine, write_flows
from tests.support.services import free_port

pytestmark = pytest.mark.timeout(60)

FLOWS = """
flows:
  hello:
    source: {http: {method: GET, path: /hello}}
    steps:
      - respond: {json: {hello: world}}
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    with run_engine(write_flows(tmp_path_factory.mktemp("small"), FLOWS)) as running:
        yield running


@pytest.mark.parametrize(("which", "flag"), [("facade", "--port"), ("management", "--management-port")])
def test_a_busy_port_is_one_line_naming_the_flag(tmp_path: Path, which: str, flag: str) -> None:
    folder = write_flows(tmp_path, FLOWS)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = {"facade": busy, "management": free_port()} if which == "facade" else \
            {"facade": free_port(), "management": busy}
        result = subprocess.run(
            [sys.executable, "-m", "engine.cli", "run", str(folder), "--port", str(ports["facade"]),
             "--management-port", str(ports["management"])], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [f"interlace: cannot listen on 127.0.0.1:{busy}: it is already in use; "
                     f"choose another port with {flag}"], result.stderr


@pytest.mark.parametrize("garbage", [b"NOT HTTP\r\n\r\n", b"GET /hello HTTP/1.1\r\nBad Header\r\n\r\n",
                                     b"GET /hello HTTP/1.1\r\nX: a\x01b\r\n\r\n"])
def test_a_request_that_is_not_http_gets_a_problem(engine: RunningEngine, garbage: bytes) -> None:
    with rawhttp.connect(engine.port) as sock:
        sock.sendall(garbage)
        answer = rawhttp.read_response(sock)
    assert answer.status == 400
    assert answer.header("content-type") == "application/problem+json"
    problem = answer.json()
    assert problem["status"] == 400 and problem["type"].endswith("/bad-request")
    assert problem["detail"].startswith("the request is not valid HTTP/1.1")
