"""Try-it with a suite's mocks for endpoints that are not HTTP: the designer runs a saved case of
the SOAP example with its SQL database and its SOAP service mocked by operation, as
`interlace test` does, and shows each mocked call on the step that made it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from designer.app import build_designer_app

FLOWS = Path(__file__).resolve().parents[2] / "flows"
CHANGE = {"x-interlace-designer": "1"}
SUITE = "stockquote-soap.test.yaml"


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    folder = tmp_path / "flows"
    shutil.copytree(FLOWS, folder, ignore=shutil.ignore_patterns("data"))
    monkeypatch.setenv("INVENTORY_DB", "sqlite:///:memory:")  # the suite's own env, for the real parts
    with TestClient(build_designer_app(folder), base_url="http://127.0.0.1:9290") as test_client:
        yield test_client


def case_index(name: str) -> int:
    from engine.testing.suite import load_suite

    suite = load_suite(FLOWS / SUITE)
    return [case.name for case in suite.cases].index(name)


def calls_of(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [call for step in run["steps"] for call in step.get("calls", [])]


def test_a_case_with_sql_rows_mocked_by_operation_runs_in_the_designer(client: TestClient) -> None:
    index = case_index("rows mocked by operation and parameter make the quote")
    run = client.post("/api/try", headers=CHANGE, json={"file": "stockquote-soap.yaml", "suite": SUITE,
                                                        "case": index}).json()
    assert run["mocked"] is True and run["response"]["status"] == 200, run
    assert "<name>lathe</name>" in run["response"]["body"] and "1250.5" in run["response"]["body"]
    assert [call["endpoint"] for call in calls_of(run)] == ["inventory-db"]


def test_a_case_with_the_soap_service_mocked_by_operation_runs_in_the_designer(client: TestClient) -> None:
    index = case_index("the REST facade calls getQuote and answers JSON")
    run = client.post("/api/try", headers=CHANGE, json={"file": "stockquote-soap.yaml", "suite": SUITE,
                                                        "case": index}).json()
    assert run["mocked"] is True and run["response"]["status"] == 200, run
    assert '"name":"anvil"' in run["response"]["body"].replace(" ", "")
    assert [call["endpoint"] for call in calls_of(run)] == ["stockquote"]
