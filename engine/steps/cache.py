"""The cache step (WSO2's cache mediator, Camel's caching around a producer): the answer its
nested steps produce is kept under a key for a time, and a later message with the same key
gets it without running them.

What is kept: status, headers, body and its content type (and the variables named in ``vars``).
Only the statuses listed are kept (default 200).  The answer's own ``Cache-Control`` is honoured:
``no-store``, ``no-cache`` and ``private`` keep nothing, ``max-age``/``s-maxage`` shorten the time.
In memory by default (bounded, least recently used out first); in Redis with ``store``.  A store
that cannot be reached is a miss, logged, never a failed request.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from engine.compiler import CompileContext, StepConfigError
from engine.expressions import to_text
from engine.kvstore import MemoryStore
from engine.message import Message
from engine.registry import STEPS_REF, StepFn, step_kind
from engine.steps._answers import Answer, AnswerNow, record_answer, restore_answer
from engine.steps._fork import duration_field, seconds
from engine.steps._stores import RECORDS_STORE_FIELD, store_for
from engine.units import parse_size

log = logging.getLogger("interlace.cache")

_MAX_AGE = re.compile(r"(?:^|,)\s*(?:s-maxage|max-age)\s*=\s*\"?(\d+)")
_NOT_STORED = ("no-store", "no-cache", "private")


@step_kind(
    "cache",
    summary="Keep the answer of the nested steps under a key for a time; a hit skips them.",
    category="policy",
    schema={
        "type": "object", "additionalProperties": False, "required": ["key", "ttl", "steps"],
        "properties": {
            "key": {"type": "string", "description": "The cache key template, e.g. customer:${path.id}."},
            "ttl": duration_field("How long an answer is kept."),
            "steps": STEPS_REF,
            "statuses": {"type": "array", "items": {"type": "integer", "minimum": 100, "maximum": 599},
                         "description": "Statuses whose answers are kept (default [200])."},
            "max_entries": {"type": "integer", "minimum": 1,
                            "description": "In memory: how many answers at most (default 10000)."},
            "max_size": {"type": ["string", "integer"],
                         "description": "A larger body is not kept (default 1MiB). A size: 64KiB, 1MiB."},
            "vars": {"type": "array", "items": {"type": "string"},
                     "description": "Variables the nested steps set that a hit restores too."},
            "store": RECORDS_STORE_FIELD,
            "header": {"type": "string",
                       "description": "A response header that says hit or miss (e.g. X-Cache)."},
            "respect_request": {"type": "boolean",
                                "description": "Honour the caller's Cache-Control: no-cache (look-up skipped, "
                                               "answer refreshed) and no-store (cache not used). Default false: "
                                               "callers cannot make the backend work harder."},
        },
    },
    examples=[{"key": "customer:${path.id}", "ttl": "30s", "header": "X-Cache",
               "steps": [{"call": {"endpoint": "crm", "method": "GET", "path": "/customers/${path.id}"}}]}],
    branches=("steps",),
)
def compile_cache(config: Any, ctx: CompileContext) -> StepFn:
    key = ctx.template(config["key"], "key")
    ttl = seconds(config["ttl"], "ttl")
    steps = ctx.steps(config["steps"], "steps")
    statuses = frozenset(config.get("statuses", [200]))
    try:
        max_size = parse_size(config.get("max_size", "1MiB"))
    except ValueError as exc:
        raise StepConfigError(str(exc), "max_size") from exc
    store = store_for(config, ctx, int(config.get("max_entries", 10_000)))
    kept_vars = tuple(str(v) for v in config.get("vars", ()))
    header = str(config["header"]).lower() if "header" in config else None
    respect_request = bool(config.get("respect_request", False))
    namespace = f"cache:{ctx.step_id}:"
    hit_id, miss_id = ctx.branch("hit"), ctx.branch("steps")
    fixed_key = namespace + to_text(key.constant) if key.is_constant else None
    # in memory the answers are kept decoded (Answer): a hit parses nothing
    memory = store if isinstance(store, MemoryStore) else None

    def give(msg: Message, answer: Answer) -> None:
        """A hit in memory: the kept answer becomes the message's."""
        answer.restore(msg)
        if header is not None:
            msg.set_header(header, "hit")

    async def run(msg: Message) -> None:
        entry_key = fixed_key or namespace + to_text(key.render(msg))
        asked = msg.headers.get("cache-control", "").lower() if respect_request else ""
        if "no-store" in asked:
            await steps.run(msg)
            return
        if "no-cache" not in asked:
            if memory is not None:
                answer = memory.recall(entry_key)
                if answer is not None:
                    if msg.trace is not None:
                        msg.trace.append(hit_id)
                    give(msg, answer)
                    return
            else:
                record = await _safe(store.get(entry_key), None)
                if record is not None:
                    if msg.trace is not None:
                        msg.trace.append(hit_id)
                    restore_answer(msg, record)
                    if header is not None:
                        msg.set_header(header, "hit")
                    return
        if msg.trace is not None:
            msg.trace.append(miss_id)
        await steps.run(msg)
        if msg.status not in statuses:
            return
        lifetime = _lifetime(msg, ttl)
        if lifetime is None:
            return
        if msg.is_streaming:
            await msg.load_body()
        body = msg.body
        if len(body) > max_size:
            return
        if header is not None:
            msg.set_header(header, "miss")
        if memory is not None:
            memory.keep(entry_key, Answer.of(msg, body, kept_vars), lifetime)
        else:
            await _safe(store.put(entry_key, record_answer(msg, body, kept_vars), lifetime), None)

    if memory is not None:
        def recall_now(msg: Message | None) -> Answer | None:
            """The hit in memory ``run`` would give, found without an await (engine/steps/_answers.py
            ``AnswerNow``); None, with nothing done, when ``run`` would do anything else."""
            if fixed_key is not None and not respect_request:
                return memory.recall(fixed_key)  # type: ignore[no-any-return]
            assert msg is not None
            if respect_request:
                asked = msg.headers.get("cache-control", "").lower()
                if "no-store" in asked or "no-cache" in asked:
                    return None
            return memory.recall(fixed_key or namespace + to_text(key.render(msg)))  # type: ignore[no-any-return]

        run.answer_now = AnswerNow(recall_now, give, fixed_key is None or respect_request)  # type: ignore[attr-defined]
    return run


async def _safe(operation: Any, fallback: Any) -> Any:
    try:
        return await operation
    except Exception as exc:  # a store that cannot be reached is a miss, never a failed request
        log.warning("cache store unavailable: %s", type(exc).__name__)
        return fallback


def _lifetime(msg: Message, ttl: float) -> float | None:
    control = msg.headers.get("cache-control", "").lower() if not msg.headers_are_request or \
        "cache-control" in msg.headers_explicit else ""
    if any(word in control for word in _NOT_STORED):
        return None
    match = _MAX_AGE.search(control)
    if match is not None:
        ttl = min(ttl, float(match.group(1)))
    return ttl if ttl > 0 else None
