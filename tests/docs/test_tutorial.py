"""docs/tutorial.md, every command as written, in order, so the tutorial cannot drift.

The test reads the page's fenced blocks in order:

- ```yaml blocks whose first line is ``# myapi/NAME`` are the files the reader writes;
- ```sh blocks are commands: ``git clone <this repository>`` clones this repository, ``make run``
  and ``interlace run`` start a server (the one before is stopped first, with Ctrl-C's SIGINT),
  anything else runs in bash.  A trailing ``# {...}`` comment is the JSON the command prints
  ("..." matches any value); ``# NNN, text, ...`` is the status and texts of a ``curl -i``;
- an unlabelled block right after commands is the output of the last one ("..." matches the
  rest of a line).

The only liberties: the ports (free ones instead of 8290 and 9201, also in the files), and the
clone's ``.venv`` and built designer are this test run's own (the ``bin`` linked in, the static
files copied), so ``make run`` installs and builds nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.services import free_port

REPO = Path(__file__).resolve().parents[2]
TUTORIAL = REPO / "docs" / "tutorial.md"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@dataclass
class Block:
    lang: str
    text: str


def blocks(markdown: str) -> list[Block]:
    return [Block(lang, text) for lang, text in re.findall(r"^```(\w*)\n(.*?)^```", markdown, re.S | re.M)]


def matches(expected: Any, actual: Any) -> bool:
    if expected == "...":
        return True
    if isinstance(expected, dict):
        return isinstance(actual, dict) and expected.keys() == actual.keys() and all(
            matches(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(
            matches(e, a) for e, a in zip(expected, actual, strict=True))
    return bool(expected == actual)


@dataclass
class Reader:
    """Someone following the tutorial: a working folder, a terminal, maybe a server running."""

    root: Path
    port: int = field(default_factory=free_port)
    management_port: int = field(default_factory=free_port)
    cwd: Path = field(init=False)
    server: subprocess.Popen[bytes] | None = None
    server_log: Path | None = None
    watching: bool = False
    server_command: str = ""
    last: subprocess.CompletedProcess[str] | None = None

    def __post_init__(self) -> None:
        self.cwd = self.root

    def ports(self, text: str) -> str:
        return text.replace("8290", str(self.port)).replace("9201", str(self.management_port))

    @property
    def env(self) -> dict[str, str]:
        base = f"http://127.0.0.1:{self.port}"
        return {**os.environ, "INTERLACE_PORT": str(self.port), "INTERLACE_MANAGEMENT_PORT": str(self.management_port),
                # the examples' stand-in backends are served by the same process, on its port
                "ORDERS_API_URL": f"{base}/_demo/orders-api", "INVENTORY_URL": f"{base}/_demo/inventory",
                "NO_COLOR": "1"}

    # --- files ---------------------------------------------------------------------------------

    def write(self, name: str, text: str) -> None:
        before = self._last_reload()
        path = self.cwd / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.ports(text), encoding="utf-8")
        self._await_reload(before)

    def _snapshot(self) -> dict[str, bytes]:
        folder = self.cwd / "myapi"
        return {p.name: p.read_bytes() for p in folder.glob("*")} if folder.is_dir() else {}

    def _last_reload(self) -> Any:
        if self.server is None or not self.watching:
            return None
        return httpx.get(f"http://127.0.0.1:{self.management_port}/flows", timeout=5).json().get("last_reload")

    def _await_reload(self, before: Any) -> None:
        """After a file changes, wait until the --watch server has tried to reload it."""
        if self.server is None or not self.watching:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            reload = self._last_reload()
            if reload is not None and reload != before:
                return
            time.sleep(0.1)
        raise AssertionError(f"the --watch server did not reload:\n{self.log()}")

    # --- commands ------------------------------------------------------------------------------

    def run(self, line: str, may_fail: bool) -> None:
        command, _, comment = line.partition("  #")
        command, comment = self.ports(command.strip()), comment.strip()
        if command.startswith("git clone <this repository> "):
            self._clone(command)
            return
        if command.startswith("make run") or re.search(r"(^|[\s/])interlace run\b", command):
            self.start(command)
            return
        before_files, before_reload = self._snapshot(), self._last_reload()
        result = subprocess.run(["bash", "-c", command], cwd=self.cwd, env=self.env, capture_output=True,
                                text=True, timeout=120)
        self.last = result
        if self._snapshot() != before_files:
            self._await_reload(before_reload)
        if not may_fail:
            assert result.returncode == 0, f"{command}: exit {result.returncode}\n{result.stdout}{result.stderr}"
        self._check_comment(command, comment, result.stdout)

    def _check_comment(self, command: str, comment: str, out: str) -> None:
        if comment.startswith("{"):
            assert matches(json.loads(comment), json.loads(out)), f"{command}: printed {out}, the page says {comment}"
        elif re.match(r"^\d{3}\b", comment):
            status, *texts = [part.strip() for part in comment.split(",")]
            assert re.search(rf"^HTTP/\S+ {status}\b", out, re.M), f"{command}: {out}"
            for text in texts:
                assert text.lower() in out.lower(), f"{command}: no {text!r} in\n{out}"

    def expect_output(self, text: str) -> None:
        assert self.last is not None, "an output block with no command before it"
        printed = (self.last.stdout + self.last.stderr).splitlines()
        for wanted in self.ports(text).strip().splitlines():
            prefix, dots, _ = wanted.partition("...")
            found = any(line.startswith(prefix.rstrip()) if dots else line == wanted for line in printed)
            assert found, f"the page says {wanted!r}; the command printed:\n" + "\n".join(printed)

    def _clone(self, command: str) -> None:
        target = command.split("<this repository> ", 1)[1].split("&&")[0].strip()
        subprocess.run(["git", "clone", "-q", str(REPO), target], cwd=self.cwd, check=True, timeout=120)
        self.cwd = self.cwd / target
        # the test run's own environment stands in for the one `make run` would install
        venv = self.cwd / ".venv"
        venv.mkdir()
        (venv / "bin").symlink_to(REPO / ".venv" / "bin")
        digest = subprocess.run(["sha256sum", "pyproject.toml"], cwd=self.cwd, capture_output=True, text=True,
                                check=True).stdout[:12]
        (venv / f".installed-{digest}").touch()
        # and the designer's front end this run built (or a stand-in): `make run` builds nothing
        frontend, static = self.cwd / "designer" / "frontend", self.cwd / "designer" / "static"
        if (REPO / "designer" / "static" / "index.html").is_file():
            shutil.copytree(REPO / "designer" / "static", static, dirs_exist_ok=True)
        else:
            static.mkdir(parents=True, exist_ok=True)
            (static / "index.html").write_text("<!doctype html><title>designer not built</title>\n")
        past = time.time() - 120
        for source in frontend.rglob("*"):
            os.utime(source, (past, past))
        (frontend / "node_modules").mkdir(exist_ok=True)
        (frontend / "node_modules" / ".installed").touch()
        os.utime(frontend / "node_modules" / ".installed", (past + 60, past + 60))
        (static / "index.html").touch()

    def start(self, command: str) -> None:
        self.stop()
        self.server_log = self.root / f"server-{time.monotonic_ns()}.log"
        with self.server_log.open("wb") as log:
            self.server = subprocess.Popen(["bash", "-c", command], cwd=self.cwd, env=self.env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
        self.watching = "--watch" in command
        self.server_command = command
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.server.poll() is None, f"{command} exited:\n{self.log()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.management_port}/health/ready", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"{command} never became ready:\n{self.log()}")

    def stop(self) -> None:
        """Ctrl-C: SIGINT to the server's process group; it drains and exits."""
        if self.server is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.server.pid, signal.SIGINT)
        try:
            self.server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.server.pid, signal.SIGKILL)
            self.server.wait(10)
            raise AssertionError(f"the server did not stop on Ctrl-C:\n{self.log()}") from None
        if not self.server_command.startswith("make "):  # make itself answers Ctrl-C with 2
            assert self.server.returncode == 0, f"exit {self.server.returncode} on Ctrl-C:\n{self.log()}"
        self.server = None

    def log(self) -> str:
        return self.server_log.read_text(errors="replace") if self.server_log else ""


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[Reader]:
    person = Reader(tmp_path)
    try:
        yield person
    finally:
        if person.server is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(person.server.pid, signal.SIGKILL)
            person.server.wait(10)


def test_every_command_of_the_tutorial_runs_as_written(reader: Reader) -> None:
    page = blocks(TUTORIAL.read_text(encoding="utf-8"))
    commands = 0
    for index, block in enumerate(page):
        followed_by_output = index + 1 < len(page) and page[index + 1].lang == ""
        if block.lang == "yaml":
            first = block.text.splitlines()[0]
            if first.startswith("# myapi/"):
                reader.write(first[2:].strip(), block.text)
        elif block.lang == "sh":
            lines = [line for line in block.text.splitlines() if line.strip()]
            for number, line in enumerate(lines):
                reader.run(line, may_fail=followed_by_output and number == len(lines) - 1)
                commands += 1
        elif block.lang == "":
            reader.expect_output(block.text)
    reader.stop()
    assert commands >= 15  # the page's commands were found and run
    assert (reader.cwd / ".interlace-schema.json").is_file()
