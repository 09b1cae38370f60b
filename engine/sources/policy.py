"""A flow's ``on_error``: a list of steps, or a mapping with a redelivery policy and those steps.

```yaml
on_error:
  redelivery:
    max_attempts: 5                # tries in all, the first included
    backoff: {initial: 200ms, multiplier: 2, max: 5s, jitter: 0.2}
    retry_on: {statuses: [502, 503, 504], codes: [backend-unreachable]}   # default: every failure
    dead_letter: {store: orders-dead}      # or {folder: data/dead}, or {source: true} (the queue's own)
  steps:                           # a queue's or a file's flow: run on every failed attempt
    - log: {message: "attempt failed: ${error.message}"}
```

The policy applies to every flow.  The store processor keeps the attempts in the store, so the
backoff survives a restart; the queue sources retry in process while they hold the message
unacknowledged and count the broker's earlier deliveries (x-delivery-count, the redelivered
flag) as attempts, so a message whose flow kept killing the engine is dead-lettered; the file
sources retry in process.  On a flow served over HTTP the caller waits: the steps are tried
again on the request as it arrived, then the request is dead-lettered and ``steps`` run once on
the last failure to answer it (engine/sources/http_redelivery.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.sources.base import Redelivery
from engine.units import DURATION_HINT, parse_duration

DURATION = {"type": ["string", "number"], "description": DURATION_HINT}

DEAD_LETTER_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "minProperties": 1, "maxProperties": 1,
    "description": "Where a message goes once its attempts are used up.",
    "properties": {
        "store": {"type": "string", "description": "A dead-letter store (listed, replayed and discarded through "
                                                   "the management API)."},
        "folder": {"type": "string", "description": "A folder (relative to the flow file) where the body is "
                                                    "written with the error beside it in NAME.error.json."},
        "steps": {"type": "array", "description": "Steps that take the message (the body and headers as it came, "
                                                  "${error.*} the last failure): e.g. a call publishing it to an "
                                                  "AMQP queue or an MQTT topic through an endpoint. When they fail, "
                                                  "the source disposes of it as without a dead letter (a store "
                                                  "processor buries it in QUEUE.dead)."},
        "source": {"const": True, "description": "The source's own dead-letter queue or topic (amqp, mqtt: "
                                                 "their dead_letter settings), with the error in its headers "
                                                 "(not on a flow served over HTTP)."},
    },
}

REDELIVERY_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "description": "How a failed message is tried again, and where it goes at the end. On a flow served "
                   "over HTTP the caller waits: its steps are tried again on the request as it arrived, then "
                   "the request is dead-lettered and the on_error steps run once on the last failure "
                   "(${error.attempts}, ${error.dead_letter_id}; the problem+json answer carries both).",
    "properties": {
        "max_attempts": {"type": "integer", "minimum": 1,
                         "description": "Attempts in all, the first included (default 1: no redelivery). Attempts "
                                        "in which the engine died count too (AMQP's delivery count; for polled "
                                        "files and MQTT the engine's store): once they are used up the message "
                                        "is dead-lettered without running again."},
        "backoff": {
            "type": "object", "additionalProperties": False,
            "description": "The wait before each new attempt: initial * multiplier^(n-1), at most max, "
                           "spread by +-jitter.",
            "properties": {"initial": {**DURATION, "description": "First wait (default 1s)."},
                           "multiplier": {"type": "number", "minimum": 1, "description": "Growth (default 2)."},
                           "max": {**DURATION, "description": "Longest wait (default 60s)."},
                           "jitter": {"type": "number", "minimum": 0, "maximum": 1,
                                      "description": "Random spread as a fraction (default 0.2)."}},
        },
        "retry_on": {
            "type": "object", "additionalProperties": False,
            "description": "The failures tried again (default: all); any other goes to the dead letter at once.",
            "properties": {"statuses": {"type": "array", "items": {"type": "integer"},
                                        "description": "Statuses (${error.status}, or the backend's status)."},
                           "codes": {"type": "array", "items": {"type": "string"},
                                     "description": "Error codes (${error.code}), e.g. backend-unreachable."}},
        },
        "dead_letter": DEAD_LETTER_SCHEMA,
    },
}


def on_error_schema(steps: dict[str, Any]) -> dict[str, Any]:
    dead_letter = {**DEAD_LETTER_SCHEMA, "properties": {**DEAD_LETTER_SCHEMA["properties"],
                                                        "steps": {**steps, "description": DEAD_LETTER_SCHEMA[
                                                            "properties"]["steps"]["description"]}}}
    redelivery = {**REDELIVERY_SCHEMA, "properties": {**REDELIVERY_SCHEMA["properties"], "dead_letter": dead_letter}}
    return {
        "description": "Steps run when a step fails (${error.*} describes the failure); or a mapping with a "
                       "redelivery policy and those steps. Without a respond step the caller gets problem+json.",
        "anyOf": [steps, {"type": "object", "additionalProperties": False,
                          "properties": {"redelivery": redelivery, "steps": steps}}],
    }


def on_error_steps(node: Any) -> Any:
    """The step list of an ``on_error`` node, whichever form it has."""
    if isinstance(node, dict):
        return node.get("steps")
    return node


def compile_policy(node: Any, base: Path) -> Redelivery:
    """The redelivery policy of an ``on_error`` node (raises ValueError with what is wrong)."""
    if not isinstance(node, dict) or not node.get("redelivery"):
        return Redelivery()
    config = node["redelivery"]
    backoff = config.get("backoff") or {}
    retry_on = config.get("retry_on") or {}
    initial = parse_duration(backoff.get("initial", 1.0))
    maximum = parse_duration(backoff.get("max", 60.0))
    if maximum < initial:
        raise ValueError(f"backoff max ({maximum}s) is shorter than its initial wait ({initial}s)")
    dead = dict(config["dead_letter"]) if config.get("dead_letter") else None
    if dead and "steps" in dead:
        dead["steps"] = True  # compiled by the compiler (CompiledFlow.dead_letter_steps)
    if dead and "folder" in dead:
        dead["folder"] = str((base / str(dead["folder"])).resolve())
    return Redelivery(max_attempts=int(config.get("max_attempts", 1)), initial=initial,
                      multiplier=float(backoff.get("multiplier", 2.0)), maximum=maximum,
                      jitter=float(backoff.get("jitter", 0.2)),
                      statuses=frozenset(int(s) for s in retry_on.get("statuses", [])),
                      codes=frozenset(str(c) for c in retry_on.get("codes", [])),
                      dead_letter=dead)
