"""Sources that connector kinds declare (``SOURCES`` on the class: amqp, mqtt, ftp, sftp...).

``source: {amqp: {endpoint: broker, queue: orders}}`` names an endpoint whose kind declares the
source ``amqp``; at run time the runtime calls the connector's ``listen(source, config, deliver)``
with a ``Deliverer``: calling it runs the flow on the message under the flow's redelivery policy
(engine/sources/base.py), returning when the flow succeeded and raising ``Undelivered`` when it
did not; its ``outcome`` says whether the policy's dead-letter target has the message already
(``dead``: acknowledge it) or the source must dispose of it (``refused``: its own dead-letter
queue, a failed folder, a reject).  ``report`` and ``admit`` let a listener show its state and
honour a pause.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from engine.errors import FlowError
from engine.message import Message
from engine.sources.base import Outcome, Source, SourceContext

if TYPE_CHECKING:
    from engine.compiler import CompileContext

log = logging.getLogger("interlace.sources")


class Undelivered(FlowError):
    """The flow did not succeed with this message, after the policy's attempts."""

    code = "undelivered"
    title = "Message not delivered"

    def __init__(self, outcome: str, error: dict[str, Any]) -> None:
        super().__init__(str(error.get("message", "the flow failed")), status=int(error.get("status") or 500),
                         code=str(error.get("code") or "undelivered"))
        self.outcome = outcome
        self.error = error


class Deliverer:
    """What a connector's ``listen`` calls for each arrival."""

    def __init__(self, ctx: SourceContext, origin: str) -> None:
        self.ctx = ctx
        self.origin = origin
        self.flow_name = ctx.name

    async def __call__(self, msg: Message, *, attempts_before: int = 0, identity: tuple[str, str] | None = None,
                       redelivered: bool = False) -> None:
        """``attempts_before``: what the broker says earlier deliveries used (x-delivery-count).

        ``identity`` (key, fingerprint): for a broker that counts nothing (MQTT), what names this
        message when it comes again (its packet id) and tells it from a later message that reuses
        the key; each attempt is then written down in the store before it runs, and a message
        ``redelivered`` (the DUP flag) starts from the attempts recorded for it."""
        body = await msg.load_body() if msg.is_streaming else msg.body
        template = msg
        record = None
        if identity is not None:
            key, fingerprint = identity
            where = f"{self.origin}:{self.flow_name}"
            if redelivered and not attempts_before:
                attempts_before = await _attempts_made(where, key, fingerprint)
            record = _recorder(where, key, fingerprint)

        def make(attempt: int) -> Message:
            copy = Message(body=body, content_type=template.content_type, headers=dict(template.headers),
                           correlation_id=template.correlation_id, method=template.method)
            copy.payload_is_request = True  # the producer's data (Source.brings_data): a wrong shape is its fault
            copy.vars.update(template.vars)
            copy.vars["attempt"] = attempt
            return copy

        outcome, error = await self.ctx.deliver(make, attempts_before=attempts_before, origin=self.origin,
                                                record=record)
        if outcome != Outcome.DONE:
            raise Undelivered(outcome, error or {"message": "the flow failed"})

    def report(self, state: str, why: str | None) -> None:
        if state == "running":
            self.ctx.running()
        else:
            self.ctx.failing(why or state)

    async def admit(self) -> None:
        await self.ctx.admit()


async def _attempts_made(where: str, key: str, fingerprint: str) -> int:
    from engine.store import StoreError, current_store

    try:
        return await current_store().attempts_made(where, key, fingerprint)
    except StoreError as exc:
        log.warning("%s: the earlier attempts of message %s cannot be read (%s); counting from 0", where, key, exc)
        return 0


def _recorder(where: str, key: str, fingerprint: str) -> Callable[[int], Awaitable[None]]:
    from engine.store import StoreError, current_store

    async def record(attempt: int) -> None:
        try:
            await current_store().record_attempt(where, key, attempt, fingerprint)
        except StoreError as exc:  # the flow runs all the same; only a crash in it would go uncounted
            log.warning("%s: attempt %d of message %s not recorded in the store (%s)", where, attempt, key, exc)

    return record


class ConnectorSource(Source):
    # the polled folders claim their files in the store; queues use it for dead letters kept there
    needs_store = True

    def __init__(self, kind: str, endpoint: Any, config: dict[str, Any]) -> None:
        self.kind = kind
        self.endpoint = endpoint
        self.config = config

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in self.config.items() if k not in ("password",)}

    async def run(self, ctx: SourceContext) -> None:
        deliverer = Deliverer(ctx, f"{self.kind}:{self.endpoint.name}")
        await self.endpoint.connector.listen(self.kind, self.config, deliverer)


def connector_sources() -> dict[str, tuple[str, Any]]:
    """Source name -> (connector kind, its Operation), from every connector kind's SOURCES."""
    from connectors.base import connector_kinds

    found: dict[str, tuple[str, Any]] = {}
    for kind, cls in connector_kinds().items():
        for name, operation in getattr(cls, "SOURCES", {}).items():
            found.setdefault(name, (kind, operation))
    return found


def _static(ctx: CompileContext, value: Any, key: tuple[Any, ...]) -> Any:
    """Source settings may read ``${env.X || 'default'}``: rendered once, here, at load."""
    from engine.sources.files_common import static_text

    if isinstance(value, dict):
        return {k: _static(ctx, v, (*key, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_static(ctx, v, (*key, i)) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        return static_text(ctx, value, key)
    return value


def build_connector_source(name: str, config: dict[str, Any], ctx: CompileContext) -> Source:
    from engine.compiler import StepConfigError

    kind, _ = connector_sources()[name]
    config = _static(ctx, config, ())
    endpoint = ctx.endpoint(config.get("endpoint"), "endpoint")
    connector = getattr(endpoint, "connector", None)
    if connector is None:
        return ConnectorSource(name, endpoint, config)  # broken endpoint: its own error is reported
    declared = getattr(type(connector), "SOURCES", {})
    if name not in declared:
        raise StepConfigError(f"endpoint {config.get('endpoint')!r} is not a {kind} endpoint: it has no {name!r} "
                              f"source", "endpoint")
    return ConnectorSource(name, endpoint, config)
