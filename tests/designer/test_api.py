"""The designer's routes, in process: list, open, lint, patch-save, try, hostile input."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest
from starlette.testclient import TestClient

from designer.app import build_designer_app
from designer.workspace import MAX_FILE_BYTES
from engine.testing.runner import run_suite
from engine.testing.suite import load_suite
from tests.support.backends import BackendServer

CHANGE = {"x-interlace-designer": "1"}
FLOW = dedent("""\
    # Routes orders by their type.   <- this comment must survive every save
    endpoints:
      backend:
        http: {url: "${env.BACKEND_URL || 'http://127.0.0.1:9'}"}

    flows:
      route:
        source: {http: {method: POST, path: /route}}
        steps:
          - choice:
              when:
                - if: ${payload.type == 'gold'}
                  steps:
                    - set: {var: tier, value: gold}   # gold first
              otherwise:
                - set: {var: tier, value: plain}
          - call: {endpoint: backend, method: POST, path: /echo}
          - respond:
              json: {tier: "${vars.tier}"}
    """)
SUITE = dedent("""\
    mocks:
      backend:
        - respond: {json: {echoed: true}}
    cases:
      - name: gold orders are gold
        request: {method: POST, path: /route, json: {type: gold}}
        expect: {status: 200, json: {tier: gold}}
    """)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "route.yaml").write_text(FLOW, encoding="utf-8")
    (tmp_path / "route.test.yaml").write_text(SUITE, encoding="utf-8")
    return tmp_path


@pytest.fixture
def client(folder: Path) -> Iterator[TestClient]:
    with TestClient(build_designer_app(folder), base_url="http://127.0.0.1:9290") as test_client:
        yield test_client


def opened(client: TestClient, name: str = "route.yaml") -> dict[str, Any]:
    answer = client.get(f"/api/files/{name}")
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


STEPS = ["flows", "route", "steps"]


def test_the_folder_lists_its_flow_files_and_suites(client: TestClient) -> None:
    files = {f["name"]: f for f in client.get("/api/files").json()["files"]}
    assert files["route.yaml"]["flows"] == ["route"] and files["route.yaml"]["endpoints"] == ["backend"]
    assert files["route.test.yaml"]["cases"] == ["gold orders are gold"]


def test_the_registry_gives_every_step_kind_with_its_schema(client: TestClient) -> None:
    view = client.get("/api/registry").json()
    kinds = {k["name"]: k for k in view["kinds"]}
    assert kinds["choice"]["branches"] == ["when", "otherwise"] and kinds["choice"]["schema"]["required"] == ["when"]
    assert {"http"} <= {c["name"] for c in view["connectors"]}
    assert "$defs" in view["schema"]


def test_an_opened_flow_is_outlined_with_lanes_from_the_schema(client: TestClient) -> None:
    state = opened(client)
    flow = state["outline"]["flows"][0]
    steps = flow["lanes"][0]["steps"]
    assert [s["kind"] for s in steps] == ["choice", "call", "respond"]
    lanes = {lane["label"]: lane for lane in steps[0]["lanes"]}
    assert set(lanes) == {"when[0]: ${payload.type == 'gold'}", "otherwise"}
    assert lanes["otherwise"]["path"] == [*STEPS, 0, "choice", "otherwise"]
    assert state["problems"] == [] and state["hash"] and state["text"] == FLOW


def test_a_saved_edit_changes_only_its_lines_and_keeps_comments(client: TestClient, folder: Path) -> None:
    state = opened(client)
    edits = [{"op": "insert", "path": [*STEPS, 0, "choice", "when", 0, "steps"], "index": 1,
              "value": {"log": "a gold order"}},
             {"op": "set", "path": [*STEPS, 1, "call", "path"], "value": "/orders"}]
    answer = client.put("/api/files/route.yaml", json={"base": state["hash"], "edits": edits}, headers=CHANGE)
    assert answer.status_code == 200, answer.text
    expected = FLOW.replace("                - set: {var: tier, value: gold}   # gold first\n",
                            "                - set: {var: tier, value: gold}   # gold first\n"
                            "                - log: a gold order\n").replace("path: /echo}", "path: /orders}")
    assert (folder / "route.yaml").read_text(encoding="utf-8") == expected
    assert answer.json()["hash"] != state["hash"]


def test_a_change_on_disk_is_never_overwritten(client: TestClient, folder: Path) -> None:
    state = opened(client)
    (folder / "route.yaml").write_text(FLOW + "# edited by hand meanwhile\n", encoding="utf-8")
    answer = client.put("/api/files/route.yaml", json={"base": state["hash"], "edits": [
        {"op": "remove", "path": [*STEPS, 1]}]}, headers=CHANGE)
    assert answer.status_code == 409 and answer.headers["content-type"] == "application/problem+json"
    assert "changed on disk" in answer.json()["detail"]
    assert (folder / "route.yaml").read_text(encoding="utf-8").endswith("# edited by hand meanwhile\n")
    missing_base = client.put("/api/files/route.yaml", json={"edits": []}, headers=CHANGE)
    assert missing_base.status_code == 428


def test_preview_lints_with_the_loaders_own_messages_and_marks_the_step(client: TestClient, folder: Path) -> None:
    state = opened(client)
    answer = client.post("/api/files/route.yaml/preview", headers=CHANGE, json={"base": state["hash"], "edits": [
        {"op": "set", "path": [*STEPS, 1, "call", "endpoint"], "value": "nowhere"}]})
    problems = answer.json()["problems"]
    assert [p["text"] for p in problems] == [
        "route.yaml:17:26: call: unknown endpoint 'nowhere' (endpoints: backend)"]
    assert problems[0]["step"] == [*STEPS, 1]
    assert (folder / "route.yaml").read_text(encoding="utf-8") == FLOW  # a preview writes nothing


def test_broken_yaml_opens_with_its_error_and_refuses_drawing_edits(client: TestClient, folder: Path) -> None:
    (folder / "broken.yaml").write_text("flows:\n  f: {source: [\n", encoding="utf-8")
    state = opened(client, "broken.yaml")
    assert not state["parsed"] and state["problems"][0]["line"] == 3
    answer = client.put("/api/files/broken.yaml", headers=CHANGE, json={"base": state["hash"], "edits": [
        {"op": "set", "path": ["flows"], "value": {}}]})
    assert answer.status_code == 422 and "not valid YAML" in answer.json()["detail"]
    fixed = client.put("/api/files/broken.yaml", headers=CHANGE, json={"base": state["hash"], "edits": [
        {"op": "text", "text": "flows: {}\n"}]})
    assert fixed.status_code == 200 and (folder / "broken.yaml").read_text() == "flows: {}\n"


@pytest.mark.parametrize(("name", "content", "status"), [
    ("huge.yaml", "x: " + "a" * (10 * 1024 * 1024) + "\n", 413),
    ("deep.yaml", "x: " + "[" * 5000 + "]" * 5000 + "\n", 422),
    ("latin1.yaml", "x: caf\xe9\n", 422),
])
def test_hostile_files_give_errors(client: TestClient, folder: Path, name: str, content: str, status: int) -> None:
    (folder / name).write_bytes(content.encode("latin-1") if name == "latin1.yaml" else content.encode())
    answer = client.get(f"/api/files/{name}")
    assert answer.status_code == status and answer.json()["detail"]
    saved = client.put(f"/api/files/{name}", headers=CHANGE, json={"base": "0", "edits": []})
    assert saved.status_code == status


def test_nothing_outside_the_folder_is_read_or_written(client: TestClient, folder: Path, tmp_path_factory:
                                                       pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("outside") / "secret.yaml"
    outside.write_text("password: hunter2\n", encoding="utf-8")
    os.symlink(outside, folder / "link.yaml")
    answer = client.get("/api/files/link.yaml")
    assert answer.status_code == 403 and "hunter2" not in answer.text
    for name in ("..%2Fsecret.yaml", ".hidden.yaml", "a%5Cb.yaml", "notes.txt"):
        assert client.get(f"/api/files/{name}").status_code in (400, 404)
    assert client.post("/api/files", headers=CHANGE, json={"name": "../x.yaml"}).status_code == 400
    written = client.put("/api/files/link.yaml", headers=CHANGE, json={"base": "0", "edits": [
        {"op": "text", "text": "owned: true\n"}]})
    assert written.status_code == 403 and outside.read_text() == "password: hunter2\n"
    assert "link.yaml" not in [f["name"] for f in client.get("/api/files").json()["files"]]


def test_other_hosts_and_changes_without_the_header_are_refused(client: TestClient) -> None:
    assert client.get("/api/files", headers={"host": "attacker.example"}).status_code == 403
    assert client.post("/api/files", json={"name": "x.yaml"}).status_code == 403


def test_a_new_file_starts_from_a_flow_that_loads(client: TestClient, folder: Path) -> None:
    answer = client.post("/api/files", headers=CHANGE, json={"name": "greet.yaml"})
    assert answer.status_code == 201 and answer.json()["problems"] == []
    assert client.post("/api/files", headers=CHANGE, json={"name": "greet.yaml"}).status_code == 409


def test_try_a_suite_case_with_its_mocks_records_every_step(client: TestClient) -> None:
    run = client.post("/api/try", headers=CHANGE, json={"file": "route.yaml", "suite": "route.test.yaml",
                                                        "case": 0}).json()
    assert run["response"]["status"] == 200 and run["response"]["body"] == '{"tier":"gold"}'
    assert "route/steps[0]/when[0]" in run["trace"]
    by_id = {s["id"]: s for s in run["steps"]}
    assert by_id["route/steps[0]/when[0]/steps[0]"]["message"]["vars"] == {"tier": "gold"}
    call = by_id["route/steps[1]"]["calls"][0]
    assert (call["endpoint"], call["method"], call["path"], call["status"]) == ("backend", "POST", "/echo", 200)
    assert call["body"] == '{"echoed":true}' and call["ms"] >= 0 and by_id["route/steps[1]"]["ms"] >= 0


def test_try_unsaved_edits_against_a_real_backend(client: TestClient, folder: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    state = opened(client)
    with BackendServer() as backend:
        monkeypatch.setenv("BACKEND_URL", backend.url)
        run = client.post("/api/try", headers=CHANGE, json={
            "file": "route.yaml", "base": state["hash"],
            "edits": [{"op": "set", "path": [*STEPS, 1, "call", "path"], "value": "/unsaved"}],
            "request": {"method": "POST", "path": "/route", "json": {"type": "tin"}}}).json()
        assert backend.requests[-1].path == "/unsaved"
    assert "route/steps[0]/otherwise" in run["trace"] and not run["mocked"]
    call = next(s for s in run["steps"] if s["kind"] == "call")["calls"][0]
    assert call["status"] == 200 and call["request_body"] == '{"type":"tin"}'
    assert (folder / "route.yaml").read_text(encoding="utf-8") == FLOW


def test_an_error_is_recorded_where_it_was_raised(client: TestClient) -> None:
    state = opened(client)
    run = client.post("/api/try", headers=CHANGE, json={
        "file": "route.yaml", "base": state["hash"], "mocks": True,
        "edits": [{"op": "insert", "path": [*STEPS, 0, "choice", "otherwise"], "index": 0,
                   "value": {"fail": {"status": 418, "message": "not gold"}}}],
        "request": {"method": "POST", "path": "/route", "json": {"type": "tin"}}}).json()
    assert run["response"]["status"] == 418 and run["failed_step"] == "route/steps[0]/otherwise[0]"
    failed = next(s for s in run["steps"] if s["id"] == "route/steps[0]/otherwise[0]")
    assert failed["error"]["message"] == "not gold"


def test_a_run_saved_as_a_case_passes_interlace_test(client: TestClient, folder: Path) -> None:
    case = {"name": "tin orders are plain", "request": {"method": "POST", "path": "/route", "json": {"type": "tin"}},
            "expect": {"status": 200, "json": {"tier": "plain"}}}
    answer = client.post("/api/tests/route.test.yaml/cases", headers=CHANGE, json={"case": case})
    assert answer.status_code == 201, answer.text
    text = (folder / "route.test.yaml").read_text(encoding="utf-8")
    assert text.startswith(SUITE)
    import asyncio

    result = asyncio.run(run_suite(load_suite(folder / "route.test.yaml")))
    assert [r.passed for r in result.results] == [True, True] and not result.errors


def test_an_edit_that_would_make_the_file_too_large_is_refused(client: TestClient, folder: Path) -> None:
    state = opened(client)
    answer = client.post("/api/files/route.yaml/preview", headers=CHANGE, json={"base": state["hash"], "edits": [
        {"op": "text", "text": "x" * (MAX_FILE_BYTES + 1)}]})
    assert answer.status_code == 413 and "over" in answer.json()["detail"]


SEQUENCES = """\
sequences:
  audit:
    - log: audited
  greet:
    description: Greets someone
    params:
      who: {type: string}
    steps:
      - set: {var: greeting, value: "hello ${params.who}"}
      - choice:
          when:
            - if: ${params.who == 'you'}
              steps: [{log: you}]
