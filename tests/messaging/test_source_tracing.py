"""Flows started by sources are traced: a CONSUMER span per message or run, its steps' spans
under it, the context handed on to backends, and a queue message's own ``traceparent``
continued.  Real sources (a folder, a schedule, RabbitMQ, Mosquitto) and a loopback OTLP
receiver decoding the spans with opentelemetry-proto."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.backends import BackendServer
from tests.support.brokers import MosquittoServer, RabbitServer
from tests.support.engine import run_engine, write_flows
from tests.support.otlp import OtlpHttpReceiver, Span
from tests.support.store_flows import store_flows

INTERNAL, CONSUMER, CLIENT = 1, 5, 3
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_SERVICE_NAME": "inbox"}

FILE_AND_SCHEDULE = """
endpoints:
  backend:
    http: {url: "%s"}
flows:
  inbox:
    source: {file: {folder: "${env.INBOX}", glob: "*.json", poll: 100ms, settle: 100ms}}
    steps:
      - call: {endpoint: backend, method: POST, path: /orders}
  heartbeat:
    source: {schedule: {every: 200ms}}
    steps:
      - log: tick ${vars.fired_at}
      - transform: {jmespath: "{beat: `1`}"}
"""


def children(spans: list[Span], parent: Span) -> list[Span]:
    return [s for s in spans if s.parent_span_id == parent.span_id and s.trace_id == parent.trace_id]


def test_file_and_schedule_runs_are_consumer_spans_with_their_steps_under_them(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    with BackendServer() as backend, OtlpHttpReceiver() as receiver:
        folder = write_flows(tmp_path / "flows", FILE_AND_SCHEDULE % backend.url)
        env = {**FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "INBOX": str(inbox),
               "INTERLACE_DATA_DIR": str(tmp_path / "data")}
        with run_engine(folder, env=env):
            temp = inbox / ".order-7.part"
            temp.write_text(json.dumps({"order": 7}))
            os.replace(temp, inbox / "order-7.json")

            def complete(spans: list[Span]) -> bool:
                return any(s.kind == CLIENT for s in spans) and \
                    sum(1 for s in spans if s.name == "schedule heartbeat") >= 2
            spans = receiver.wait_for(complete, timeout=30)
        seen = backend.requests[0]

    (run,) = [s for s in spans if s.name == "file inbox"]
    assert run.kind == CONSUMER and run.parent_span_id == "" and run.service == "inbox"
    assert run.attributes["interlace.flow"] == "inbox" and run.attributes["interlace.source"] == "file"
    assert run.attributes["interlace.file.path"] == f"{inbox}/order-7.json"
    assert run.attributes["interlace.attempt"] == 1
    (client,) = children(spans, run)  # the call step: its request is its only work, the CLIENT span is its
    assert (client.kind, client.attributes["interlace.step.id"]) == (CLIENT, "inbox/steps[0]")
    assert client.attributes["http.response.status_code"] == 200
    # the backend was called in the same trace, as the client span's child
    assert seen.headers["traceparent"] == f"00-{run.trace_id}-{client.span_id}-01"

    beats = [s for s in spans if s.name == "schedule heartbeat"]
    assert len({b.trace_id for b in beats}) == len(beats)  # every firing its own trace
    beat = beats[0]
    assert beat.kind == CONSUMER and beat.attributes["interlace.source"] == "schedule"
    assert "interlace.schedule.fired_at" in beat.attributes
    assert [s.name for s in children(spans, beat)] == ["transform"]  # the log step does no work: no span


def test_a_failed_run_marks_its_span(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    folder = write_flows(tmp_path / "flows", """
flows:
  inbox:
    source: {file: {folder: "${env.INBOX}", glob: "*.json", poll: 100ms, settle: 100ms}}
    steps:
      - transform: {jmespath: "@"}
      - fail: {message: "cannot read ${vars.file_name}", status: 422}
""")
    with OtlpHttpReceiver() as receiver:
        env = {**FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "INBOX": str(inbox),
               "INTERLACE_DATA_DIR": str(tmp_path / "data")}
        with run_engine(folder, env=env):
            (inbox / "bad.json").write_text("{}")
            spans = receiver.wait_for(lambda got: any(s.kind == CONSUMER for s in got), timeout=30)
    (run,) = [s for s in spans if s.kind == CONSUMER]
    assert run.status_code == 2 and run.attributes["interlace.error.status"] == 422
    assert run.attributes["error.type"]
    assert [s.name for s in children(spans, run)] == ["transform"]


STORE_FLOWS = store_flows(queue="shipments", path="/shipments", url="%s")


def test_a_stored_message_is_processed_in_the_trace_of_the_request_that_stored_it(tmp_path: Path) -> None:
    with BackendServer() as backend, OtlpHttpReceiver() as receiver:
        folder = write_flows(tmp_path / "flows", STORE_FLOWS % backend.url)
        env = {**FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
               "INTERLACE_DATA_DIR": str(tmp_path / "data")}
        with run_engine(folder, env=env) as engine:
            reply = httpx.post(f"{engine.url}/shipments", json={"id": 1},
                               headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
            assert reply.status_code == 202
            spans = receiver.wait_for(lambda got: any(s.kind == CLIENT for s in got), timeout=30)
    (server,) = [s for s in spans if s.kind == 2]
    (store,) = children(spans, server)
    assert store.name == "store"
    (run,) = [s for s in spans if s.kind == CONSUMER]
    # the processor's run is a child of the store step that kept the message, in the gateway's trace
    assert (run.name, run.trace_id, run.parent_span_id) == ("process shipments", TRACE_ID, store.span_id)
    assert run.attributes["messaging.system"] == "interlace"
    assert run.attributes["messaging.message.id"] == reply.json()["id"]
    assert [s.kind for s in children(spans, run)] == [CLIENT]


# -- queues: the message's own traceparent continued -----------------------------------------------

QUEUE_FLOWS = """
endpoints:
  backend:
    http: {url: "%s"}
  broker:
    %s
