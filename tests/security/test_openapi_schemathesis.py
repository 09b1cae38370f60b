"""Schemathesis, every check, against the OpenAPI document `interlace openapi` writes, served by a
real engine on loopback: the example flows and the bench flows must agree with their document.

Before: 500s on generated input, 422 and 415 answers the document did not declare, and no
request bodies declared at all.  The backends the flows call are real loopback servers: the
examples' own demo backends (flows/demo-backends.yaml, served by the same engine) and an echo
server for the bench flows.  Bounded: a fixed seed, a fixed number of cases per operation.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.backends import BackendServer
from tests.support.engine import REPO, run_engine
from tests.support.services import free_port

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]

# What schemathesis still finds, and whose fix it waits for (docs/security.md, "OpenAPI and
# schemathesis"); strict=False: the day these land the tests pass and say so (XPASS).
WAITING = pytest.mark.xfail(strict=False, reason=(
    "issue 9 items 8 and 14 (not in this change): a route that declares `request:` accepts a request "
    "with no body (ST201); C0 characters of a path parameter in an XML template and a JSON body that is "
    "not an object give 500s (ST101); an XML body cannot be described so that schemathesis's negative "
    "cases are rejected by a well-formedness check alone (ST201 on /xslt, /cbr-xml)"))

CASES_PER_OPERATION = 40
SEED = 20261201


def schemathesis(document: Path, base_url: str, report: Path) -> subprocess.CompletedProcess[str]:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is a test dependency: pip install -e '.[test]'"
    return subprocess.run(
        [st, "run", str(document), "--url", base_url, "--checks", "all", "--seed", str(SEED),
         "--max-examples", str(CASES_PER_OPERATION), "--generation-database", "none", "--workers", "2",
         "--request-timeout", "10", "--no-color", "--report", "json", "--report-json-path", str(report)],
        cwd=report.parent, capture_output=True, text=True, timeout=240)


def openapi(folder: Path, out: Path) -> Path:
    done = subprocess.run([sys.executable, "-m", "engine.cli", "openapi", str(folder), "-o", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return out


def summary(report: Path) -> str:
    data = json.loads(report.read_text())
    return json.dumps({k: data[k] for k in data if k in ("statistic", "summary", "results", "stats")})[:2000]


@WAITING
def test_the_example_flows_agree_with_their_openapi_document(tmp_path: Path) -> None:
    flows = shutil.copytree(REPO / "flows", tmp_path / "flows")  # the store's SQLite file is written there
    document = openapi(flows, tmp_path / "openapi.json")
    port = free_port()
    env = {"ORDERS_API_URL": f"http://127.0.0.1:{port}/_demo/orders-api",
           "INVENTORY_URL": f"http://127.0.0.1:{port}/_demo/inventory"}
    with run_engine(flows, env=env, log_dir=tmp_path, port=port) as engine:
        done = schemathesis(document, engine.url, tmp_path / "report.json")
        assert done.returncode == 0, done.stdout[-6000:] + engine.log()[-3000:]
        assert "Traceback" not in engine.log()


@WAITING
def test_the_bench_flows_agree_with_their_openapi_document(tmp_path: Path) -> None:
    document = openapi(REPO / "flows" / "bench", tmp_path / "openapi.json")
    with BackendServer() as backend, \
            run_engine(REPO / "flows" / "bench", env={"BACKEND_URL": backend.url}, log_dir=tmp_path) as engine:
        done = schemathesis(document, engine.url, tmp_path / "report.json")
        assert done.returncode == 0, done.stdout[-6000:] + engine.log()[-3000:]
        assert "Traceback" not in engine.log()
