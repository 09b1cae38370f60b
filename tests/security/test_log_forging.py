"""Issue 9, item 7: a request value cannot forge a line of the text log.  Control characters in
logged values (newlines, carriage returns, terminal escapes, Unicode line separators) are
written as escapes; the JSON format escapes them already."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.security import rawhttp
from tests.support.engine import RunningEngine, run_engine, write_flows

pytestmark = pytest.mark.timeout(60)

FLOWS = """
flows:
  get-order:
    source: {http: {method: GET, path: "/orders/{id}"}}
    steps:
      - log: looking up order ${path.id}
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


def test_a_newline_in_a_path_parameter_forges_no_line(engine: RunningEngine) -> None:
    fmt = "json" if "json" in engine.process.args else "text"  # type: ignore[operator]
    answer = rawhttp.request(engine.port, "/orders/1%0a2026-12-01%20ERROR%20interlace.auth%20admin%20login%20ok")
    assert answer.status == 200
    text = logged_after(engine, "admin login ok")
    lines = text.split("\n")
    assert not any(line.startswith(FORGED) for line in lines), text
    (line,) = [line for line in lines if "looking up order" in line]
    # the request line (method and path) carries the same value, escaped the same way
    assert any("GET /orders/1" in other and "admin login ok" in other
               for other in lines if "looking up order" not in other)
    if fmt == "json":
        assert json.loads(line)["message"] == f"looking up order 1\n{FORGED}"
    else:
        assert line.endswith(f"looking up order 1\\n{FORGED}")


@pytest.mark.parametrize(("escape", "written"), [
    ("%0d", "\\r"), ("%1b%5b31m", "\\x1b[31m"), ("%e2%80%a8", "\\u2028"), ("%c2%85", "\\x85"), ("%00", "\\x00"),
])
def test_other_controls_are_escaped_in_the_log(engine: RunningEngine, escape: str, written: str) -> None:
    marker = f"a{escape[1:3]}"
    rawhttp.request(engine.port, f"/orders/{marker}{escape}b")
    text = logged_after(engine, f"looking up order {marker}")
    line = next(line for line in text.split("\n") if f"looking up order {marker}" in line)
    if line.startswith("{"):
        assert json.loads(line)["message"].endswith(written.encode().decode("unicode_escape") + "b")
    else:
        assert line.endswith(f"looking up order {marker}{written}b"), line
