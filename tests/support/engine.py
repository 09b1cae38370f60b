"""Running the engine for tests: in-process (ASGI, fast) or as a real `interlace run` process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from textwrap import dedent

import httpx

from engine.front import Facade
from engine.loader import LoadErrors, load_project
from tests.support.services import free_port

REPO = Path(__file__).resolve().parents[2]

# the smallest flow file: GET /ping answers "pong"
PING = """
flows:
  ping:
    source: {http: {method: GET, path: /ping}}
    steps: [{respond: {text: pong}}]
"""


def write_flows(folder: Path, text: str, name: str = "flows.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(dedent(text).lstrip("\n"), encoding="utf-8")
    return folder


def assert_step_load_error(folder: Path, kind: str, step: str, message: str, where: str, more: str = "") -> None:
    """A flow of one ``kind: step`` (on line 5 of flows.yaml; ``more``: other top-level YAML, e.g.
    its endpoints) fails to load with ``message`` at ``where`` (line:column)."""
    flow = f"flows:\n  f:\n    source: {{http: {{path: /f}}}}\n    steps:\n      - {kind}: {step}\n"
    write_flows(folder, flow + dedent(more).lstrip("\n"))
    try:
        load_project(folder)
    except LoadErrors as exc:
        text = str(exc)
        assert message in text and f"flows.yaml:{where}:" in text, text
        return
    raise AssertionError(f"the flow loaded: {kind}: {step}")


@contextlib.asynccontextmanager
async def facade_client(folder: Path, env: dict[str, str] | None = None,  # type: ignore[no-untyped-def]
                        secrets: dict[str, str] | None = None):
    """An httpx client talking to the facade in-process (no sockets on the facade side)."""
    from engine.compiler import compile_project

    project = load_project(folder, compile_flows=False)
    compiled = compile_project(project, env={**os.environ, **(env or {})}, secrets=secrets)
    if compiled.errors:
        raise AssertionError("\n".join(map(str, compiled.errors)))
    await compiled.open()
    facade = Facade(compiled)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=facade),  # type: ignore[arg-type]
                                     base_url="http://facade") as client:
            yield client
    finally:
        await compiled.close()


@dataclass
class RunningEngine:
    process: subprocess.Popen[bytes]
    port: int
    management_port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


@contextlib.contextmanager
def run_engine(folder: Path, *args: str, env: dict[str, str] | None = None, wait_ready: bool = True,
               log_dir: Path | None = None, command: list[str] | None = None,
               port: int | None = None) -> Iterator[RunningEngine]:
    """`interlace run FOLDER` as a real process on free loopback ports (``command`` in place of
    ``python -m engine.cli``, e.g. a wrapper that takes the same arguments; ``port`` for the
    facade when the flows must know it beforehand)."""
    port, management_port = port or free_port(), free_port()
    log_path = (log_dir or folder) / f"engine-{port}.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [*(command or [sys.executable, "-m", "engine.cli"]), "run", str(folder), "--host", "127.0.0.1",
         "--port", str(port), "--management-port", str(management_port), *args],
        cwd=REPO, env={**os.environ, **(env or {})}, stdout=log_file, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    engine = RunningEngine(process, port, management_port, log_path)
    try:
        if wait_ready:
            wait_until_ready(engine)
        yield engine
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        log_file.close()


def wait_until_ready(engine: RunningEngine, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine.process.poll() is not None:
            raise AssertionError(f"engine exited with {engine.process.returncode}:\n{engine.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{engine.management_url}/health/ready", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"engine not ready after {timeout}s:\n{engine.log()}")


def wait_for_workers(engine: RunningEngine, count: int, timeout: float = 30) -> None:
    """Until every one of ``count`` workers has loaded its flows.  ``run_engine`` waits for one
    worker's readiness; a connection to the shared ports can still land on another that is
    starting (its management answers 503).  Any loaded worker's ``GET /flows`` reports each
    worker of the group, with ``flows`` only once that one has loaded them."""
    deadline = time.monotonic() + timeout
    workers: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            answer = httpx.get(f"{engine.management_url}/flows", timeout=5)
            if answer.status_code == 200:
                workers = answer.json().get("workers", [])
                if len(workers) == count and all("flows" in worker for worker in workers):
                    return
        time.sleep(0.05)
    raise AssertionError(f"not every one of {count} workers loaded its flows in {timeout}s: {workers}\n{engine.log()}")


def wait_for(condition: Callable[[], object], what: str = "the condition", timeout: float = 15.0) -> None:
    """Until ``condition()`` is true; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not in {timeout}s"
        time.sleep(0.02)

