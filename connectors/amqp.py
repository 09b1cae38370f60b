"""AMQP 0-9-1 (RabbitMQ) through aio-pika: a ``publish`` operation and an ``amqp`` source.

```yaml
endpoints:
  broker:
    amqp:
      url: "${secret.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/'}"
      exchanges: {shipping: {type: topic}}      # declared (durable) before the first publish to it
flows:
  orders-in:
    source:
      amqp: {endpoint: broker, queue: orders, queue_type: quorum, prefetch: 20, concurrency: 4,
             dead_letter: {routing_key: orders.dead}}
    on_error: {redelivery: {max_attempts: 5, backoff: {initial: 200ms, max: 5s}, dead_letter: {source: true}}}
    steps:
      - call: {endpoint: broker, operation: publish, exchange: shipping, routing_key: "order.${payload.country}"}
```

The consumer acknowledges a message only after its flow succeeded; the messages that end in one
turn of the event loop are acknowledged together (one ``multiple`` ack for those with every
earlier delivery settled, single acks behind one still running).  A failing flow is tried
again in process under the flow's redelivery policy while the message stays unacknowledged (if
the engine dies, the broker delivers it again).  The broker's count of earlier deliveries counts
as attempts: ``x-delivery-count`` on a quorum queue (``queue_type: quorum``), else one when the
redelivered flag is set (a classic queue tells no more); a message whose attempts are used up
that way goes to the dead letter without running again, so a message that kills the engine
cannot do it forever.  Once the attempts are used up it is published to
the dead-letter queue with the error in its headers (``x-interlace-error``, ``-code``, ``-status``,
``-attempts``, ``-flow``, ``-queue``), confirmed, and only then acknowledged; without a
dead-letter queue it is rejected without requeue (the queue's own x-dead-letter-exchange, if any,
takes it).  A lost connection (broker down at start, restarted) is retried with backoff for as
long as it takes; what was unacknowledged comes again.  Publishing waits for the broker's
confirm, so a step after it knows the message is the broker's.  An exchange the endpoint lists
under ``exchanges`` is declared (durable, of its type) before the first publish to it on each
channel; any other named exchange must exist: publishing to a missing one is backend-rejected,
saying so.  With tracing on, a published message carries its span's ``traceparent`` and
``tracestate`` in its headers, and the consumer continues the ones a message carries.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from connectors.base import Connector, Invocation, Invoke, Operation, Reply, Request, register_connector
from engine.errors import BackendRejected, BackendTimeout, BackendUnreachable, FlowError
from engine.expressions import to_text
from engine.message import Message
from engine.tracing import PRODUCER

if TYPE_CHECKING:
    from types import ModuleType

    from engine.compiler import CompileContext

log = logging.getLogger("interlace.connectors.amqp")

RECONNECT_MAX = 5.0

PUBLISH_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "exchange": {"type": "string", "description": "The exchange ('' = the default exchange, routing by queue "
                                                      "name); ${...} allowed."},
        "routing_key": {"type": "string", "description": "The routing key (with the default exchange: the queue); "
                                                         "${...} allowed."},
        "persistent": {"type": "boolean", "description": "Delivery mode 2: the broker writes it to disk (default "
                                                         "true)."},
        "headers": {"type": "object", "description": "AMQP headers: name: value template."},
        "content_type": {"type": "string", "description": "Content type (default: the message's)."},
        "message_id": {"type": "string", "description": "The AMQP message id (default: the message's correlation "
                                                        "id); ${...} allowed."},
        "priority": {"type": "integer", "minimum": 0, "maximum": 255, "description": "Message priority."},
        "expiration": {"type": ["string", "number"], "description": "Per-message TTL, e.g. 60s."},
        "mandatory": {"type": "boolean", "description": "Fail (backend-rejected) when no queue is bound for the "
                                                        "routing key (default false)."},
    },
}

SOURCE_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["endpoint", "queue"],
    "properties": {
        "endpoint": {"type": "string", "description": "The amqp endpoint (the broker) to consume from."},
        "queue": {"type": "string", "description": "The queue to consume."},
        "declare": {"type": "boolean", "description": "Declare the queue (durable) if it does not exist "
                                                      "(default true)."},
        "queue_type": {"enum": ["classic", "quorum"],
                       "description": "The type the queue is declared with (default classic). A quorum queue counts "
                                      "deliveries (x-delivery-count): attempts survive an engine crash exactly."},
        "prefetch": {"type": "integer", "minimum": 1, "maximum": 65535,
                     "description": "Unacknowledged messages the broker hands this consumer at once (default 10)."},
        "concurrency": {"type": "integer", "minimum": 1, "maximum": 1000,
                        "description": "Messages whose flows run at once (default 1: in queue order)."},
        "dead_letter": {
            "type": "object", "additionalProperties": False,
            "description": "Where a message goes when its attempts are used up (with on_error.redelivery."
                           "dead_letter: {source: true}, or without a redelivery dead letter): published with the "
                           "error in its headers.",
            "properties": {"exchange": {"type": "string", "description": "Default '' (the default exchange)."},
                           "routing_key": {"type": "string", "description": "Default QUEUE.dead."},
                           "declare": {"type": "boolean", "description": "Declare the queue QUEUE.dead (or the "
                                                                        "routing key's) when the exchange is '' "
                                                                        "(default true)."}},
        },
    },
}


class PublishRequest(Request):
    __slots__ = ("body", "content_type", "exchange", "headers", "message_id", "routing_key", "settings")
    span_kind = PRODUCER  # its attempt's span: the message sent (its traceparent goes in the headers)

    def __init__(self, exchange: str, routing_key: str, body: bytes, content_type: str | None,
                 headers: dict[str, str], message_id: str | None, settings: dict[str, Any]) -> None:
        super().__init__("publish")
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self.content_type = content_type
        self.headers = headers
        self.message_id = message_id
        self.settings = settings

    def view(self) -> dict[str, Any]:
        return {"operation": "publish", "exchange": self.exchange, "routing_key": self.routing_key,
                "headers": self.headers, "body": self.body.decode("utf-8", errors="replace")}

    async def content(self) -> tuple[bytes, str | None]:
        return self.body, self.content_type


def _unreachable(name: str, exc: BaseException) -> BackendUnreachable:
    return BackendUnreachable(f"endpoint {name!r}: the broker cannot be reached",
                              internal=f"{exc.__class__.__name__}: {exc}")


@register_connector("amqp")
class AmqpConnector(Connector):
    SUMMARY = "An AMQP 0-9-1 broker (RabbitMQ): publish with confirms; consume a queue as a flow's source."
    SCHEMA = {
        "type": "object", "additionalProperties": False, "required": ["url"],
        "description": "An AMQP 0-9-1 broker (RabbitMQ) through aio-pika.",
        "properties": {
            "url": {"type": "string", "description": "amqp://user:password@host:port/vhost (amqps:// for TLS); "
                                                     "keep the password in ${secret.NAME}."},
            "heartbeat": {"type": "integer", "minimum": 0, "description": "Heartbeat seconds (default 60)."},
            "confirm_timeout": {"type": ["string", "number"],
                                "description": "How long a publish waits for the broker's confirm (default 10s)."},
            "exchanges": {
                "type": "object",
                "description": "Exchanges this endpoint declares before it first publishes to them: name: "
                               "{type, durable, auto_delete}. An exchange not listed must exist already.",
                "additionalProperties": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "type": {"enum": ["direct", "fanout", "topic", "headers"],
                                 "description": "Exchange type (default direct)."},
                        "durable": {"type": "boolean", "description": "Survives a broker restart (default true)."},
                        "auto_delete": {"type": "boolean",
                                        "description": "Deleted once its last queue is unbound (default false)."},
                    },
                },
            },
        },
    }
    OPERATIONS = {"publish": Operation("Publish the message (or a templated body) to an exchange with a routing "
                                       "key; waits for the broker's confirm.", schema=PUBLISH_SCHEMA,
                                       examples=[{"operation": "publish", "exchange": "orders",
                                                  "routing_key": "order.${payload.country}"}])}
    DEFAULT_OPERATION = "publish"
    MOCK_MATCH = {
        "exchange": {"type": "string", "description": "(amqp) The exchange published to ('' the default one)."},
        "routing_key": {"type": "string", "description": "(amqp) The routing key; * and ? are wildcards."},
    }
    SOURCES = {"amqp": Operation("Consume a queue: a flow per message, acknowledged after the flow succeeded; "
                                 "redelivered under the flow's policy, then dead-lettered with the error.",
                                 schema=SOURCE_SCHEMA,
                                 examples=[{"endpoint": "broker", "queue": "orders", "prefetch": 20,
                                            "concurrency": 4}])}

    def __init__(self, name: str, config: dict[str, Any], context: Any = None) -> None:
        super().__init__(name, config, context)
        from yarl import URL

        from engine.units import parse_duration

        url = URL(str(config["url"]))
        if url.scheme not in ("amqp", "amqps"):
            raise ValueError(f"url must start with amqp:// or amqps://, not {url.scheme}://")
        self.url = str(url.update_query(heartbeat=int(config.get("heartbeat", 60))))
        self.targets = (str(url.with_password(None).with_user(None)),)
        self.confirm_timeout = parse_duration(config.get("confirm_timeout", 10))
        self.exchanges: dict[str, dict[str, Any]] = {
            str(name): {"type": str(spec.get("type", "direct")), "durable": bool(spec.get("durable", True)),
                        "auto_delete": bool(spec.get("auto_delete", False))}
            for name, spec in (config.get("exchanges") or {}).items()}
        # (channel, exchange name) -> the declared exchange: declared once per channel
        self._declared: dict[tuple[int, str], Any] = {}
        self._connection: Any = None
        self._channel: Any = None
        self._lock = asyncio.Lock()
        self.published = 0

    def needs_server(self) -> bool:
        return True

    def health(self) -> dict[str, Any]:
        connected = self._connection is not None and not self._connection.is_closed
        return {"publisher_connected": connected, "published": self.published}

    async def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except Exception:
                log.debug("closing the publisher connection of %s failed", self.name, exc_info=True)

    # --- publishing ----------------------------------------------------------------------

    def prepare(self, operation: str, config: dict[str, Any], ctx: CompileContext, invoke: Invoke) -> Invocation:
        exchange = ctx.template(config.get("exchange", ""), "exchange")
        routing_key = ctx.template(config.get("routing_key", ""), "routing_key")
        headers = [(str(k), ctx.template(v, ("headers", k))) for k, v in (config.get("headers") or {}).items()]
        message_id = ctx.template(config["message_id"], "message_id") if "message_id" in config else None
        settings = {"persistent": bool(config.get("persistent", True)), "priority": config.get("priority"),
                    "mandatory": bool(config.get("mandatory", False)), "content_type": config.get("content_type")}
        if "expiration" in config:
            from engine.units import parse_duration

            settings["expiration"] = parse_duration(config["expiration"])
        ctx.needs_body()

        async def run(msg: Message) -> Reply:
            request = PublishRequest(
                to_text(exchange.render(msg)), to_text(routing_key.render(msg)), msg.body,
                str(settings["content_type"] or msg.content_type or "") or None,
                {k: to_text(t.render(msg)) for k, t in headers},
                to_text(message_id.render(msg)) if message_id is not None else (msg.correlation_id or None),
                settings)
            return await invoke(request)

        return run

    async def _publisher(self) -> Any:
        channel = self._channel
        if channel is not None and not channel.is_closed and not self._connection.is_closed:
            return channel  # the usual case: no lock to take
        import aio_pika

        async with self._lock:
            if self._channel is None or self._channel.is_closed or self._connection.is_closed:
                await self.close()
                try:
                    self._connection = await aio_pika.connect(self.url, timeout=5)
                    self._channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
                except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
                    self._connection = self._channel = None
                    raise _unreachable(self.name, exc) from exc
            return self._channel

    async def attempt(self, request: Request, target: int) -> Reply:
        assert isinstance(request, PublishRequest)
        pika = _pika()
        channel = await self._publisher()
        settings = request.settings
        headers: dict[str, str] = request.headers
        if request.observation is not None:  # the attempt's trace context, for the consumer to continue
            headers = dict(request.observation.propagate(list(headers.items())))
        message = pika.Message(
            request.body, content_type=request.content_type, headers=dict(headers) or None,
            message_id=request.message_id, priority=settings.get("priority"),
            expiration=settings.get("expiration"),
            delivery_mode=(pika.DeliveryMode.PERSISTENT if settings["persistent"]
                           else pika.DeliveryMode.NOT_PERSISTENT))
        try:
            exchange = await self._exchange(channel, request.exchange)
            # aiormq's own timeout (a deadline in this task), not wait_for: that one runs the
            # publish in a task of its own, which cost more than the rest of the publish
            await exchange.publish(message, routing_key=request.routing_key, mandatory=settings["mandatory"],
                                   timeout=self.confirm_timeout)
        except TimeoutError as exc:
            raise BackendTimeout(f"endpoint {self.name!r}: the broker did not confirm the message in time") from exc
        except (pika.exceptions.DeliveryError, pika.exceptions.PublishError) as exc:
            raise BackendRejected(f"endpoint {self.name!r}: the broker did not take the message "
                                  f"(exchange {request.exchange!r}, routing key {request.routing_key!r})",
                                  internal=str(exc)) from exc
        except pika.exceptions.ChannelNotFoundEntity as exc:
            await self.close()  # the broker closed the channel
            raise BackendRejected(f"endpoint {self.name!r}: the exchange {request.exchange!r} does not exist; "
                                  f"list it under the endpoint's exchanges to have it declared",
                                  internal=str(exc)) from exc
        except (OSError, pika.exceptions.AMQPError) as exc:
            await self.close()
            raise _unreachable(self.name, exc) from exc
        self.published += 1
        return Reply(status=None, headers=None, body=None,
                     meta={"exchange": request.exchange, "routing_key": request.routing_key})

    async def _exchange(self, channel: Any, name: str) -> Any:
        """The exchange to publish to: the default one, one this endpoint declares, or one that exists."""
        if not name:
            return channel.default_exchange
        spec = self.exchanges.get(name)
        if spec is None:
            return await channel.get_exchange(name, ensure=False)
        key = (id(channel), name)
        declared = self._declared.get(key)
        if declared is None:
            if len(self._declared) > 1000:  # channels come and go with reconnects
                self._declared.clear()
            declared = await channel.declare_exchange(name, spec["type"], durable=spec["durable"],
                                                      auto_delete=spec["auto_delete"])
            self._declared[key] = declared
        return declared

    def mock_reply(self, request: Request, answer: Any, body: bytes | None, content_type: str | None) -> Reply:
        """A mocked publish is confirmed as the broker would: the message is kept."""
        assert isinstance(request, PublishRequest)
        return Reply(status=None, headers=None, body=None,
                     meta={"exchange": request.exchange, "routing_key": request.routing_key,
                           **(answer.get("meta") or {})})

    # --- consuming -----------------------------------------------------------------------

    async def listen(self, source: str, config: dict[str, Any], deliver: Any) -> None:
        import aio_pika

        queue_name = str(config["queue"])
        prefetch = int(config.get("prefetch", 10))
        concurrency = int(config.get("concurrency", 1))
        dead = config.get("dead_letter") or {}
        dead_exchange = str(dead.get("exchange", ""))
        dead_key = str(dead.get("routing_key", f"{queue_name}.dead"))
        pause = 0.2
        while True:
            try:
                connection = await aio_pika.connect(self.url, timeout=5)
            except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
                _report(deliver, "failing", f"broker unreachable: {exc.__class__.__name__}")
                log.warning("amqp source %s: cannot connect (%s); again in %.1fs", queue_name, exc, pause)
                await asyncio.sleep(pause)
                pause = min(RECONNECT_MAX, pause * 2)
                continue
            try:
                async with connection:
                    channel = await connection.channel(publisher_confirms=True)
                    await channel.set_qos(prefetch_count=prefetch)
                    if config.get("declare", True):
                        arguments: Any = {"x-queue-type": "quorum"} if config.get("queue_type") == "quorum" else None
                        queue = await channel.declare_queue(queue_name, durable=True, arguments=arguments)
                    else:
                        queue = await channel.get_queue(queue_name, ensure=True)
                    if dead.get("declare", True) and not dead_exchange:
                        await channel.declare_queue(dead_key, durable=True)
                    _report(deliver, "running", None)
                    pause = 0.2
                    await self._consume(queue, channel, deliver, concurrency, dead_exchange, dead_key, queue_name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection or channel went away: reconnect
                _report(deliver, "failing", f"connection lost: {exc.__class__.__name__}")
                log.warning("amqp source %s: %s: %s; reconnecting", queue_name, exc.__class__.__name__, exc)
                await asyncio.sleep(pause)
                pause = min(RECONNECT_MAX, pause * 2)

    async def _consume(self, queue: Any, channel: Any, deliver: Any, concurrency: int, dead_exchange: str,
                       dead_key: str, queue_name: str) -> None:
        """Consume until the channel closes (then the caller reconnects) or the source is cancelled
        (then the flows already running finish before the connection closes).

        Each delivery runs in the task aio-pika starts for its callback, as a hand-written consumer
        would: a queue iterator feeding tasks of our own cost one more task and queue hand-over per
        message.  A pause holds deliveries at ``admit`` (the broker sends no more than the prefetch);
        ``concurrency`` slots let that many flows run at once, in delivery order."""
        slots = asyncio.Semaphore(concurrency)
        admit = getattr(deliver, "admit", None)
        running: set[asyncio.Future[Any]] = set()
        stopping = False
        acks = _Acks(channel, queue_name)

        async def on_message(incoming: Any) -> None:
            acks.delivered(incoming.delivery_tag)
            if admit is not None:
                await admit()
            async with slots:
                if stopping:  # the source is stopping: left unacknowledged, the broker sends it again
                    return
                task = asyncio.current_task()
                assert task is not None
                running.add(task)
                try:
                    await self._handle(incoming, channel, deliver, dead_exchange, dead_key, queue_name, acks)
                finally:
                    running.discard(task)

        tag = await queue.consume(on_message)
        try:
            await channel.closed()
            raise ConnectionError("the channel closed")
        finally:
            stopping = True
            if running:
                await asyncio.wait(set(running))
            await acks.flushed()
            if not channel.is_closed:
                with contextlib.suppress(Exception):
                    await queue.cancel(tag)

    async def _handle(self, incoming: Any, channel: Any, deliver: Any, dead_exchange: str, dead_key: str,
                      queue_name: str, acks: _Acks) -> None:
        msg = Message(body=incoming.body, content_type=incoming.content_type,
                      headers={str(k).lower(): _header_text(v) for k, v in (incoming.headers or {}).items()},
                      correlation_id=incoming.correlation_id or incoming.message_id or "", method="AMQP")
        msg.vars.update({"queue": queue_name, "routing_key": incoming.routing_key, "exchange": incoming.exchange,
                         "message_id": incoming.message_id, "redelivered": bool(incoming.redelivered)})
        try:
            try:
                await deliver(msg, attempts_before=_earlier_attempts(incoming))
            except FlowError as exc:
                error = getattr(exc, "error", None) or exc.as_dict()
                if getattr(exc, "outcome", None) == "dead":
                    acks.ack(incoming.delivery_tag)  # the policy's dead-letter target has it
                    return
                headers = {**(incoming.headers or {}),
                           "x-interlace-error": str(error.get("message", ""))[:1000],
                           "x-interlace-error-code": str(error.get("code", "")),
                           "x-interlace-error-status": int(error.get("status") or 0),
                           "x-interlace-attempts": int(error.get("attempts") or 1),
                           "x-interlace-flow": str(getattr(deliver, "flow_name", "")),
                           "x-interlace-queue": queue_name}
                pika = _pika()
                dead = pika.Message(incoming.body, headers=headers, content_type=incoming.content_type,
                                        message_id=incoming.message_id, correlation_id=incoming.correlation_id,
                                        delivery_mode=pika.DeliveryMode.PERSISTENT)
                exchange = await self._exchange(channel, dead_exchange)
                await exchange.publish(dead, routing_key=dead_key)  # confirmed before the ack below
                acks.ack(incoming.delivery_tag)
                log.warning("amqp source %s: message %s dead-lettered to %s: %s", queue_name, incoming.message_id,
                            dead_key, error.get("message"))
                return
            acks.ack(incoming.delivery_tag)
        except Exception as exc:  # the channel is gone: the broker delivers it again
            log.warning("amqp source %s: could not settle a message (%s); it will come again", queue_name, exc)


class _Acks:
    """The acknowledgements of one consumer channel, written once per turn of the event loop.

    A message is acknowledged only once its flow ended, as before (at-least-once); but instead
    of one basic.ack per message, each written and drained by the message's own task, the
    messages that ended in one turn are acknowledged together: those at the head of the delivery
    order (every earlier delivery settled) in ONE ``basic.ack`` with ``multiple``, any that ended
    behind a message still running each on its own.  Fewer frames for the broker to read, and
    the flow's task ends without waiting for the socket: the floor's gap was this waiting.
    ``multiple`` covers every unacknowledged delivery up to its tag, so it is sent only for a
    prefix of the tags known to be settled, never past one still running or held by a pause."""

    def __init__(self, channel: Any, queue_name: str) -> None:
        self.channel = channel
        self.queue_name = queue_name
        self.outstanding: list[int] = []  # delivery tags not acknowledged yet, ascending
        self.settled: set[int] = set()  # of those, the ones whose flow ended: to acknowledge
        self.scheduled = False
        self.sending: set[asyncio.Task[None]] = set()

    def delivered(self, tag: int) -> None:
        if not self.outstanding or tag > self.outstanding[-1]:
            self.outstanding.append(tag)  # the usual case: deliveries come in tag order
        else:
            bisect.insort(self.outstanding, tag)

    def ack(self, tag: int) -> None:
        self.settled.add(tag)
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self.scheduled = False
        outstanding, settled = self.outstanding, self.settled
        head = 0
        while head < len(outstanding) and outstanding[head] in settled:
            head += 1
        upto = outstanding[head - 1] if head else None
        rest = outstanding[head:]
        singles = [tag for tag in rest if tag in settled]  # ended behind one still running
        self.outstanding = [tag for tag in rest if tag not in settled] if singles else rest
        settled.clear()
        task = asyncio.get_running_loop().create_task(self._send(upto, singles))
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def _send(self, upto: int | None, singles: list[int]) -> None:
        try:
            channel = self.channel.channel  # aiormq's: the ack needs no answer, nor a wait for the socket
            if upto is not None:
                await channel.basic_ack(upto, multiple=True, wait=False)
            for tag in singles:
                await channel.basic_ack(tag, wait=False)
        except Exception as exc:  # the channel is gone: the broker delivers them again
            log.warning("amqp source %s: could not acknowledge %d message(s) (%s); they will come again",
                        self.queue_name, len(singles) + (upto is not None), exc)

    async def flushed(self) -> None:
        """Until what was settled is written (the consume is ending)."""
        if self.scheduled:
            await asyncio.sleep(0)
        if self.sending:
            await asyncio.wait(set(self.sending))


_aio_pika: ModuleType | None = None


def _pika() -> ModuleType:
    """aio-pika (with its exceptions), imported when the first amqp endpoint works, then kept:
    an import statement in the per-message path cost a few µs a message."""
    global _aio_pika
    if _aio_pika is None:
        import aio_pika
        import aio_pika.exceptions

        _aio_pika = aio_pika
    return _aio_pika


def _earlier_attempts(incoming: Any) -> int:
    """The deliveries before this one that ended without an ack (the engine stopped mid-flow):
    a quorum queue counts them in x-delivery-count; a classic queue only sets redelivered."""
    count = (incoming.headers or {}).get("x-delivery-count")
    if isinstance(count, int) and not isinstance(count, bool) and count > 0:
        return count
    return 1 if incoming.redelivered else 0


def _header_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _report(deliver: Any, state: str, why: str | None) -> None:
    """Tell the runtime how the source is doing, when it listens (engine/sources/connector_source.py)."""
    report = getattr(deliver, "report", None)
    if report is not None:
        report(state, why)
