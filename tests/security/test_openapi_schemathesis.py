"""Schemathesis, every check, against the OpenAPI document `interlace openapi` writes, served by a
real engine on loopback: the example flows and the bench flows must agree with their document.

Before: 500s on generated input, 422 and 415 answers the document did not declare, and no
request bodies declared at all; then (issue 9, second session) a missing body accepted where a
route declares its type, a `sort` the document allowed refused, a Location header that could not
carry the key, a PUT whose body key disagrees with the path answered 422, a 201 whose media type
the document did not know.  The backends the flows call are real loopback servers: the
examples' own demo backends (flows/demo-backends.yaml and the SOAP service, served by the same
engine) and an echo server for the bench flows.  Bounded: a fixed seed, a fixed number of
cases per operation.

One check is skipped, on the XML-bodied operations only: negative_data_rejection (ST201). OpenAPI
cannot describe an XML document's structure; the export says so in the body's schema
(`x-interlace-body: xml-document`), and what schemathesis generates as an "invalid" XML body is
still a well-formed document, which such a route rightly accepts.  A missing XML body, the
one invalid case left, is tested in test_small_ones.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.openapi import openapi_document
from engine.loader import load_project
from tests.support.backends import BackendServer
from tests.support.engine import REPO, run_engine
from tests.support.services import free_port

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]

# Bounded for CI: the coverage phase still sends every boundary and negative value it derives
# from each schema; fuzzing and the stateful links add this many generated cases an operation.
CASES_PER_OPERATION = 10
SEED = 20261201


def xml_bodied(document: Path) -> list[str]:
    """The operations whose request body the export marks as an XML document it cannot describe."""
    found = []
    for operations in json.loads(document.read_text())["paths"].values():
        for operation in operations.values():
            content = operation.get("requestBody", {}).get("content", {})
            if any(body.get("schema", {}).get("x-interlace-body") == "xml-document" for body in content.values()):
                found.append(operation["operationId"])
    return sorted(found)


# every check `--checks all` runs (max_response_time needs a limit: timings are a benchmark's);
# in the file, not on the command line, where `all` would override the per-operation setting below
CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance",
          "response_headers_conformance", "positive_data_acceptance", "negative_data_rejection", "use_after_free",
          "ensure_resource_availability", "missing_required_header", "ignored_auth", "object_level_authorization",
          "unsupported_method", "allow_header_conformance"]


def config(document: Path) -> Path:
    """schemathesis.toml: every check, negative_data_rejection off for the XML-bodied operations only."""
    lines = ["[checks]", *(f"{name}.enabled = true" for name in CHECKS)]
    skipped = xml_bodied(document)
    if skipped:
        lines += ["", "# OpenAPI cannot describe an XML body: see this test module's docstring",
                  "[[operations]]", f"include-operation-id = {json.dumps(skipped)}",
                  "checks.negative_data_rejection.enabled = false"]
    soap = sorted(operation["operationId"] for operations in json.loads(document.read_text())["paths"].values()
                  for operation in operations.values() if "x-interlace-soap" in operation)
    if soap:
        lines += ["", "# a SOAP service answers a fault, a malformed envelope's too, with HTTP 500 (SOAP 1.1's HTTP",
                  "# binding), and its envelopes are the WSDL's to describe (deploy/openapi_soap.py)",
                  "[[operations]]", f"include-operation-id = {json.dumps(soap)}",
                  "checks.not_a_server_error.enabled = false", "checks.positive_data_acceptance.enabled = false",
                  "checks.negative_data_rejection.enabled = false"]
    path = document.with_name("schemathesis.toml")
    path.write_text("\n".join(lines) + "\n")
    return path


def schemathesis(document: Path, base_url: str, report: Path) -> subprocess.CompletedProcess[str]:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is a test dependency: pip install -e '.[test]'"
    return subprocess.run(
        [st, "--config-file", str(config(document)), "run", str(document), "--url", base_url, "--seed", str(SEED),
         # one worker: schemathesis's threads make CPython 3.11's ast.parse fail now and then
         # ("SystemError: AST constructor recursion depth mismatch"), a Runtime Error in the report
         "--max-examples", str(CASES_PER_OPERATION), "--generation-database", "none", "--workers", "1",
         "--request-timeout", "10", "--no-color", "--report", "json", "--report-json-path", str(report)],
        cwd=report.parent, capture_output=True, text=True, timeout=240)


def openapi(folder: Path, out: Path) -> Path:
    """What `interlace openapi FOLDER -o OUT` writes (in this process: one Python start less)."""
    out.write_text(json.dumps(openapi_document(load_project(folder)), indent=2))
    return out


def summary(report: Path) -> str:
    data = json.loads(report.read_text())
    return json.dumps({k: data[k] for k in data if k in ("statistic", "summary", "results", "stats")})[:2000]


def test_the_example_flows_agree_with_their_openapi_document(tmp_path: Path) -> None:
    flows = shutil.copytree(REPO / "flows", tmp_path / "flows")  # the store's SQLite file is written there
    document = openapi(flows, tmp_path / "openapi.json")
    port = free_port()
    env = {"ORDERS_API_URL": f"http://127.0.0.1:{port}/_demo/orders-api",
           "INVENTORY_URL": f"http://127.0.0.1:{port}/_demo/inventory",
           "STOCKQUOTE_URL": f"http://127.0.0.1:{port}/services/stockquote"}
    with run_engine(flows, env=env, log_dir=tmp_path, port=port) as engine:
        done = schemathesis(document, engine.url, tmp_path / "report.json")
        assert done.returncode == 0, done.stdout[-6000:] + engine.log()[-3000:]
        assert "Traceback" not in engine.log()


def test_the_bench_flows_agree_with_their_openapi_document(tmp_path: Path) -> None:
    document = openapi(REPO / "flows" / "bench", tmp_path / "openapi.json")
    with BackendServer() as backend, \
            run_engine(REPO / "flows" / "bench", env={"BACKEND_URL": backend.url}, log_dir=tmp_path) as engine:
        done = schemathesis(document, engine.url, tmp_path / "report.json")
        assert done.returncode == 0, done.stdout[-6000:] + engine.log()[-3000:]
        assert "Traceback" not in engine.log()
