"""Template sequences: declared parameters, arguments checked at load, ${params.*} inside."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.loader import LoadErrors, load_project
from tests.support.engine import facade_client, write_flows

TEMPLATE = """
sequences:
  greet:
    description: Answers a greeting.
    params:
      who: {type: string}
      times: {type: integer, default: 1}
      loud: {type: boolean, default: false}
    steps:
      - payload: {json: {hello: "${params.who}", times: "${params.times}", loud: "${params.loud}"}}
      - sequence: {name: stamp, with: {by: "greet:${params.who}"}}
  stamp:
    params: {by: {type: string}}
    steps:
      - set: {header: X-Stamped-By, value: "${params.by}"}
"""


@pytest.mark.anyio
async def test_arguments_reach_the_template_and_nest(tmp_path: Path) -> None:
    write_flows(tmp_path, TEMPLATE + """
flows:
  hello:
    source: {http: {method: GET, path: "/hello/{name}"}}
    steps:
      - sequence: {name: greet, with: {who: "${path.name}", times: 3}}
      - set: {path: $.after, value: "${params}"}
""")
    async with facade_client(tmp_path) as client:
        reply = await client.get("/hello/ada")
    assert reply.json() == {"hello": "ada", "times": 3, "loud": False, "after": None}
    assert reply.headers["x-stamped-by"] == "greet:ada"


def test_calls_are_checked_against_the_declaration_at_load(tmp_path: Path) -> None:
    write_flows(tmp_path, TEMPLATE + """
flows:
  a:
    source: {http: {method: GET, path: /a}}
    steps:
      - sequence: {name: greet, with: {who: x, tmes: 2}}
      - sequence: {name: greet, with: {times: 2}}
      - sequence: {name: greet, with: {who: x, times: "two"}}
      - sequence: {name: greet, with: {who: x, loud: 1}}
""")
    with pytest.raises(LoadErrors) as caught:
        load_project(tmp_path)
    text = str(caught.value)
    assert "flows.yaml:20:54: sequence: sequence 'greet' has no parameter 'tmes' (parameters: loud, times, who)" in text
    assert "flows.yaml:21:26: sequence: sequence 'greet' needs who: give it under with:" in text
    assert "flows.yaml:22:55: sequence: sequence 'greet': parameter 'times' must be integer, got str 'two'" in text
    assert "flows.yaml:23:54: sequence: sequence 'greet': parameter 'loud' must be boolean, got int 1" in text


@pytest.mark.anyio
async def test_a_runtime_value_of_the_wrong_type_is_a_clear_error(tmp_path: Path) -> None:
    write_flows(tmp_path, TEMPLATE + """
flows:
  b:
    source: {http: {method: POST, path: /b}}
    steps:
      - sequence: {name: greet, with: {who: x, times: "${payload.n}"}}
""")
    async with facade_client(tmp_path) as client:
        reply = await client.post("/b", json={"n": "many"})
    assert reply.status_code == 500
    assert "parameter 'times' must be integer, got str 'many'" in reply.json()["detail"]
