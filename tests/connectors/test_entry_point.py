"""A connector kind from a third-party package: installed into the venv by pip, found through
the ``interlace.connectors`` entry point group, shown in ``interlace schema`` and the docs, and
callable from a flow like a built-in kind."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.base import ENTRY_POINT_GROUP

PACKAGE = "interlace_clock_kind"
DIST = "interlace_clock_kind"

MODULE = '''
"""A connector kind that answers the time: what a plug-in author writes."""
from __future__ import annotations

from typing import Any

from connectors.base import Connector, Operation, Reply, Request


class ClockRequest(Request):
    __slots__ = ("label",)

    def __init__(self, label: str) -> None:
        super().__init__("now")
        self.label = label


class ClockConnector(Connector):
    SUMMARY = "A clock that tells the time (a third-party kind, for the plug-in test)."
    SCHEMA = {"type": "object", "additionalProperties": False,
              "properties": {"zone": {"type": "string", "description": "The time zone the clock reports in."}}}
    OPERATIONS = {"now": Operation("The current time, as JSON.", schema={
        "type": "object", "additionalProperties": False,
        "properties": {"label": {"type": "string", "description": "A label echoed back; ${...} allowed."}}},
        examples=[{"endpoint": "clock", "operation": "now", "label": "${path.who}"}])}

    def prepare(self, operation: str, config: dict[str, Any], ctx: Any, invoke: Any) -> Any:
        label = ctx.template(config.get("label", ""), "label")

        async def run(msg: Any) -> Reply:
            return await invoke(ClockRequest(str(label.render(msg))))
        return run

    async def attempt(self, request: Request, target: int) -> Reply:
        assert isinstance(request, ClockRequest)
        return Reply(payload={"zone": self.config.get("zone", "UTC"), "label": request.label, "tick": 42})
'''

FLOW = """
endpoints:
  clock:
    clock: {zone: Europe/Paris, retry: {attempts: 2}}
flows:
  what-time:
    source:
      http: {method: GET, path: "/time/{who}"}
    steps:
      - call: {endpoint: clock, operation: now, label: "for ${path.who}"}
"""

SUITE = """
cases:
  - name: the plug-in kind answers through the flow
    request: {method: GET, path: /time/ada}
    expect:
      status: 200
      json: {zone: Europe/Paris, label: for ada, tick: 42}
"""


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(folder: Path) -> Path:
    """A pure-Python wheel of the plug-in, written as the wheel format says (PEP 427)."""
    info = f"{DIST}-0.1.dist-info"
    files = {
        f"{PACKAGE}/__init__.py": MODULE.encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 0.1\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": f"[{ENTRY_POINT_GROUP}]\nclock = {PACKAGE}:ClockConnector\n".encode(),
    }
    wheel = folder / f"{DIST}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        record = "\n".join([*(_record_line(n, d) for n, d in files.items()), f"{info}/RECORD,,"]) + "\n"
        archive.writestr(f"{info}/RECORD", record)
    return wheel


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    wheel = build_wheel(tmp_path_factory.mktemp("wheel"))
    pip("install", "--no-index", "--no-deps", str(wheel))
    try:
        yield
    finally:
        pip("uninstall", "-y", DIST)


def interlace(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=cwd,
                          check=False)


def test_the_kind_shows_in_the_schema_with_its_settings_and_operations(installed: None) -> None:
    result = interlace("schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    clock = schema["properties"]["endpoints"]["additionalProperties"]["properties"]["clock"]
    assert clock["properties"]["zone"]["description"] == "The time zone the clock reports in."
    assert "retry" in clock["properties"]  # the shared resilience settings come with every kind
    assert schema["$defs"]["operations"]["clock.now"]["properties"]["label"]["type"] == "string"


def test_the_kind_shows_in_the_reference_docs(installed: None, tmp_path: Path) -> None:
    result = interlace("docs", "-o", str(tmp_path / "reference.md"))
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "reference.md").read_text()
    assert "### clock" in text and "A clock that tells the time" in text
    assert "#### clock operation `now`" in text and "A label echoed back" in text


def test_a_flow_calls_the_kind_and_its_settings_are_validated(installed: None, tmp_path: Path) -> None:
    (tmp_path / "clock.yaml").write_text(FLOW)
    (tmp_path / "clock.test.yaml").write_text(SUITE)
    result = interlace("test", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr

    (tmp_path / "clock.yaml").write_text(FLOW.replace("zone: Europe/Paris", "zon: Europe/Paris"))
    result = interlace("validate", str(tmp_path))
    assert result.returncode != 0
    assert "clock.yaml:4:13: unknown key 'zon' in endpoints.clock.clock (did you mean 'zone'?)" in result.stderr

    (tmp_path / "clock.yaml").write_text(FLOW.replace("label:", "lable:"))
    result = interlace("validate", str(tmp_path))
    assert result.returncode != 0
    assert "clock.yaml:10:" in result.stderr and "unknown key 'lable'" in result.stderr
