"""Edits as text splices: what the edit names changes, every other byte stays."""

from __future__ import annotations

import difflib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from designer.yamlpatch import PatchError, apply_edit, load_plain

FLOW = """\
# Orders: a facade.   (a comment at the top)
namespaces: {inv: 'http://example.com/inventory'}

defaults: &defaults   # an anchor the designer does not know about
  timeout: 5s

x-unknown-key:
  kept: "exactly as written"

flows:
  get-order:
    description: 'Single-quoted, and kept so'
    source: {http: {method: GET, path: "/orders/{id}"}}
    steps:
      # say what happens
      - log: looking up ${path.id}   # trailing comment
      - call:
          endpoint: orders-api
          method: GET

      - choice:
          when:
            - if: ${status == `404`}
              steps:
                - fail: {status: 404, message: "no order ${path.id}"}
          otherwise:
            - log: found
      - respond: {status: 200}
    on_error:
      - log: failed
"""


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    removed, added = [], []
    for line in difflib.ndiff(before.splitlines(), after.splitlines()):
        if line.startswith("- "):
            removed.append(line[2:])
        elif line.startswith("+ "):
            added.append(line[2:])
    return removed, added


STEPS = ["flows", "get-order", "steps"]


@pytest.mark.parametrize(("edit", "removed", "added"), [
    ({"op": "set", "path": [*STEPS, 0, "log"], "value": "hello ${path.id}"},
     ["      - log: looking up ${path.id}   # trailing comment"],
     ["      - log: hello ${path.id}   # trailing comment"]),
    ({"op": "set", "path": [*STEPS, 1, "call", "method"], "value": "POST"},
     ["          method: GET"], ["          method: POST"]),
    ({"op": "set", "path": ["flows", "get-order", "description"], "value": "it's new"},
     ["    description: 'Single-quoted, and kept so'"], ["    description: 'it''s new'"]),
    ({"op": "set", "path": [*STEPS, 3, "respond", "status"], "value": 201},
     ["      - respond: {status: 200}"], ["      - respond: {status: 201}"]),
    ({"op": "set", "path": [*STEPS, 3, "respond", "json"], "value": {"ok": True}},
     ["      - respond: {status: 200}"], ["      - respond: {status: 200, json: {ok: true}}"]),
    ({"op": "set", "path": [*STEPS, 1, "call", "path"], "value": "/orders/${path.id}"},
     [], ["          path: /orders/${path.id}"]),
    ({"op": "remove", "path": [*STEPS, 1, "call", "method"]}, ["          method: GET"], []),
    ({"op": "insert", "path": [*STEPS, 2, "choice", "when", 0, "steps"], "index": 0, "value": {"log": "missing"}},
     [], ["                - log: missing"]),
    ({"op": "insert", "path": STEPS, "index": 4, "value": {"set": {"var": "x", "value": "a: b"}}},
     [], ["      - set:", "          var: x", '          value: "a: b"']),
    ({"op": "insert", "path": ["flows", "get-order", "on_error"], "index": 1, "value": {"respond": {"status": 503}}},
     [], ["      - respond:", "          status: 503"]),
])
def test_an_edit_changes_only_its_own_lines(edit: dict[str, Any], removed: list[str], added: list[str]) -> None:
    after = apply_edit(FLOW, edit)
    assert changed_lines(FLOW, after) == (removed, added)


def test_removing_a_step_takes_its_comment_and_leaves_the_rest() -> None:
    after = apply_edit(FLOW, {"op": "remove", "path": [*STEPS, 0]})
    assert changed_lines(FLOW, after) == (
        ["      # say what happens", "      - log: looking up ${path.id}   # trailing comment"], [])


def test_moving_a_step_into_a_branch_carries_its_text_and_comments() -> None:
    after = apply_edit(FLOW, {"op": "move", "from": [*STEPS, 0], "path": [*STEPS, 2, "choice", "otherwise"],
                              "index": 1})
    removed, added = changed_lines(FLOW, after)
    assert removed == ["      # say what happens", "      - log: looking up ${path.id}   # trailing comment"]
    assert added == ["            # say what happens", "            - log: looking up ${path.id}   # trailing comment"]
    assert load_plain(after)["flows"]["get-order"]["steps"][1]["choice"]["otherwise"] == [
        {"log": "found"}, {"log": "looking up ${path.id}"}]


def test_a_new_branch_key_is_added_as_a_block_list() -> None:
    text = "flows:\n  f:\n    steps:\n      - try:\n          steps:\n            - log: a\n"
    after = apply_edit(text, {"op": "insert", "path": ["flows", "f", "steps", 0, "try", "catch"], "index": 0,
                              "value": {"log": "caught"}})
    assert after == text + "          catch:\n            - log: caught\n"


