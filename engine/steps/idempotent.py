"""The idempotent step (Camel's idempotent consumer, the Idempotency-Key header of payment
APIs): a request whose key was already seen does not run the guarded steps again.

The first request with a key claims it (atomically: of two replicas racing, one wins), runs the
steps and records the answer.  A repeat then gets, by ``on_duplicate``: ``replay`` (the recorded
answer again, marked ``Idempotent-Replayed: true``; the default), ``reject`` (409) or ``drop``
(204).  A repeat while the first is still running gets 409 with Retry-After.  A repeat with the
same key but another method, path or body is the caller's mistake: 422.  When the steps fail,
the claim is released so the caller's retry runs them again.  The records live in this process
by default, in Redis with a redis endpoint as ``store`` (every replica), or in a table of a sql
endpoint's database (a SQLite file keeps them across a restart; engine/sqlstore.py).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from engine.compiler import CompileContext
from engine.errors import BadRequest, Conflict, FlowError, RequestInvalid, ServiceUnavailable
from engine.expressions import to_text
from engine.message import Message
from engine.registry import STEPS_REF, StepFn, step_kind
from engine.steps._answers import read_meta, record_answer, restore_answer
from engine.steps._fork import duration_field, seconds
from engine.steps._stores import RECORDS_STORE_FIELD, store_for

log = logging.getLogger("interlace.idempotent")

_PENDING = b"pending"


@step_kind(
    "idempotent",
    summary="Run the steps once per idempotency key; a repeated key gets the recorded answer (or 409, or 204).",
    category="policy",
    schema={
        "type": "object", "additionalProperties": False, "required": ["key", "steps"],
        "properties": {
            "key": {"type": "string",
                    "description": "The idempotency key template, e.g. ${headers.\"idempotency-key\"}."},
            "steps": STEPS_REF,
            "ttl": duration_field("How long a key is remembered (default 24h)."),
            "in_progress_ttl": duration_field("How long a claim holds while its steps run, so a crashed "
                                              "replica's claim frees itself (default 60s)."),
            "on_duplicate": {"enum": ["replay", "reject", "drop"],
                             "description": "replay (default): the recorded answer again; reject: 409; drop: 204."},
            "required": {"type": "boolean",
                         "description": "A request without a key is refused with 400 (default false: it runs "
                                        "unguarded)."},
            "store": RECORDS_STORE_FIELD,
        },
    },
    examples=[{"key": "${headers.\"idempotency-key\"}", "ttl": "24h",
               "steps": [{"call": {"endpoint": "payments", "method": "POST", "path": "/payments"}}]}],
    branches=("steps",),
)
def compile_idempotent(config: Any, ctx: CompileContext) -> StepFn:
    key = ctx.template(config["key"], "key")
    steps = ctx.steps(config["steps"], "steps")
    ttl = seconds(config.get("ttl", "24h"), "ttl")
    pending_ttl = seconds(config.get("in_progress_ttl", "60s"), "in_progress_ttl")
    on_duplicate = config.get("on_duplicate", "replay")
    required = bool(config.get("required", False))
    store = store_for(config, ctx, 100_000)
    namespace = f"idempotent:{ctx.owner}:"
    ctx.needs_body()  # the body is part of what a repeat must match
    first_id, repeat_id = ctx.branch("steps"), ctx.branch("duplicate")

    async def run(msg: Message) -> None:
        given = key.render(msg)
        if given is None or to_text(given) == "":
            if required:
                raise BadRequest("this request needs an idempotency key", extra={"missing": "idempotency key"})
            await steps.run(msg)
            return
        entry = namespace + to_text(given)
        fingerprint = _fingerprint(msg)
        try:
            claimed = await store.claim(entry, _PENDING + fingerprint.encode(), pending_ttl)
            recorded = None if claimed else await store.get(entry)
        except Exception as exc:
            log.warning("idempotency store unavailable: %s", type(exc).__name__)
            raise ServiceUnavailable("duplicate requests cannot be detected right now; try again shortly",
                                     headers={"Retry-After": "1"}) from None
        if not claimed:
            if msg.trace is not None:
                msg.trace.append(repeat_id)
            _answer_duplicate(msg, recorded, fingerprint, on_duplicate)
            return
        if msg.trace is not None:
            msg.trace.append(first_id)
        try:
            await steps.run(msg)
            if msg.is_streaming:
                await msg.load_body()
            await store.put(entry, record_answer(msg, msg.body, fingerprint=fingerprint), ttl)
        except BaseException:
            try:
                await store.delete(entry)  # let the caller's retry run the steps again
            except Exception:
                log.warning("idempotency claim %s could not be released; it frees itself after %ss",
                            entry, pending_ttl)
            raise

    return run


def _answer_duplicate(msg: Message, recorded: bytes | None, fingerprint: str, on_duplicate: str) -> None:
    if recorded is None or recorded.startswith(_PENDING):
        if recorded is not None and recorded[len(_PENDING):].decode() != fingerprint:
            raise _mismatch()
        raise Conflict("a request with this idempotency key is still being processed",
                       headers={"Retry-After": "1"}, extra={"in_progress": True})
    meta, _ = read_meta(recorded)
    if meta.get("fingerprint") != fingerprint:
        raise _mismatch()
    if on_duplicate == "reject":
        raise Conflict("a request with this idempotency key was already processed", extra={"duplicate": True})
    if on_duplicate == "drop":
        msg.set_body(b"", None)
        msg.status = 204
        msg.set_header("idempotent-replayed", "true")
        msg.done = True
        return
    restore_answer(msg, recorded)
    msg.set_header("idempotent-replayed", "true")


def _fingerprint(msg: Message) -> str:
    """What a repeat must match: the method, the path parameters, the query and the body."""
    digest = hashlib.sha256(msg.method.encode())
    for name, value in sorted(msg.path_params.items()):
        digest.update(f"\0{name}={value}".encode())
    digest.update(b"\0?" + msg.query_string.encode() + b"\0" + msg.body)
    return digest.hexdigest()


def _mismatch() -> FlowError:
    return RequestInvalid("this idempotency key was used for another request (method, path or body differ)",
                          code="idempotency-key-reused")
