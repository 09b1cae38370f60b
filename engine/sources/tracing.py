"""The CONSUMER span of a message or run that a source hands to a flow (engine/sources/base.py
``SourceContext.run_once``): one per attempt, the parent of its steps' spans.

It continues the ``traceparent``/``tracestate`` the message carries (an AMQP header, an MQTT 5
user property, a stored message's headers), so a message published by a traced producer joins
the producer's trace; without one it starts a trace.  Its name and attributes follow
OpenTelemetry's messaging conventions for the queues (``process orders``,
``messaging.system``, ``messaging.destination.name``, ``messaging.operation.type``), and name
the flow and the source kind for every source (``schedule heartbeat``, ``file orders-inbox``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine import tracing
from engine.message import Message

if TYPE_CHECKING:
    from engine.sources.base import SourceContext

# source kind -> (messaging.system, the message variable naming its destination)
MESSAGING = {"amqp": ("rabbitmq", "queue"), "mqtt": ("mqtt", "topic"), "store": ("interlace", "queue")}
# (flow, kind) -> the attributes every span of that source shares (made once: engine/tracing.py)
_SHARED: dict[tuple[str, str], dict[str, Any]] = {}


def _shared(flow: str, kind: str) -> dict[str, Any]:
    found = _SHARED.get((flow, kind))
    if found is None:
        found = {"interlace.flow": flow, "interlace.source": kind}
        if kind in MESSAGING:
            found.update({"messaging.system": MESSAGING[kind][0], "messaging.operation.type": "process",
                          "messaging.operation.name": "process"})
        if len(_SHARED) > 10_000:  # flows reloaded many times over: start again
            _SHARED.clear()
        _SHARED[(flow, kind)] = found
    return found


def source_span(ctx: SourceContext, msg: Message) -> tracing.Span:
    """The span of one run of ``ctx``'s flow on ``msg`` (not yet current)."""
    kind = ctx.source.kind
    own: dict[str, Any] = {}
    variables = msg.vars
    if "attempt" in variables:
        own["interlace.attempt"] = variables["attempt"]
    messaging = MESSAGING.get(kind)
    name = f"{kind} {ctx.name}"
    if messaging is not None:
        destination = variables.get(messaging[1]) or getattr(ctx.source, messaging[1], None)
        if destination:
            own["messaging.destination.name"] = str(destination)
            name = f"process {destination}"
        if variables.get("message_id"):
            own["messaging.message.id"] = str(variables["message_id"])
    elif "file_path" in variables:
        own["interlace.file.path"] = str(variables["file_path"])
    elif "fired_at" in variables:
        own["interlace.schedule.fired_at"] = str(variables["fired_at"])
    if msg.correlation_id:
        own["interlace.correlation_id"] = msg.correlation_id
    return tracing.start_root_span(name, tracing.CONSUMER, msg.headers, _shared(ctx.name, kind), own)