flows:
  orders-in:
    source:
      %s
    steps:
      - call: {endpoint: backend, method: POST, path: /orders}
"""


def _check_continued(spans: list[Span], name: str, system: str, backend: BackendServer) -> None:
    (run,) = [s for s in spans if s.kind == CONSUMER]
    assert (run.name, run.trace_id, run.parent_span_id) == (name, TRACE_ID, PARENT_ID)
    assert run.trace_state == "vendor=7"
    assert run.attributes["messaging.system"] == system
    assert run.attributes["messaging.operation.type"] == "process"
    assert run.attributes["messaging.destination.name"] == name.removeprefix("process ")
    (client,) = children(spans, run)
    assert client.kind == CLIENT
    assert backend.requests[0].headers["traceparent"] == f"00-{TRACE_ID}-{client.span_id}-01"


@pytest.fixture(scope="module")
def rabbit() -> Iterator[RabbitServer]:
    with RabbitServer() as server:
        yield server


@pytest.mark.service("rabbitmq")
@pytest.mark.slow
def test_an_amqp_message_continues_the_trace_in_its_headers(tmp_path: Path, rabbit: RabbitServer) -> None:
    import aio_pika

    queue = f"traced-{time.monotonic_ns()}"

    async def publish() -> None:
        connection = await aio_pika.connect(rabbit.url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await channel.declare_queue(queue, durable=True)
            await channel.default_exchange.publish(aio_pika.Message(
                b'{"order": 1}', content_type="application/json", message_id="m-1",
                headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "vendor=7"}),
                routing_key=queue)

    with BackendServer() as backend, OtlpHttpReceiver() as receiver:
        folder = write_flows(tmp_path / "flows", QUEUE_FLOWS % (
            backend.url, f'amqp: {{url: "{rabbit.url}"}}', f"amqp: {{endpoint: broker, queue: {queue}}}"))
        env = {**FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
               "INTERLACE_DATA_DIR": str(tmp_path / "data")}
        with run_engine(folder, env=env) as engine:
            asyncio.run(publish())
            spans = receiver.wait_for(lambda got: any(s.kind == CLIENT for s in got) and
                                      any(s.kind == CONSUMER for s in got), timeout=30)
            assert httpx.get(f"{engine.management_url}/sources").json()["sources"][0]["processed"] == 1
        _check_continued(spans, f"process {queue}", "rabbitmq", backend)
    (run,) = [s for s in spans if s.kind == CONSUMER]
    assert run.attributes["messaging.message.id"] == "m-1"


@pytest.fixture(scope="module")
def mosquitto() -> Iterator[MosquittoServer]:
    with MosquittoServer() as server:
        yield server


@pytest.mark.service("mosquitto")
def test_an_mqtt5_message_continues_the_trace_in_its_user_properties(
        tmp_path: Path, mosquitto: MosquittoServer) -> None:
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    topic = f"t{time.monotonic_ns()}/orders"

    async def publish() -> None:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.UserProperty = [("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"), ("tracestate", "vendor=7")]
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=f"pub-{topic}",
                                  protocol=aiomqtt.ProtocolVersion.V5) as client:
            await client.publish(topic, b'{"order": 1}', qos=1, properties=properties)

    with BackendServer() as backend, OtlpHttpReceiver() as receiver:
        folder = write_flows(tmp_path / "flows", QUEUE_FLOWS % (
            backend.url, f'mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, version: "5"}}',
            f'mqtt: {{endpoint: broker, topic: "{topic}", qos: 1}}'))
        env = {**FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
               "INTERLACE_DATA_DIR": str(tmp_path / "data")}
        with run_engine(folder, env=env) as engine:
            deadline = time.monotonic() + 20
            while httpx.get(f"{engine.management_url}/sources").json()["sources"][0]["state"] != "running":
                assert time.monotonic() < deadline, engine.log()[-2000:]
                time.sleep(0.1)
            time.sleep(0.3)  # subscribed
            asyncio.run(publish())
            spans = receiver.wait_for(lambda got: any(s.kind == CLIENT for s in got) and
                                      any(s.kind == CONSUMER for s in got), timeout=30)
        _check_continued(spans, f"process {topic}", "mqtt", backend)


# -- publishing: a flow's publish carries its trace on to the flow that consumes the message ----------

PUBLISH_FLOWS = """
endpoints:
  backend:
    http: {url: "%s"}
  broker:
    %s
