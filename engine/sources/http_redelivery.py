"""``on_error.redelivery`` on a flow served over HTTP: the caller waits while the flow is tried again.

A non-HTTP source hands a failed message back to its policy (engine/sources/base.py): the
queue or the store keeps it while it waits.  An HTTP request has nobody to keep it but the
caller's open connection, so on an HTTP flow the policy works as Camel's dead-letter channel
does on a synchronous route:

- every attempt runs the flow's steps on the request as it arrived (body, headers, vars, path
  and query restored: a step of the failed attempt leaves nothing behind), with
  ``${vars.attempt}`` set, after the policy's backoff; only failures its ``retry_on`` names are
  tried again;
- once the attempts are used up, the request goes to the dead-letter target (a store: listed,
  replayed into the queue named after the flow, discarded through the management API; a folder;
  or dead-letter steps, e.g. a call publishing it to a queue), without the caller's credentials;
- then the flow's ``on_error`` steps run once, on the last failure, with ``${error.attempts}``
  and ``${error.dead_letter_id}``; without a step that answers, the caller gets the last
  failure as problem+json with ``attempts`` and ``dead_letter_id``.

The backoff adds to the caller's wait: keep ``max_attempts`` and ``backoff.max`` small, and use a
``store`` step where the caller need not wait for the backend.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import FlowError
from engine.message import Message
from engine.store import StoreError, current_store

if TYPE_CHECKING:
    from engine.compiler import CompiledFlow
    from engine.sources.base import Redelivery

log = logging.getLogger("interlace.redelivery")

# never kept in a dead letter: the caller's credentials and hop-by-hop headers (as the store step)
NOT_KEPT = frozenset({
    "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length", "host",
    "authorization", "proxy-authorization", "cookie", "expect",
})


@dataclass(frozen=True)
class _Request:
    """The request as it arrived, to start every attempt from."""

    body: bytes
    content_type: str | None
    headers: dict[str, str]
    vars: dict[str, Any]
    method: str
    path_params: dict[str, str]
    query: dict[str, str]
    query_string: str
    body_is_request: bool  # the caller's body (Message.payload_is_request)
    body_edits: tuple[tuple[str, ...], ...]  # where steps wrote into it (Message.payload_edits)

    @classmethod
    async def of(cls, msg: Message) -> _Request:
        body = await msg.load_body()  # an attempt after the first needs the bytes again
        return cls(body, msg.content_type, dict(msg.headers), dict(msg.vars), msg.method, dict(msg.path_params),
                   dict(msg.query), msg.query_string, msg.payload_is_request,
                   msg.payload_edits)

    def restore(self, msg: Message, attempt: int) -> None:
        msg.set_body(self.body, self.content_type)
        msg.content_type = self.content_type
        msg.headers = dict(self.headers)
        msg.headers_are_request = True
        msg.payload_is_request = self.body_is_request  # set_body above cleared it
        msg.payload_edits = self.body_edits
        msg.headers_explicit = set()
        msg.vars = {**self.vars, "attempt": attempt}
        msg.method = self.method
        msg.path_params = dict(self.path_params)
        msg.query = dict(self.query)
        msg.query_string = self.query_string
        msg.status = 200
        msg.error = None
        msg.done = False


async def run_redelivered(flow: CompiledFlow, msg: Message) -> None:
    """Run ``flow``'s steps under its policy (the module notes); raises the last failure when no
    ``on_error`` step answered it."""
    from engine.compiler import internal_error

    policy: Redelivery = flow.policy
    request = await _Request.of(msg)
    attempt = 0
    while True:
        attempt += 1
        request.restore(msg, attempt)
        try:
            await flow.steps.run(msg)
            return
        except FlowError as exc:
            failure = exc
        except Exception as exc:
            log.exception("flow %s failed at %s (attempt %d)", flow.name, getattr(exc, "step_id", "?"), attempt,
                          extra={"correlation_id": msg.correlation_id})
            failure = internal_error(exc)
        view = {**failure.as_dict(), "step": getattr(failure, "step_id", None)}
        if attempt >= policy.max_attempts or not policy.retries(view):
            break
        await asyncio.sleep(policy.delay(attempt))
    failure.extra = {**failure.extra, "attempts": attempt}
    if policy.dead_letter:
        ident = await _dead_letter(flow, policy.dead_letter, request, msg, view, attempt)
        if ident is not None:
            failure.extra["dead_letter_id"] = ident
    if flow.on_error is None:
        raise failure
    await flow._handle_error(msg, failure)


async def _dead_letter(flow: CompiledFlow, target: dict[str, Any], request: _Request, msg: Message,
                       error: dict[str, Any], attempts: int) -> str | None:
    """Keep the request as it arrived, with the last error; returns the dead letter's id (None when
    the target could not take it: the caller's answer then has no id)."""
    from engine.observability import new_id

    headers = {k: v for k, v in request.headers.items() if k not in NOT_KEPT}
    error = {**error, "attempts": attempts, "method": request.method, "correlation_id": msg.correlation_id}
    ident = new_id()  # not the correlation id: a caller may send the same one twice
    kept = Message(body=request.body, content_type=request.content_type, headers=headers,
                   correlation_id=msg.correlation_id)
    kept.vars.update(request.vars)
    kept.vars["message_id"] = ident
    try:
        if "steps" in target:
            from engine.sources.base import run_dead_letter_steps

            if not await run_dead_letter_steps(flow, kept, error):
                return None
        elif "store" in target:
            await current_store().add_dead_letter(
                str(target["store"]), queue=flow.name, flow=flow.name, body=request.body,
                content_type=request.content_type, headers=headers, vars=dict(request.vars), attempts=attempts,
                error=error, message_id=ident)
        else:
            from engine.sources.files_common import write_dead_letter_file

            await write_dead_letter_file(str(target["folder"]), flow, kept, error)
    except (StoreError, OSError) as exc:
        log.error("flow %s: request %s could not be dead-lettered: %s", flow.name, msg.correlation_id, exc)
        return None
    log.warning("flow %s: request %s dead-lettered after %d attempts: %s", flow.name, ident, attempts,
                error.get("message"))
    return ident

