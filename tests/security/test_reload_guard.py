"""A reload that would take flows away from a file that is still there is refused unless forced.

Before: emptying a flow file under --watch swapped the engine to 0 flows; every route answered
404 while readiness said ready (85,866 of 240,979 requests lost in 3 s).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from engine.cli import main
from tests.support.engine import PING, run_engine, wait_for_workers, write_flows

pytestmark = pytest.mark.timeout(120)

ENDPOINTS_ONLY = """
endpoints:
  e: {http: {url: "http://127.0.0.1:1"}}
"""


def test_validate_refuses_an_empty_folder_and_an_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["validate", str(empty)]) == 1
    assert f"{empty}:1:1: no flow files (*.yaml) in this folder" in capsys.readouterr().err
    folder = write_flows(tmp_path / "flows", PING)
    (folder / "blank.yaml").write_text("\n# nothing yet\n", encoding="utf-8")
    assert main(["validate", str(folder)]) == 1
    assert f"{folder / 'blank.yaml'}:1:1: the file is empty" in capsys.readouterr().err
    only = write_flows(tmp_path / "only", ENDPOINTS_ONLY)
    assert main(["validate", str(only)]) == 1
    assert f"{only}:1:1: no flows in this folder" in capsys.readouterr().err


def test_a_reload_that_empties_a_file_is_refused_then_forced(tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", PING)
    write_flows(folder, """
    flows:
      other:
        source: {http: {method: GET, path: /other}}
        steps: [{respond: {text: other}}]
    """, name="other.yaml")
    with run_engine(folder) as engine, httpx.Client(timeout=10) as client:
        management = engine.management_url
        for emptied in ("", ENDPOINTS_ONLY):  # truncated to nothing, or left with only its endpoints
            (folder / "flows.yaml").write_text(emptied, encoding="utf-8")
            refused = client.post(f"{management}/reload")
            assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
            problem = refused.json()
            assert problem["ok"] is False and problem["flows"] == 2, problem
            assert problem["errors"][0].startswith(f"{folder / 'flows.yaml'}:1:1: "), problem
            assert client.get(f"{engine.url}/ping").text == "pong"  # the old flows serve on
            ready = client.get(f"{management}/health/ready")
            assert ready.status_code == 200 and ready.json()["flows"] == 2
        assert "reload refused, still serving the previous 2 flows" in engine.log()
        assert client.post(f"{management}/reload?force=nope").status_code == 400
        forced = client.post(f"{management}/reload?force=true")
        assert forced.status_code == 200
        assert {k: forced.json()[k] for k in ("ok", "errors", "flows")} == {"ok": True, "errors": [], "flows": 1}
        assert client.get(f"{engine.url}/ping").status_code == 404
        assert client.get(f"{engine.url}/other").text == "other"
        # removing the file is how flows are removed: no force needed
        (folder / "flows.yaml").unlink()
        assert client.post(f"{management}/reload").status_code == 200
        # every file gone: nothing to serve is never a valid reload, forced or not
        (folder / "other.yaml").unlink()
        gone = client.post(f"{management}/reload?force=true")
        assert gone.status_code == 422 and "no flow files" in gone.json()["errors"][0]
        assert client.get(f"{engine.url}/other").text == "other"


def test_watch_refuses_an_emptied_file_and_says_so(tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", PING)
    with run_engine(folder, "--watch") as engine:
        (folder / "flows.yaml").write_text("", encoding="utf-8")
        deadline = time.monotonic() + 15
        while "reload failed, still serving the previous 1 flows" not in engine.log():
            assert time.monotonic() < deadline, engine.log()[-2000:]
            time.sleep(0.1)
        assert "flows.yaml:1:1: the file is empty" in engine.log()
        assert httpx.get(f"{engine.url}/ping").text == "pong"
        assert httpx.get(f"{engine.management_url}/health/ready").status_code == 200


def test_workers_share_a_forced_reload(tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", PING)
    write_flows(folder, ENDPOINTS_ONLY.replace("e:", "keep:") + PING.replace("ping", "kept"), name="kept.yaml")
    with run_engine(folder, "--workers", "2") as engine, httpx.Client(timeout=10) as client:
        # run_engine saw one worker ready; the other answers 503 until it has loaded its flows, and a
        # reload landing on it (or asking it) then fails: wait until each worker reports its flows
        wait_for_workers(engine, 2)
        (folder / "flows.yaml").write_text(ENDPOINTS_ONLY, encoding="utf-8")
        assert client.post(f"{engine.management_url}/reload").status_code == 422
        assert client.post(f"{engine.management_url}/reload?force=true").status_code == 200
        deadline = time.monotonic() + 10
        while True:  # the other worker follows through the supervisor; new connections hit either worker
            answers = {httpx.get(f"{engine.url}/ping").status_code for _ in range(20)}
            if answers == {404}:
                break
            assert time.monotonic() < deadline, answers
            time.sleep(0.2)
