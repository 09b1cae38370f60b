"""An answer as bytes and back, for the steps that keep answers (cache, idempotent): status,
headers, body and content type, and chosen variables.  ``Answer`` is the same record decoded once,
for a store in this process's memory: a hit then costs no parsing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine import jsonfast
from engine.message import Message


def record_answer(msg: Message, body: bytes, kept_vars: tuple[str, ...] = (), **extra: Any) -> bytes:
    if msg.headers_are_request:
        headers = [(k, msg.headers[k]) for k in msg.headers_explicit if k in msg.headers]
    else:
        headers = list(msg.headers.items())
    meta = {"status": msg.status, "headers": headers, "reply": not msg.headers_are_request,
            "content_type": msg.content_type,
            "vars": {name: msg.vars[name] for name in kept_vars if name in msg.vars}, **extra}
    return jsonfast.dumps(meta) + b"\n" + body


def read_meta(record: bytes) -> tuple[dict[str, Any], bytes]:
    head, _, body = record.partition(b"\n")
    return jsonfast.loads(head), body


def restore_answer(msg: Message, record: bytes) -> dict[str, Any]:
    """Make ``msg`` the recorded answer; returns the record's metadata."""
    meta, body = read_meta(record)
    msg.status = int(meta["status"])
    if meta["reply"]:  # the steps ended on a backend's reply: its headers become the message's
        msg.replace_headers({str(k): str(v) for k, v in meta["headers"]})
    else:  # the steps only set some headers on the request's: set the same ones again
        for name, value in meta["headers"]:
            msg.set_header(str(name), str(value))
    msg.set_body(body, meta["content_type"])
    msg.vars.update(meta["vars"])
    return meta


@dataclass(frozen=True, slots=True)
class Answer:
    """A recorded answer ready to give again: what ``restore_answer`` would make of its record."""

    status: int
    headers: tuple[tuple[str, str], ...]
    reply: bool
    content_type: str | None
    body: bytes
    vars: bytes | None  # the kept variables as JSON (a fresh copy on every hit), None when none were kept
    reply_headers: dict[str, str] | None = None  # a reply's headers as a dict: a hit copies it (dict.copy)

    @classmethod
    def of(cls, msg: Message, body: bytes, kept_vars: tuple[str, ...] = ()) -> Answer:
        if msg.headers_are_request:
            headers = tuple((k, msg.headers[k]) for k in msg.headers_explicit if k in msg.headers)
        else:
            headers = tuple(msg.headers.items())
        kept = {name: msg.vars[name] for name in kept_vars if name in msg.vars}
        reply = not msg.headers_are_request
        return cls(msg.status, headers, reply, msg.content_type, body, jsonfast.dumps(kept) if kept else None,
                   dict(headers) if reply else None)

    def restore(self, msg: Message) -> None:
        msg.status = self.status
        if self.reply_headers is not None:
            msg.replace_headers(self.reply_headers.copy())
        else:
            for name, value in self.headers:
                msg.set_header(name, value)
        msg.set_body(self.body, self.content_type)
        if self.vars is not None:
            msg.vars.update(jsonfast.loads(self.vars))


@dataclass(frozen=True, slots=True)
class AnswerNow:
    """What a step that keeps answers in memory gives the engine's server, to answer a request in
    its protocol without an await (engine/front.py ``Facade.answer_now``).

    ``recall(msg)`` is the kept answer the step's run would give, or None when the run would do
    anything else (a miss, the caller's Cache-Control honoured); it changes nothing.  ``give(msg,
    answer)`` makes ``msg`` that answer, as the run does.  The same answer given to requests with
    the same content type makes the same status, headers, content type and body: the server
    keeps their encoding per answer.  ``reads_request`` is False when ``recall`` reads nothing of
    the request (a fixed key): it is then called with None."""

    recall: Callable[[Message | None], Answer | None]
    give: Callable[[Message, Answer], None]
    reads_request: bool