def test_the_last_step_of_a_list_removed_leaves_an_empty_list() -> None:
    text = "flows:\n  f:\n    on_error:\n      - log: a   # gone\n    steps: []\n"
    assert apply_edit(text, {"op": "remove", "path": ["flows", "f", "on_error", 0]}) == \
        "flows:\n  f:\n    on_error: []\n    steps: []\n"
    after = apply_edit(text, {"op": "insert", "path": ["flows", "f", "steps"], "index": 0, "value": {"log": "b"}})
    assert after == "flows:\n  f:\n    on_error:\n      - log: a   # gone\n    steps:\n      - log: b\n"


def test_anchors_and_aliases_survive_an_edit_elsewhere() -> None:
    text = "base: &b {timeout: 5s}\nendpoints:\n  a: {http: {url: 'http://x', <<: *b}}\nflows: {}\n"
    after = apply_edit(text, {"op": "set", "path": ["flows"], "value": {"f": {"steps": []}}})
    assert after.startswith("base: &b {timeout: 5s}\nendpoints:\n  a: {http: {url: 'http://x', <<: *b}}\n")


@pytest.mark.parametrize("edit", [
    {"op": "set", "path": [*STEPS, 9, "log"], "value": "x"},
    {"op": "remove", "path": ["nope"]},
    {"op": "insert", "path": [*STEPS, 0, "log"], "index": 0, "value": 1},
    {"op": "insert", "path": STEPS, "index": 99, "value": {"log": "x"}},
    {"op": "move", "from": [*STEPS, 2], "path": [*STEPS, 2, "choice", "otherwise"], "index": 0},
    {"op": "frobnicate", "path": []},
    {"op": "set", "path": "flows", "value": 1},
])
def test_an_edit_that_cannot_apply_is_refused_with_a_reason(edit: dict[str, Any]) -> None:
    with pytest.raises(PatchError) as caught:
        apply_edit(FLOW, edit)
    assert str(caught.value)


def test_broken_yaml_is_refused_not_rewritten() -> None:
    with pytest.raises(PatchError, match="not valid YAML"):
        apply_edit("flows: {f: [\n", {"op": "set", "path": ["flows"], "value": {}})


def _leaf_paths(value: Any, base: list[Any]) -> list[list[Any]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaf_paths(v, [*base, k])]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaf_paths(v, [*base, i])]
    return [base]


LEAVES = [p for p in _leaf_paths(load_plain(FLOW), []) if p[0] != "defaults"]
TEXT = st.one_of(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=30),
                 st.integers(), st.booleans(), st.none(), st.sampled_from(["${payload.x}", "a: b", "- x", "#", "'"]))


@settings(max_examples=150, deadline=None)
@given(path=st.sampled_from(LEAVES), value=TEXT)
def test_any_value_set_anywhere_reads_back_and_keeps_every_comment(path: list[Any], value: Any) -> None:
    after = apply_edit(FLOW, {"op": "set", "path": path, "value": value})  # it checks the document itself
    comments = [line.split("#", 1)[1] for line in FLOW.splitlines() if "# " in line and "${" not in line]
    assert all(comment in after for comment in comments)
    removed, _ = changed_lines(FLOW, after)
    assert len(removed) <= 1


STEP_ITEMS = [[*STEPS, i] for i in range(4)] + [["flows", "get-order", "on_error", 0]]
TARGETS = [(STEPS, 5), ([*STEPS, 2, "choice", "otherwise"], 2), ([*STEPS, 2, "choice", "when", 0, "steps"], 2),
           (["flows", "get-order", "on_error"], 2)]


@pytest.mark.parametrize("source", STEP_ITEMS)
@pytest.mark.parametrize(("target", "slots"), TARGETS)
def test_every_step_moves_to_every_place_keeping_the_other_lines(source: list[Any], target: list[Any],
                                                                  slots: int) -> None:
    for index in range(slots):
        if source == target[:len(source)]:
            continue
        edit = {"op": "move", "from": source, "path": target, "index": index}
        if index > len(load_plain(FLOW)["flows"]["get-order"]["steps"]) - 1 and target == STEPS:
            continue  # past the end of the list once the item left it
        after = apply_edit(FLOW, edit)
        moved = sorted(line.strip() for line in FLOW.splitlines())
        assert sorted(line.strip().replace(": []", ":") for line in after.splitlines()) == moved  # an emptied list: []