flows:
  orders-out:
    source: {http: {method: POST, path: /orders}}
    steps:
      - call: {endpoint: broker, operation: publish, %s}
  orders-in:
    source:
      %s
    steps:
      - call: {endpoint: backend, method: POST, path: /orders}
"""
PRODUCER = 4


def _check_published_and_consumed(spans: list[Span], backend: BackendServer) -> None:
    """The gateway's trace, from the request that published down to the backend the consumer called:
    server > publish [producer] > process [consumer] > client (each call's request is its only work)."""
    (server,) = [s for s in spans if s.kind == 2]
    assert (server.trace_id, server.parent_span_id) == (TRACE_ID, PARENT_ID)
    (publish,) = children(spans, server)
    assert (publish.kind, publish.name, publish.attributes["interlace.endpoint"]) == (PRODUCER, "publish", "broker")
    assert publish.attributes["interlace.step.id"] == "orders-out/steps[0]"
    (run,) = [s for s in spans if s.kind == CONSUMER]
    # the consuming flow continues the publishing flow's trace, as the child of the publish span
    assert (run.trace_id, run.parent_span_id) == (TRACE_ID, publish.span_id)
    assert run.trace_state == "gw=edge1"
    (client,) = children(spans, run)
    assert client.kind == CLIENT
    assert backend.requests[0].headers["traceparent"] == f"00-{TRACE_ID}-{client.span_id}-01"


def _publish_and_collect(engine_url: str, receiver: OtlpHttpReceiver) -> list[Span]:
    reply = httpx.post(f"{engine_url}/orders", json={"order": 1},
                       headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "gw=edge1"})
    assert reply.status_code == 200, reply.text
    return receiver.wait_for(lambda got: any(s.kind == CONSUMER for s in got) and
                             sum(s.kind == CLIENT for s in got) >= 1, timeout=30)


@pytest.mark.service("rabbitmq")
@pytest.mark.slow
def test_a_published_amqp_message_carries_the_trace_to_the_consuming_flow(tmp_path: Path, rabbit: RabbitServer) -> None:
    queue = f"published-{time.monotonic_ns()}"
    with BackendServer() as backend, OtlpHttpReceiver() as receiver:
        folder = write_flows(tmp_path / "flows", PUBLISH_FLOWS % (
            backend.url, f'amqp: {{url: "{rabbit.url}"}}', f"routing_key: {queue}",
            f"amqp: {{endpoint: broker, queue: {queue}, declare: true}}"))
        env = {**FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
               "INTERLACE_DATA_DIR": str(tmp_path / "data")}
        with run_engine(folder, env=env) as engine:
            _wait_running(engine.management_url, engine)
            spans = _publish_and_collect(engine.url, receiver)
    _check_published_and_consumed(spans, backend)
    assert backend.requests[0].headers["tracestate"] == "gw=edge1"


def _published_over_mqtt(tmp_path: Path, mosquitto: MosquittoServer, version: str) -> tuple[list[Span], BackendServer]:
    """A flow publishes over MQTT ``version`` and another consumes it: the spans and the backend."""
    topic = f"t{time.monotonic_ns()}/v{version}"
    with BackendServer() as backend, OtlpHttpReceiver() as receiver:
        folder = write_flows(tmp_path / "flows", PUBLISH_FLOWS % (
            backend.url, f'mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, version: "{version}"}}',
            f'topic: "{topic}"', f'mqtt: {{endpoint: broker, topic: "{topic}", qos: 1}}'))
        env = {**FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
               "INTERLACE_DATA_DIR": str(tmp_path / "data")}
        with run_engine(folder, env=env) as engine:
            _wait_running(engine.management_url, engine)
            time.sleep(0.3)  # subscribed
            return _publish_and_collect(engine.url, receiver), backend


@pytest.mark.service("mosquitto")
def test_a_published_mqtt5_message_carries_the_trace_to_the_consuming_flow(
        tmp_path: Path, mosquitto: MosquittoServer) -> None:
    spans, backend = _published_over_mqtt(tmp_path, mosquitto, "5")
    _check_published_and_consumed(spans, backend)


@pytest.mark.service("mosquitto")
def test_mqtt311_cannot_carry_the_trace_so_the_consumer_starts_its_own(
        tmp_path: Path, mosquitto: MosquittoServer) -> None:
    spans, backend = _published_over_mqtt(tmp_path, mosquitto, "3.1.1")
    (run,) = [s for s in spans if s.kind == CONSUMER]
    assert run.trace_id != TRACE_ID and run.parent_span_id == ""  # MQTT 3.1.1 has no properties to carry it
    assert json.loads(backend.requests[0].body) == {"order": 1}  # the payload is the flow's, untouched


def _wait_running(management_url: str, engine: object) -> None:
    deadline = time.monotonic() + 20
    while httpx.get(f"{management_url}/sources").json()["sources"][0]["state"] != "running":
        assert time.monotonic() < deadline, "the source did not start"
        time.sleep(0.1)
