"""Issue 9, item 7: a request value cannot forge a line of the text log.  Control characters in
logged values (newlines, carriage returns, terminal escapes, Unicode line separators) are
written as escapes; the JSON format escapes them already.  A traceback stays on its record's line
too: its lines are escaped and joined with the message (the second session's fix)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import rawhttp
from tests.support.engine import REPO, RunningEngine, run_engine, write_flows
from tests.support.services import free_port

pytestmark = pytest.mark.timeout(60)

FLOWS = """
flows:
  get-order:
    source: {http: {method: GET, path: "/orders/{id}"}}
    steps:
      - log: looking up order ${path.id}:${query.note || ''}
      - respond: {json: {id: "${path.id}"}}
"""

FORGED = "2026-12-01 ERROR interlace.auth admin login ok"


@pytest.fixture(scope="module", params=["text", "json"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    folder = write_flows(tmp_path_factory.mktemp("log"), FLOWS)
    with run_engine(folder, "--log-format", request.param) as running:
        yield running


def logged_after(engine: RunningEngine, marker: str) -> str:
    for _ in range(100):
        text = engine.log()
        if marker in text:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{marker!r} never logged:\n{engine.log()}")


def is_json(engine: RunningEngine) -> bool:
    return "json" in engine.process.args  # type: ignore[operator]


def test_the_issues_reproduction_forges_no_line(engine: RunningEngine) -> None:
    # a control character in a path parameter is refused (400) before any flow runs; the request
    # line, which carries the path, is logged escaped
    answer = rawhttp.request(engine.port, "/orders/1%0a2026-12-01%20ERROR%20interlace.auth%20admin%20login%20ok")
    assert answer.status == 400 and answer.json()["type"].endswith("/bad-path-parameter")
    text = logged_after(engine, "admin login ok")
    lines = text.split("\n")
    assert not any(line.startswith(FORGED) for line in lines), text
    (line,) = [line for line in lines if "admin login ok" in line]
    assert "GET /orders/1" in line and (" 400 " in line or "\"status\":400" in line)
    if is_json(engine):
        assert f"/orders/1\n{FORGED}" in json.loads(line)["message"]
    else:
        assert f"GET /orders/1\\n{FORGED}" in line


def test_a_newline_in_a_logged_value_forges_no_line(engine: RunningEngine) -> None:
    answer = rawhttp.request(engine.port, "/orders/2?note=%0a2026-12-01%20ERROR%20interlace.auth%20admin%20login%20ok")
    assert answer.status == 200
    text = logged_after(engine, "looking up order 2:")
    lines = text.split("\n")
    assert not any(line.startswith(FORGED) for line in lines), text
    (line,) = [line for line in lines if "looking up order 2:" in line]
    if is_json(engine):
        assert json.loads(line)["message"] == f"looking up order 2:\n{FORGED}"
    else:
        assert line.endswith(f"looking up order 2:\\n{FORGED}")


@pytest.mark.parametrize(("escape", "written"), [
    ("%0d", "\\r"), ("%1b%5b31m", "\\x1b[31m"), ("%e2%80%a8", "\\u2028"), ("%c2%85", "\\x85"), ("%00", "\\x00"),
])
def test_other_controls_are_escaped_in_the_log(engine: RunningEngine, escape: str, written: str) -> None:
    marker = f"a{escape[1:3]}"
    rawhttp.request(engine.port, f"/orders/{marker}?note={escape}b")
    text = logged_after(engine, f"looking up order {marker}:")
    line = next(line for line in text.split("\n") if f"looking up order {marker}:" in line)
    if line.startswith("{"):
        assert json.loads(line)["message"].endswith(written.encode().decode("unicode_escape") + "b")
    else:
        assert line.endswith(f"looking up order {marker}:{written}b"), line


# A host application (docs/embedding.md) whose own middleware fails with request data in the
# exception's message: the facade's 500 boundary logs it with its traceback, and uvicorn logs it
# again.  Before, the traceback's lines followed the escaped message as they were, so the path's
# %0a started a forged line of its own.
HOST = """
import sys

import uvicorn
from starlette.middleware import Middleware

from engine import create_app
from engine.observability import setup_logging


class Nosy:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/fail"):
            raise ValueError("cannot serve " + scope["path"])
        await self.app(scope, receive, send)


setup_logging(fmt=sys.argv[3])
app = create_app(sys.argv[1], middleware=[Middleware(Nosy)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_config=None)
"""


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_traceback_forges_no_line(tmp_path: Path, fmt: str) -> None:
    folder = write_flows(tmp_path / "flows", FLOWS)
    (tmp_path / "host.py").write_text(HOST)
    port = free_port()
    log_path = tmp_path / "host.log"
    with log_path.open("wb") as log, subprocess.Popen(
            [sys.executable, str(tmp_path / "host.py"), str(folder), str(port), fmt], cwd=REPO,
            stdout=log, stderr=subprocess.STDOUT) as host:
        try:
            rawhttp.wait_for_port(port, host)
            answer = rawhttp.request(port, "/fail%0a2026-12-01%20ERROR%20interlace.auth%20admin%20login%20ok")
            assert answer.status == 500 and answer.header("content-type") == "application/problem+json"
            assert "ValueError" not in answer.body.decode()  # the exception is not told to the caller
            deadline = time.monotonic() + 10
            while log_path.read_text().count("ValueError: cannot serve") < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            host.terminate()
    lines = log_path.read_text().splitlines()
    # both records (the facade's boundary, uvicorn's own), each with its traceback, one line each
    failures = [line for line in lines if "ValueError: cannot serve" in line]
    assert len(failures) == 2, lines
    assert not any(line.startswith(FORGED) or line.startswith("Traceback") or line.startswith("  File")
                   for line in lines), lines
    for line in failures:
        if fmt == "json":
            record = json.loads(line)
            assert record["level"] == "error"
            assert record["exception"].endswith(f"ValueError: cannot serve /fail\n{FORGED}")
        else:
            assert line.startswith("20") and " ERROR " in line[:40]
            assert "\\nTraceback (most recent call last):\\n  File " in line
            assert line.endswith(f"ValueError: cannot serve /fail\\n{FORGED}")
