"""The transaction step: its steps run in one transaction of an endpoint, committed when they
all succeed, rolled back on any error (which then goes on to the flow's error handlers)."""

from __future__ import annotations

import logging
from typing import Any

from connectors.base import TRANSACTIONS_KEY, TransactionOptions
from engine.compiler import CompileContext, StepConfigError
from engine.message import Message
from engine.registry import STEPS_REF, StepFn, step_kind

log = logging.getLogger("interlace.transaction")


@step_kind(
    "transaction",
    summary="Run steps in one transaction of an endpoint (sql): every call to it inside shares the "
            "transaction; commit when the steps succeed, roll back on any error.",
    category="connect",
    schema={
        "type": "object", "additionalProperties": False, "required": ["endpoint", "steps"],
        "properties": {
            "endpoint": {"type": "string", "description": "The endpoint whose transaction it is (a sql endpoint)."},
            "isolation": {"enum": ["read uncommitted", "read committed", "repeatable read", "serializable"],
                          "description": "Isolation level (default: the endpoint's isolation, else the "
                                         "database's). SQLite transactions are always serializable."},
            "read_only": {"type": "boolean",
                          "description": "Refuse every change inside (PostgreSQL: a READ ONLY transaction; SQLite: "
                                         "query_only); a write fails with backend-rejected."},
            "steps": {**STEPS_REF, "description": "The steps run inside the transaction."},
        },
    },
    examples=[{"endpoint": "inventory-db", "steps": [
        {"call": {"endpoint": "inventory-db", "operation": "execute",
                  "sql": "UPDATE items SET qty = qty - :n WHERE sku = :sku",
                  "params": {"sku": "${payload.sku}", "n": "${payload.qty}"}}},
        {"call": {"endpoint": "inventory-db", "operation": "execute",
                  "sql": "INSERT INTO moves (sku, n) VALUES (:sku, :n)",
                  "params": {"sku": "${payload.sku}", "n": "${payload.qty}"}}}]}],
    branches=("steps",),
)
def compile_transaction(config: Any, ctx: CompileContext) -> StepFn:
    name = str(config["endpoint"])
    endpoint = ctx.endpoint(name, "endpoint")
    if hasattr(endpoint, "connector") and not getattr(endpoint.connector, "TRANSACTIONS", False):
        raise StepConfigError(f"endpoint {name!r} ({endpoint.kind}) has no transactions", "endpoint")
    options = TransactionOptions(config.get("isolation"), bool(config.get("read_only", False)))
    steps = ctx.steps(config["steps"], "steps")

    async def run(msg: Message) -> None:
        open_ = msg.attributes.setdefault(TRANSACTIONS_KEY, {})
        if name in open_:
            await steps.run(msg)  # nested: the outer transaction holds it
            return
        transaction = await endpoint.begin(options)
        open_[name] = transaction
        try:
            await steps.run(msg)
        except BaseException:
            del open_[name]
            try:
                await transaction.rollback()
            except Exception:  # the error that made us roll back is the one to report
                log.exception("endpoint %r: rolling back failed", name)
            raise
        del open_[name]
        await transaction.commit()

    return run
