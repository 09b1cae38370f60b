"""MQTT 3.1.1 and 5 through aiomqtt: a ``publish`` operation and an ``mqtt`` source.

```yaml
endpoints:
  sensors:
    mqtt: {host: 127.0.0.1, port: 1883, version: 5, client_id: interlace-sensors}
flows:
  readings:
    source: {mqtt: {endpoint: sensors, topic: "plant/+/temperature", qos: 1, dead_letter: plant/dead}}
    steps:
      - call: {endpoint: sensors, operation: publish, topic: "alerts/${vars.topic}", qos: 1, retain: true}
```

The source subscribes with a persistent session (clean session off, a fixed client id): QoS 1
and 2 messages that arrive while the engine is away wait in the broker.  It acknowledges a
message (PUBACK / PUBREC) only after its flow succeeded; a failing flow is tried again under the
flow's redelivery policy, then published to the dead-letter topic (MQTT 5: the error in user
properties; 3.1.1: a JSON envelope with the error and the original payload) and acknowledged.
A lost connection is retried with backoff; what was unacknowledged comes again.  MQTT counts no
deliveries, so the engine writes each attempt down in its store under the message's packet id
before it runs: a message whose flow kills the engine comes again (DUP set) with the attempts it
had, and once they reach ``max_attempts`` it is dead-lettered without running again.

Trace context: with tracing on, a publish over MQTT 5 carries its span's ``traceparent`` and
``tracestate`` as user properties, and the source continues the ones a message carries.  MQTT
3.1.1 has no properties (and the payload is the flow's): its messages carry no trace context.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

from connectors.base import Connector, Invocation, Invoke, Operation, Reply, Request, register_connector
from engine.errors import BackendTimeout, BackendUnreachable, FlowError
from engine.expressions import to_text
from engine.tracing import PRODUCER

if TYPE_CHECKING:
    from engine.compiler import CompileContext
    from engine.message import Message

log = logging.getLogger("interlace.connectors.mqtt")
RECONNECT_MAX = 5.0

PUBLISH_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["topic"],
    "properties": {
        "topic": {"type": "string", "description": "The topic; ${...} allowed."},
        "qos": {"enum": [0, 1, 2], "description": "0 at most once, 1 at least once, 2 exactly once (default 1)."},
        "retain": {"type": "boolean", "description": "The broker keeps it as the topic's last value (default false)."},
    },
}

SOURCE_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["endpoint", "topic"],
    "properties": {
        "endpoint": {"type": "string", "description": "The mqtt endpoint (the broker)."},
        "topic": {"type": "string", "description": "The topic filter (+ and # wildcards)."},
        "qos": {"enum": [0, 1, 2], "description": "The subscription's QoS (default 1)."},
        "concurrency": {"type": "integer", "minimum": 1, "maximum": 1000,
                        "description": "Messages whose flows run at once (default 1: in order)."},
        "dead_letter": {"type": "string", "description": "The topic a message goes to, with its error, when its "
                                                         "attempts are used up (default: none, it is dropped)."},
    },
}


class MqttPublish(Request):
    __slots__ = ("body", "qos", "retain", "topic")
    span_kind = PRODUCER  # its attempt's span: the message sent (MQTT 5: its traceparent in user properties)

    def __init__(self, topic: str, body: bytes, qos: int, retain: bool) -> None:
        super().__init__("publish")
        self.topic = topic
        self.body = body
        self.qos = qos
        self.retain = retain

    def view(self) -> dict[str, Any]:
        return {"operation": "publish", "topic": self.topic, "qos": self.qos, "retain": self.retain,
                "body": self.body.decode("utf-8", errors="replace")}

    async def content(self) -> tuple[bytes, str | None]:
        return self.body, None


@register_connector("mqtt")
class MqttConnector(Connector):
    SUMMARY = "An MQTT broker (3.1.1 or 5): publish with QoS 0/1/2 and retain; subscribe as a flow's source."
    SCHEMA = {
        "type": "object", "additionalProperties": False, "required": ["host"],
        "description": "An MQTT broker through aiomqtt (paho).",
        "properties": {
            "host": {"type": "string", "description": "The broker's host name or address."},
            "port": {"type": ["integer", "string"], "description": "Default 1883 (a string for ${env.X})."},
            "version": {"enum": ["3.1.1", "5", 5], "description": "The protocol version (default 5)."},
            "client_id": {"type": "string", "description": "The client id of the source's session (default "
                                                           "interlace-ENDPOINT); the publisher adds -pub."},
            "username": {"type": "string", "description": "User name, if the broker wants one."},
            "password": {"type": "string", "description": "Password: from ${secret.NAME}, never in the file."},
            "keepalive": {"type": "integer", "minimum": 5, "description": "Seconds (default 30)."},
            "timeout": {"type": ["string", "number"], "description": "Connect and publish timeout (default 10s)."},
        },
    }
    OPERATIONS = {"publish": Operation("Publish the message to a topic (QoS 0, 1 or 2; retain).",
                                       schema=PUBLISH_SCHEMA,
                                       examples=[{"operation": "publish", "topic": "alerts/${vars.topic}",
                                                  "qos": 1}])}
    DEFAULT_OPERATION = "publish"
    MOCK_MATCH = {
        "topic": {"type": "string", "description": "(mqtt) The topic published to; * and ? are wildcards."},
        "qos": {"type": "integer", "description": "(mqtt) The QoS of the publish."},
        "retain": {"type": "boolean", "description": "(mqtt) Whether the message is retained."},
    }
    SOURCES = {"mqtt": Operation("Subscribe to a topic filter: a flow per message, acknowledged after the flow "
                                 "succeeded (persistent session: nothing lost while away).", schema=SOURCE_SCHEMA,
                                 examples=[{"endpoint": "sensors", "topic": "plant/+/temperature", "qos": 1}])}

    def __init__(self, name: str, config: dict[str, Any], context: Any = None) -> None:
        super().__init__(name, config, context)
        from engine.units import parse_duration

        self.host = str(config["host"])
        try:
            self.port = int(config.get("port", 1883))
        except ValueError:
            raise ValueError(f"port must be a number, not {config.get('port')!r}") from None
        self.version = "3.1.1" if str(config.get("version", "5")) == "3.1.1" else "5"
        self.client_id = str(config.get("client_id", f"interlace-{name}"))
        self.username = config.get("username")
        self.password = config.get("password")
        self.keepalive = int(config.get("keepalive", 30))
        self.timeout = parse_duration(config.get("timeout", 10))
        self.targets = (f"mqtt://{self.host}:{self.port}",)
        self._client: Any = None
        self._stack: Any = None
        self._lock = asyncio.Lock()
        self.published = 0

    def _new_client(self, identifier: str, clean: bool) -> Any:
        import aiomqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        v5 = self.version == "5"
        properties = None
        if v5 and not clean:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 7 * 24 * 3600  # the session outlives a restart of the engine
        return aiomqtt.Client(
            self.host, self.port, identifier=identifier, username=self.username, password=self.password,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else clean, clean_start=clean if v5 else 3, keepalive=self.keepalive,
            timeout=self.timeout, properties=properties)

    def needs_server(self) -> bool:
        return True

    def health(self) -> dict[str, Any]:
        return {"publisher_connected": self._client is not None, "published": self.published,
                "version": self.version}

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            try:
                await stack.aclose()
            except Exception:
                log.debug("closing the publisher of %s failed", self.name, exc_info=True)

    def prepare(self, operation: str, config: dict[str, Any], ctx: CompileContext, invoke: Invoke) -> Invocation:
        topic = ctx.template(config["topic"], "topic")
        qos = int(config.get("qos", 1))
        retain = bool(config.get("retain", False))
        ctx.needs_body()

        async def run(msg: Message) -> Reply:
            return await invoke(MqttPublish(to_text(topic.render(msg)), msg.body, qos, retain))

        return run

    async def _publisher(self) -> Any:
        import contextlib

        import aiomqtt

        async with self._lock:
            if self._client is None:
                stack = contextlib.AsyncExitStack()
                client = self._new_client(f"{self.client_id}-pub", clean=True)
                try:
                    await stack.enter_async_context(client)
                except (aiomqtt.MqttError, OSError) as exc:
                    await stack.aclose()
                    raise BackendUnreachable(f"endpoint {self.name!r}: the broker cannot be reached",
                                             internal=str(exc)) from exc
                self._client, self._stack = client, stack
            return self._client

    async def attempt(self, request: Request, target: int) -> Reply:
        assert isinstance(request, MqttPublish)
        import aiomqtt

        client = await self._publisher()
        properties = None
        # the attempt's trace context as MQTT 5 user properties, for the consumer to continue;
        # MQTT 3.1.1 has nowhere to carry it (no properties, and the payload is the flow's)
        carried = request.observation.propagate([]) if request.observation is not None else []
        if carried and self.version == "5":
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.UserProperty = carried
        try:
            await asyncio.wait_for(client.publish(request.topic, request.body, qos=request.qos,
                                                  retain=request.retain, properties=properties), self.timeout)
        except TimeoutError as exc:
            await self.close()
            raise BackendTimeout(f"endpoint {self.name!r}: the broker did not acknowledge in time") from exc
        except (aiomqtt.MqttError, OSError) as exc:
            await self.close()
            raise BackendUnreachable(f"endpoint {self.name!r}: publishing failed", internal=str(exc)) from exc
        self.published += 1
        return Reply(status=None, headers=None, body=None, meta={"topic": request.topic})

    def mock_reply(self, request: Request, answer: Any, body: bytes | None, content_type: str | None) -> Reply:
        """A mocked publish is acknowledged as the broker would: the message is kept."""
        assert isinstance(request, MqttPublish)
        return Reply(status=None, headers=None, body=None, meta={"topic": request.topic, **(answer.get("meta") or {})})

    # --- the source ----------------------------------------------------------------------

    async def listen(self, source: str, config: dict[str, Any], deliver: Any) -> None:
        import aiomqtt

        topic = str(config["topic"])
        qos = int(config.get("qos", 1))
        concurrency = int(config.get("concurrency", 1))
        dead_topic = config.get("dead_letter")
        pause = 0.2
        while True:
            client = self._new_client(self.client_id, clean=False)
            # aiomqtt 2.5 has no manual acknowledgement of its own: paho's (under it) is switched on, so
            # that a QoS 1/2 message is acknowledged only once its flow has succeeded
            client._client.manual_ack_set(True)
            redelivered = _note_duplicates(client)
            try:
                async with client:
                    await client.subscribe(topic, qos=qos)
                    _report(deliver, "running", None)
                    pause = 0.2
                    slots = asyncio.Semaphore(concurrency)
                    tasks: set[asyncio.Task[None]] = set()
                    try:
                        async for incoming in client.messages:
                            admit = getattr(deliver, "admit", None)
                            if admit is not None:
                                await admit()
                            await slots.acquire()
                            task = asyncio.create_task(self._handle(client, incoming, deliver, dead_topic,
                                                                    redelivered.pop(incoming.mid, False)))
                            tasks.add(task)
                            task.add_done_callback(_settled(tasks, slots))
                    finally:
                        if tasks:
                            await asyncio.gather(*tasks, return_exceptions=True)
            except asyncio.CancelledError:
                raise
            except (aiomqtt.MqttError, OSError) as exc:
                _report(deliver, "failing", f"broker unreachable: {exc}")
                log.warning("mqtt source %s: %s; reconnecting in %.1fs", topic, exc, pause)
                await asyncio.sleep(pause)
                pause = min(RECONNECT_MAX, pause * 2)

    async def _handle(self, client: Any, incoming: Any, deliver: Any, dead_topic: str | None,
                      redelivered: bool = False) -> None:
        from engine.message import Message

        body = bytes(incoming.payload) if isinstance(incoming.payload, (bytes, bytearray)) else \
            str(incoming.payload).encode()
        headers: dict[str, str] = {}
        content_type = None
        props = getattr(incoming, "properties", None)
        if props is not None:
            for key, value in getattr(props, "UserProperty", None) or []:
                headers[str(key).lower()] = str(value)
            content_type = getattr(props, "ContentType", None)
        msg = Message(body=body, content_type=content_type, headers=headers, method="MQTT")
        msg.vars.update({"topic": str(incoming.topic), "qos": incoming.qos, "retain": bool(incoming.retain)})
        # QoS 1/2: the broker sends an unacknowledged message again, with the same packet id and the
        # DUP flag, after the engine died in its flow; it counts nothing itself, so each attempt is
        # written down in the store under the packet id (the topic and a digest of the payload tell
        # the same message from a later one that reuses the id)
        identity = None
        if incoming.qos > 0:
            identity = (str(incoming.mid), hashlib.sha1(str(incoming.topic).encode() + b"\0" + body,
                                                        usedforsecurity=False).hexdigest())
        msg.vars["redelivered"] = redelivered
        try:
            try:
                await deliver(msg, identity=identity, redelivered=redelivered)
            except FlowError as exc:
                error = getattr(exc, "error", None) or exc.as_dict()
                if getattr(exc, "outcome", None) != "dead" and dead_topic:
                    await self._dead_letter(client, dead_topic, incoming, body, error)
            if incoming.qos > 0:
                client._client.ack(incoming.mid, incoming.qos)
        except Exception as exc:  # the connection is gone: the broker delivers it again
            log.warning("mqtt source: could not settle a message on %s (%s); it will come again", incoming.topic, exc)

    async def _dead_letter(self, client: Any, topic: str, incoming: Any, body: bytes, error: dict[str, Any]) -> None:
        fields = {"error": str(error.get("message", "")), "code": str(error.get("code", "")),
                  "attempts": str(error.get("attempts", 1)), "topic": str(incoming.topic)}
        if self.version == "5":
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.UserProperty = [(f"x-interlace-{k}", v) for k, v in fields.items()]
            await client.publish(topic, body, qos=1, properties=properties)
        else:
            try:
                original: Any = json.loads(body)
            except ValueError:
                original = {"base64": base64.b64encode(body).decode()}
            await client.publish(topic, json.dumps({**fields, "payload": original}).encode(), qos=1)
        log.warning("mqtt source: message on %s dead-lettered to %s: %s", incoming.topic, topic, fields["error"])


def _note_duplicates(client: Any) -> dict[int, bool]:
    """The DUP flag of each QoS 1/2 message, by packet id, as paho (under aiomqtt) reads it: aiomqtt's
    messages do not carry it."""
    flags: dict[int, bool] = {}
    paho = client._client
    hand_on = paho.on_message

    def on_message(paho_client: Any, userdata: Any, message: Any) -> None:
        if message.qos:
            flags[message.mid] = bool(message.dup)
        hand_on(paho_client, userdata, message)

    paho.on_message = on_message
    return flags


def _settled(tasks: set[asyncio.Task[None]], slots: asyncio.Semaphore) -> Any:
    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        slots.release()
    return done


def _report(deliver: Any, state: str, why: str | None) -> None:
    report = getattr(deliver, "report", None)
    if report is not None:
        report(state, why)
