"""Hostile and broken flow files: limits with positions, never a crash, never a traceback.

Before: 50,000 nested brackets segfaulted `interlace validate` (exit 139) and the serving
process on reload; an alias bomb ran 35 s into MemoryError; `!!int 0x1Fz`, `max_body: -1`, a
400-digit duration, `namespaces: {x: ""}` and nesting past 1,000 were tracebacks (a text 500 on
POST /reload).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from engine.cli import main
from engine.yamlio import MAX_ALIASES, MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES
from tests.support.engine import PING, REPO, run_engine, write_flows

pytestmark = pytest.mark.timeout(120)

GOOD = PING


def alias_bomb(levels: int = 12, width: int = 9) -> str:
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join([*lines, f"flows: *a{levels - 1}"]) + "\n"


def wide_bomb() -> str:
    """Few aliases, each expanding a long list: the node budget, not the alias count, stops it."""
    return f"a: &a [{', '.join(['x'] * 5_000)}]\nb: [{', '.join(['*a'] * 200)}]\n"


HOSTILE = {
    "brackets": ("flows: " + "[" * 50_000 + "]" * 50_000 + "\n", f"nested deeper than {MAX_DEPTH}", (1, 7 + MAX_DEPTH)),
    "block-sequences": ("flows:\n" + "".join(" " * i + "-\n" for i in range(0, 1_400)), "nested deeper", None),
    "past-1000": ("flows: " + "{a: " * 1_001 + "1" + "}" * 1_001 + "\n", "nested deeper", None),
    "recursive-alias": ("a: &a [*a]\n", "nested deeper", (1, 4)),
    "alias-bomb": (alias_bomb(), f"expanded more than {MAX_ALIASES:,} times", None),
    "wide-bomb": (wide_bomb(), f"more than {MAX_NODES:,} values", None),
    "int": (GOOD.replace("text: pong", "status: !!int 0x1Fz"), "'0x1Fz' is not a valid !!int value", (4, 32)),
    "float": (GOOD.replace("text: pong", "status: !!float .nanX"), "'.nanX' is not a valid !!float value", None),
    "empty-int": (GOOD.replace("text: pong", "status: !!int ''"), "is not a valid !!int value", None),
    "max-body": (GOOD.replace("path: /ping", "path: /ping, max_body: -1"), "max_body: expected a size", None),
    "huge-duration": (GOOD + "endpoints:\n  e: {http: {url: 'http://127.0.0.1:1', timeout: {connect: " + "9" * 400
                      + "}}}\n", "timeout.connect: expected a duration", None),
    "namespace": ("namespaces: {x: ''}\n" + GOOD.replace("respond: {text: pong}",
                                                          "set: {var: a, value: \"${xpath('//x:a')}\"}"),
                  "should be non-empty in namespaces.x", (1, 17)),
}


# the ones that killed the process (segfault, MemoryError) run as a real `interlace validate`
IN_A_PROCESS = {"brackets", "block-sequences", "alias-bomb", "wide-bomb"}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_validate_gives_a_positioned_error_never_a_crash(tmp_path: Path, name: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    text, message, position = HOSTILE[name]
    folder = write_flows(tmp_path / "flows", text)
    if name in IN_A_PROCESS:
        done = subprocess.run([sys.executable, "-m", "engine.cli", "validate", str(folder)], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        code, stderr = done.returncode, done.stderr
    else:
        code, stderr = main(["validate", str(folder)]), capsys.readouterr().err
    assert code == 1, (code, stderr[-2000:])
    assert "Traceback" not in stderr
    first = stderr.splitlines()[0]
    assert first.startswith(f"{folder / 'flows.yaml'}:") and message in first, first[:500]
    if position is not None:
        assert first.startswith(f"{folder / 'flows.yaml'}:{position[0]}:{position[1]}: "), first[:300]


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", GOOD)
    with (folder / "big.yaml").open("w") as big:
        big.write("# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    done = subprocess.run([sys.executable, "-m", "engine.cli", "validate", str(folder)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"{folder / 'big.yaml'}:1:1: the file is" in done.stderr and "MiB a flow file may have" in done.stderr


def test_hostile_files_on_reload_get_422_problems_and_the_engine_keeps_serving(tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", GOOD)
    with run_engine(folder) as engine, httpx.Client(timeout=30) as client:
        for name in ("brackets", "alias-bomb", "wide-bomb", "int", "max-body", "huge-duration", "past-1000"):
            text, message, _ = HOSTILE[name]
            (folder / "flows.yaml").write_text(text, encoding="utf-8")  # the serving flows' own file
            reply = client.post(f"{engine.management_url}/reload")
            assert reply.status_code == 422, (name, reply.status_code, reply.text[:300])
            assert reply.headers["content-type"] == "application/problem+json"
            problem = reply.json()
            assert problem["status"] == 422 and problem["ok"] is False, problem
            assert any(e.startswith(f"{folder / 'flows.yaml'}:") and message in e for e in problem["errors"]), \
                (name, problem["errors"][:3])
            assert client.get(f"{engine.url}/ping").text == "pong"
            ready = client.get(f"{engine.management_url}/health/ready")
            assert ready.status_code == 200 and ready.json()["flows"] == 1
        assert engine.process.poll() is None


def test_watch_survives_a_segfault_sized_file(tmp_path: Path) -> None:
    folder = write_flows(tmp_path / "flows", GOOD)
    with run_engine(folder, "--watch") as engine:
        (folder / "flows.yaml").write_text(HOSTILE["brackets"][0], encoding="utf-8")
        deadline = time.monotonic() + 15
        while "nested deeper than" not in engine.log():
            assert time.monotonic() < deadline and engine.process.poll() is None, engine.log()[-2000:]
            time.sleep(0.1)
        assert httpx.get(f"{engine.url}/ping").text == "pong"
        assert engine.process.poll() is None
