"""`interlace designer` and `interlace run --designer` as real processes on loopback."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.engine import REPO, run_engine, write_flows
from tests.support.services import free_port

HELLO = """
flows:
  hello:
    source: {http: {method: GET, path: /hello}}
    steps:
      - respond: {json: {hi: there}}
"""


def test_interlace_designer_serves_the_folder_on_loopback(tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", HELLO)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "engine.cli", "designer", str(folder), "--port", str(port)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/api/files", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
        assert [f["name"] for f in answer.json()["files"]] == ["flows.yaml"]
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code in (200, 503)
    finally:
        process.terminate()
        process.wait(10)


def test_interlace_run_serves_the_designer_behind_the_management_token(tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", HELLO)
    with run_engine(folder, "--designer", env={"INTERLACE_MANAGEMENT_TOKEN": "designer-test-token"}) as engine:
        url = f"{engine.management_url}/designer/api/files"
        assert httpx.get(url).status_code == 401
        answer = httpx.get(url, headers={"authorization": "Bearer designer-test-token"})
        assert answer.status_code == 200 and answer.json()["files"][0]["flows"] == ["hello"]
        assert httpx.get(f"{engine.url}/designer/api/files").status_code == 404  # never on the facade


def test_interlace_run_refuses_the_designer_without_a_token(tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", HELLO)
    result = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(folder), "--designer",
                             "--port", str(free_port()), "--management-port", str(free_port())],
                            cwd=REPO, capture_output=True, text=True, timeout=30,
                            env={k: v for k, v in __import__("os").environ.items()
                                 if k != "INTERLACE_MANAGEMENT_TOKEN"})
    assert result.returncode != 0 and "INTERLACE_MANAGEMENT_TOKEN" in result.stderr
