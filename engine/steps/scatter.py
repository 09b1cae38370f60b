"""The scatter step (scatter-gather, WSO2's clone, Camel's multicast): several branches run at
once, each on its own copy of the message, and their results are gathered into one value.

A branch that fails or is still running when the timeout passes is handled by its failure
policy: ``fail`` (the scatter fails with the branch's error), ``skip`` (left out) or
``default`` (its ``default`` value stands in, and the gathered object is marked partial).
The time a scatter takes is that of its slowest branch, not the sum.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from lxml import etree

from engine.compiler import CompileContext, StepConfigError, Steps, internal_error
from engine.convert import json_to_xml, xml_name
from engine.errors import BackendTimeout, FlowError
from engine.message import JSON, XML, Message
from engine.registry import STEPS_REF, StepFn, step_kind
from engine.steps._fork import FAILURE_POLICIES, duration_field, fork, result_of, seconds
from engine.steps.basic import compile_jsonpath, json_payload

GATHER_MODES = ("object", "array", "xml", "vars")

_POLICY = {"enum": list(FAILURE_POLICIES),
           "description": "What a failed or timed-out branch does: fail (the scatter fails, the default), skip "
                          "(left out of the result) or default (its default value stands in)."}


@dataclass(frozen=True)
class _Branch:
    name: str
    steps: Steps
    policy: str
    default: Any
    id: str


@step_kind(
    "scatter",
    summary="Run branches concurrently, each on its own copy of the message, and gather their results.",
    category="route",
    schema={
        "type": "object", "additionalProperties": False, "required": ["branches"],
        "properties": {
            "branches": {
                "type": "array", "minItems": 1, "description": "The branches, each with a unique name.",
                "items": {"type": "object", "additionalProperties": False, "required": ["name", "steps"],
                          "properties": {"name": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_-]*$",
                                                  "description": "The branch's name: its key in the result."},
                                         "steps": STEPS_REF,
                                         "on_failure": _POLICY,
                                         "default": {"description": "The value a failed branch gives when its "
                                                                    "policy is default (default null)."}}}},
            "timeout": duration_field("How long all branches together may take; a branch still running "
                                      "then is cancelled and counts as failed (code backend-timeout)."),
            "on_failure": _POLICY,
            "default": {"description": "The value a failed branch gives under on_failure: default (default null)."},
            "gather": {"enum": list(GATHER_MODES),
                       "description": "How results are gathered: object (branch name: result, the default), "
                                      "array (in branch order), xml (an element per branch under root) or vars "
                                      "(each result in ${vars.NAME}, the payload unchanged)."},
            "into": {"type": "string", "pattern": r"^\$",
                     "description": "JSONPath in the JSON payload where the gathered value goes; default: it "
                                    "becomes the payload."},
            "root": {"type": "string", "description": "Root element name for gather: xml (default results)."},
            "partial": {"type": "string",
                        "description": "With gather: object, a key set to true in the result when any branch "
                                       "failed and was defaulted or skipped (e.g. partial)."},
            "errors": {"type": "string",
                       "description": "A variable that receives {branch: error} for the branches that failed."},
        },
    },
    examples=[{"timeout": "2s", "on_failure": "default", "partial": "partial",
               "branches": [{"name": "profile", "steps": [{"call": {"endpoint": "profile", "method": "GET",
                                                                     "path": "/customers/${path.id}"}}]},
                            {"name": "orders", "steps": [{"call": {"endpoint": "orders", "method": "GET",
                                                                    "path": "/customers/${path.id}"}}]}]}],
    branches=("branches",),
)
def compile_scatter(config: Any, ctx: CompileContext) -> StepFn:
    policy = config.get("on_failure", "fail")
    fallback = config.get("default")
    branches: list[_Branch] = []
    seen: set[str] = set()
    for index, item in enumerate(config["branches"]):
        name = str(item["name"])
        if name in seen:
            raise StepConfigError(f"two branches are named {name!r}; each branch needs its own name",
                                  ("branches", index, "name"))
        seen.add(name)
        steps = ctx.steps(item["steps"], ("branches", index, "steps"))
        branches.append(_Branch(name, steps, item.get("on_failure", policy), item.get("default", fallback),
                                ctx.branch(("branches", index))))
    timeout = seconds(config["timeout"], "timeout") if "timeout" in config else None
    mode = config.get("gather", "object")
    into = compile_jsonpath(config["into"], ctx, "into") if "into" in config else None
    if into is not None and mode in ("xml", "vars"):
        raise StepConfigError(f"into puts a JSON value in the payload; it does not go with gather: {mode}", "into")
    root = xml_name(str(config.get("root", "results")))
    partial_key = config.get("partial")
    if partial_key is not None and mode != "object":
        raise StepConfigError("partial marks the gathered object; it goes with gather: object", "partial")
    errors_var = config.get("errors")
    ctx.needs_body()  # every branch starts from the same body: read it once, before forking
    compiled = tuple(branches)

    async def run(msg: Message) -> None:
        if into is not None:
            json_payload(msg, "scatter into a JSONPath")  # fail before calling anything
        outcomes = await _run_all(msg, compiled, timeout)
        results: list[tuple[str, Any]] = []
        failures: dict[str, dict[str, Any]] = {}
        for branch, outcome in zip(compiled, outcomes, strict=True):
            if isinstance(outcome, FlowError):
                failures[branch.name] = outcome.as_dict()
                if branch.policy == "fail":
                    raise outcome
                if branch.policy == "default":
                    results.append((branch.name, branch.default))
                continue
            results.append((branch.name, outcome))
        if errors_var is not None:
            msg.vars[errors_var] = failures
        _gather(msg, results, mode, into, root, partial_key if failures else None)

    return run


async def _run_all(msg: Message, branches: tuple[_Branch, ...], limit: float | None) -> list[Any]:
    """Each branch's result, or the FlowError it ended with (a timeout being one)."""

    async def one(branch: _Branch) -> Any:
        copy = fork(msg)
        if copy.trace is not None:
            copy.trace.append(branch.id)
        await branch.steps.run(copy)
        return result_of(copy)

    tasks = [asyncio.ensure_future(one(branch)) for branch in branches]
    try:
        _done, pending = await asyncio.wait(tasks, timeout=limit)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        raise
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    outcomes: list[Any] = []
    for branch, task in zip(branches, tasks, strict=True):
        if task in pending:
            error = BackendTimeout(f"branch {branch.name!r} did not finish within the scatter's timeout")
            error.step_id = branch.id  # type: ignore[attr-defined]
            outcomes.append(error)
            continue
        exc = task.exception()
        if exc is None:
            outcomes.append(task.result())
        elif isinstance(exc, FlowError):
            outcomes.append(exc)
        else:
            outcomes.append(internal_error(exc))
    return outcomes


def _gather(msg: Message, results: list[tuple[str, Any]], mode: str, into: Any, root: str,
            partial_key: str | None) -> None:
    if mode == "vars":
        for name, value in results:
            msg.vars[name] = value
        return
    if mode == "xml":
        element = etree.Element(root)
        for name, value in results:
            element.append(_as_element(name, value))
        msg.set_payload(element, XML)
        return
    gathered: Any
    if mode == "array":
        gathered = [_as_json(result) for _, result in results]
    else:
        gathered = {name: _as_json(result) for name, result in results}
        if partial_key is not None:
            gathered[partial_key] = True
    if into is None:
        msg.set_payload(gathered, JSON)
    else:
        document = json_payload(msg, "scatter into a JSONPath")
        msg.set_payload(into.update_or_create(document if document is not None else {}, gathered), JSON,
                        msg.content_type)


def _as_json(value: Any) -> Any:
    if hasattr(value, "tag"):  # an XML result gathered as JSON: its text content
        return "".join(value.itertext())
    return value


def _as_element(name: str, value: Any) -> etree._Element:
    if hasattr(value, "tag"):
        wrapper = etree.Element(xml_name(name))
        wrapper.append(value)
        return wrapper
    return json_to_xml(value, root=xml_name(name))