namespaces:
  soap: http://schemas.xmlsoap.org/soap/envelope/
flows:
  shop:
    source: {http: {method: POST, path: /shop}}
    steps:
      - sequence: {name: greet, with: {who: you}}
      - sequence: audit
      - respond: {status: 200}
"""


def test_sequences_plain_and_template_are_outlined_as_canvases(client: TestClient, folder: Path) -> None:
    (folder / "shop.yaml").write_text(SEQUENCES, encoding="utf-8")
    state = opened(client, "shop.yaml")
    assert state["problems"] == []
    sequences = {s["name"]: s for s in state["outline"]["sequences"]}
    plain, template = sequences["audit"], sequences["greet"]
    assert not plain["template"] and plain["params"] is None
    assert plain["lanes"][0]["path"] == ["sequences", "audit"]
    assert [s["path"] for s in plain["lanes"][0]["steps"]] == [["sequences", "audit", 0]]
    # a template's steps are under its steps key, its parameters beside them, nested lanes too
    assert template["template"] and template["params"] == {"who": {"type": "string"}}
    assert template["description"] == "Greets someone"
    steps = template["lanes"][0]["steps"]
    assert template["lanes"][0]["path"] == ["sequences", "greet", "steps"]
    assert [s["kind"] for s in steps] == ["set", "choice"]
    nested = ["sequences", "greet", "steps", 1, "choice", "when", 0, "steps", 0]
    assert steps[1]["lanes"][0]["steps"][0]["path"] == nested
    assert state["outline"]["namespaces"] == {"soap": "http://schemas.xmlsoap.org/soap/envelope/"}
    # a parameter added to the template is a patch of its params, the loader checks the callers
    answer = client.post("/api/files/shop.yaml/preview", headers=CHANGE, json={"base": state["hash"], "edits": [
        {"op": "set", "path": ["sequences", "greet", "params", "times"], "value": {"type": "integer"}}]})
    assert answer.status_code == 200, answer.text
    added = "      who: {type: string}\n      times:\n        type: integer\n"
    assert answer.json()["text"] == SEQUENCES.replace("      who: {type: string}\n", added)
    assert any("times" in p["message"] for p in answer.json()["problems"])


def test_the_listing_gives_each_files_hash_to_notice_changes_on_disk(client: TestClient, folder: Path) -> None:
    state = opened(client)
    listed = {f["name"]: f for f in client.get("/api/files").json()["files"]}
    assert listed["route.yaml"]["hash"] == state["hash"]
    (folder / "route.yaml").write_text(FLOW + "# another tab saved\n", encoding="utf-8")
    listed = {f["name"]: f for f in client.get("/api/files").json()["files"]}
    assert listed["route.yaml"]["hash"] != state["hash"]


@pytest.mark.parametrize(("request_", "says"), [
    ({"path": "/route", "headers": "x-a: 1"}, "request headers is an object, got str"),
    ({"path": "/route", "query": 5}, "request query is an object, got int"),
    ({"path": ["route"]}, "request path is a text, got list"),
    ({"method": 5, "path": "/route"}, "request method is a text, got int"),
    ({"path": "/route", "headers": {"x-a": {"b": 1}}}, "request header 'x-a' is a text, got dict"),
])
def test_a_try_request_of_the_wrong_shape_is_a_422_not_a_500(client: TestClient, request_: dict[str, Any],
                                                             says: str) -> None:
    # headers: "x-a: 1" and query: 5 were read with .items(): 500 Internal Server Error
    answer = client.post("/api/try", headers=CHANGE, json={"file": "route.yaml", "request": request_})
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["detail"] == says


def test_a_try_request_body_file_lies_in_the_flow_folder(client: TestClient, folder: Path) -> None:
    # request: {file: ../../etc/hostname} was read and shown in the run (the request's body, and
    # the answer of any flow echoing it); a missing file was a 500
    (folder.parent / "outside.json").write_text('{"type": "secret"}', encoding="utf-8")
    (folder / "gold.json").write_text('{"type": "gold"}', encoding="utf-8")
    answers = {name: client.post("/api/try", headers=CHANGE, json={
        "file": "route.yaml", "mocks": True, "request": {"method": "POST", "path": "/route", "file": name}})
        for name in ("../outside.json", str(folder.parent / "outside.json"), "missing.json", "gold.json")}
    for name in ("../outside.json", str(folder.parent / "outside.json")):
        assert answers[name].status_code == 422, answers[name].text
        assert "is outside the flow folder" in answers[name].json()["detail"]
        assert "secret" not in answers[name].text
    assert answers["missing.json"].status_code == 422
    assert answers["missing.json"].json()["detail"] == "request file: 'missing.json' cannot be read (No such file " \
                                                       "or directory)"
    assert answers["gold.json"].status_code == 200 and answers["gold.json"].json()["response"]["status"] == 200
