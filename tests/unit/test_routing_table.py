"""The facade's routing table: dict lookup, templates grouped by first segment, declared order."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.compiler import compile_project
from engine.errors import MethodNotAllowed, NotFound
from engine.front import Facade
from engine.loader import load_project
from tests.support.engine import write_flows


def table_of(folder: Path, routes: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    text = "flows:\n" + "".join(
        f"  f{i}:\n    source: {{http: {{method: {m}, path: \"{p}\"}}}}\n    steps: [{{respond: {{text: f{i}}}}}]\n"
        for i, (m, p) in enumerate(routes))
    write_flows(folder, text)
    return Facade(compile_project(load_project(folder, compile_flows=False))).table


def test_static_then_templates_in_declared_order(tmp_path: Path) -> None:
    table = table_of(tmp_path, [("GET", "/orders/{id}"), ("GET", "/orders/latest"),
                                ("POST", "/orders/{id}/lines/{n:int}"), ("GET", "/customers/{id}"),
                                ("GET", "/{any:path}")])
    assert table.match("GET", "/orders/latest")[0].name == "f1"  # a literal path wins
    route, params = table.match("GET", "/orders/7")
    assert route.name == "f0" and params == {"id": "7"}
    assert table.match("GET", "/customers/3")[0].name == "f3"
    assert table.match("GET", "/elsewhere/x")[0].name == "f4"  # a template open from its first segment
    route, params = table.match("POST", "/orders/7/lines/2")
    assert route.name == "f2" and params == {"id": "7", "n": "2"}
    with pytest.raises(MethodNotAllowed) as caught:
        table.match("DELETE", "/orders/7/lines/2")
    assert caught.value.extra["allowed"] == ["GET", "HEAD", "POST"]  # {any:path} matches it too; GET answers HEAD


def test_an_open_template_declared_first_still_wins(tmp_path: Path) -> None:
    table = table_of(tmp_path / "b", [("GET", "/{any:path}"), ("GET", "/customers/{id}")])
    assert table.match("GET", "/customers/3")[0].name == "f0"


def test_unknown_path_and_method(tmp_path: Path) -> None:
    table = table_of(tmp_path, [("GET", "/a/{x}"), ("POST", "/b")])
    with pytest.raises(NotFound):
        table.match("GET", "/c/1")
    with pytest.raises(MethodNotAllowed):
        table.match("GET", "/b")
    with pytest.raises(MethodNotAllowed):
        table.match("PUT", "/a/1")
