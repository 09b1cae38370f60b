"""A step kind the designer has never heard of shows up in its palette, forms and lanes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from designer.app import registry_view
from designer.outline import build_outline, parse
from engine.message import Message
from engine.registry import _KINDS, STEPS_REF, StepFn, step_kind


@pytest.fixture
def new_kind() -> Iterator[str]:
    name = "retry_block"

    @step_kind(name, summary="Run steps, again on failure.", category="route",
               schema={"type": "object", "additionalProperties": False, "required": ["attempts"],
                       "properties": {"attempts": {"type": "integer", "minimum": 1},
                                      "steps": STEPS_REF, "exhausted": STEPS_REF}},
               examples=[{"attempts": 2, "steps": [{"log": "try"}]}], branches=("steps", "exhausted"))
    def compile_retry_block(config: Any, ctx: Any) -> StepFn:
        async def run(msg: Message) -> None:
            return None
        return run

    yield name
    del _KINDS[name]


def test_a_new_kind_is_in_the_palette_with_its_schema(new_kind: str) -> None:
    kinds = {k["name"]: k for k in registry_view()["kinds"]}
    assert kinds[new_kind]["category"] == "route" and kinds[new_kind]["schema"]["required"] == ["attempts"]
    assert kinds[new_kind]["example"] == {"attempts": 2, "steps": [{"log": "try"}]}


def test_a_new_kinds_step_lists_are_drawn_as_lanes(new_kind: str) -> None:
    text = "flows:\n  f:\n    source: {http: {path: /f}}\n    steps:\n      - retry_block:\n          attempts: 2\n" \
           "          steps:\n            - log: a\n"
    step = build_outline(parse(text, "f.yaml"))["flows"][0]["lanes"][0]["steps"][0]
    lanes = {lane["key"]: lane for lane in step["lanes"]}
    assert [s["kind"] for s in lanes["steps"]["steps"]] == ["log"]
    assert lanes["exhausted"]["steps"] == [] and lanes["exhausted"]["path"][-1] == "exhausted"
