"""What the steps that run several step lists at once share: copying a message for a branch,
reading a branch's result, and the config fields for durations and failure policies.
"""

from __future__ import annotations

import asyncio
from typing import Any

from lxml import etree

from engine.compiler import StepConfigError
from engine.message import JSON, XML, Message
from engine.units import parse_duration

FAILURE_POLICIES = ("fail", "skip", "default")


def duration_field(description: str) -> dict[str, Any]:
    return {"type": ["string", "number"],
            "description": description + " A duration: seconds as a number, or with a unit: 250ms, 2s, 1m."}


def seconds(value: Any, key: Any) -> float:
    """A duration from a step config, or a positioned config error."""
    try:
        result = parse_duration(value)
    except ValueError as exc:
        raise StepConfigError(str(exc), key) from exc
    if result <= 0:
        raise StepConfigError(f"a duration greater than zero is needed here, got {value!r}", key)
    return result


def cancel_swallowed() -> bool:
    """True when this task was asked to stop but an error came instead of CancelledError (a
    library's timeout racing the cancel turned it into its own): a background loop that retries on
    errors re-raises then, or its stop would wait for it forever."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def fork(msg: Message, payload: Any = None, *, with_payload: bool = False, item_is_request: bool = False) -> Message:
    """A message for one branch: the same request, its own headers and variables.

    The body bytes are shared (bytes never change in place); a branch that parses and edits the
    payload works on its own parse.  ``with_payload`` makes the branch's payload ``payload``
    instead (a split item); ``item_is_request``: that item is a piece of the caller's request
    body as it came (Message.payload_is_request)."""
    branch = Message(body=b"" if with_payload else msg.body, content_type=msg.content_type,
                     headers=dict(msg.headers), method=msg.method, path_params=msg.path_params,
                     query=msg.query, query_string=msg.query_string, correlation_id=msg.correlation_id,
                     max_body=msg.max_body)
    if with_payload:  # the item is the branch's own (split items are standalone copies)
        branch.set_payload(payload, XML if _is_xml(payload) else JSON)
    branch.headers_are_request = msg.headers_are_request
    # the parent's body is the branch's; a split item is the request's only when its split says so
    branch.payload_is_request = item_is_request if with_payload else msg.payload_is_request
    if not with_payload:
        branch.payload_edits = msg.payload_edits  # the places the flow wrote (a tuple: shared as it is)
    branch.headers_explicit = set(msg.headers_explicit)
    branch.vars = dict(msg.vars)
    branch.attributes = dict(msg.attributes)
    branch.status = msg.status
    branch.error = msg.error
    if msg.trace is not None:
        branch.trace = msg.trace  # coverage and try-it see every branch's steps
    return branch


def result_of(branch: Message) -> Any:
    """What a branch gives back: its parsed payload (JSON value, XML element or text; None when empty)."""
    return branch.payload


def _is_xml(value: Any) -> bool:
    return isinstance(value, etree._Element)
