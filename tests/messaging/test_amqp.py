"""AMQP against a real RabbitMQ: consume-ack after success, poison to the dead-letter queue with its
error, publish with confirms, broker down at start and restarted mid-run with nothing lost, attempts
counted across engine crashes (a quorum queue's x-delivery-count), exchanges declared by the endpoint."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.brokers import RabbitServer
from tests.support.engine import run_engine, write_flows

pytestmark = [pytest.mark.service("rabbitmq"), pytest.mark.slow]

FLOWS = """
endpoints:
  broker:
    amqp: {url: "${env.AMQP_URL}"}
flows:
  orders-in:
    source:
      amqp: {endpoint: broker, queue: "${env.QUEUE}", prefetch: 20, concurrency: 4}
    on_error:
      redelivery:
        max_attempts: 3
        backoff: {initial: 20ms, max: 50ms}
        dead_letter: {source: true}
    steps:
      - choice:
          when:
            - if: ${payload.poison == `true`}
              steps: [{fail: {message: "poison order ${payload.n}", status: 422}}]
      - payload: {json: {n: "${payload.n}", handled: true}}
      - call: {endpoint: broker, operation: publish, routing_key: "${env.QUEUE}.out",
               headers: {x-source: orders-in}}
"""


def _until(check: Callable[[], bool], timeout: float = 30, engine: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    log = f"; the engine's log:\n{engine.log()[-3000:]}" if engine is not None else ""
    raise AssertionError(f"condition not met in time{log}")


async def _publish(url: str, queue: str, bodies: list[dict[str, object]]) -> None:
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        for name in (queue, f"{queue}.out"):  # the flow publishes to QUEUE.out: bound before it does
            await channel.declare_queue(name, durable=True)
        for body in bodies:
            await channel.default_exchange.publish(
                aio_pika.Message(json.dumps(body).encode(), content_type="application/json",
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue)


async def _drain(url: str, queue: str) -> list[Any]:
    import aio_pika

    out = []
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True)
        while True:
            message = await declared.get(no_ack=True, fail=False)
            if message is None:
                return out
            out.append(message)


def test_consume_publish_and_dead_letter(tmp_path: Path, rabbit: RabbitServer) -> None:
    queue = f"orders-{time.monotonic_ns()}"
    env = {"AMQP_URL": rabbit.url, "QUEUE": queue, "INTERLACE_DATA_DIR": str(tmp_path / "data")}
    folder = write_flows(tmp_path / "flows", FLOWS)
    bodies: list[dict[str, object]] = [{"n": n} for n in range(40)]
    bodies.insert(7, {"n": 999, "poison": True})
    with run_engine(folder, env=env) as engine:
        asyncio.run(_publish(rabbit.url, queue, bodies))
        out: list[object] = []
        dead: list[object] = []

        def arrived() -> bool:
            out.extend(asyncio.run(_drain(rabbit.url, f"{queue}.out")))
            dead.extend(asyncio.run(_drain(rabbit.url, f"{queue}.dead")))
            return len(out) >= 40 and len(dead) >= 1

        _until(arrived, engine=engine)
        sources = httpx.get(f"{engine.management_url}/sources").json()["sources"]
        assert sources[0]["kind"] == "amqp" and sources[0]["state"] == "running"
        assert sources[0]["processed"] == 40 and sources[0]["dead_letters"] == 0
    assert sorted(json.loads(m.body)["n"] for m in out) == list(range(40))  # type: ignore[attr-defined]
    assert all(m.headers["x-source"] == "orders-in" and m.delivery_mode == 2 for m in out)  # type: ignore[attr-defined]
    [poison] = dead
    assert json.loads(poison.body) == {"n": 999, "poison": True}  # type: ignore[attr-defined]
    headers = poison.headers  # type: ignore[attr-defined]
    assert headers["x-interlace-error"] == "poison order 999" and headers["x-interlace-attempts"] == 3
    assert headers["x-interlace-error-status"] == 422 and headers["x-interlace-queue"] == queue


def test_broker_down_at_start_and_restarted_mid_run(tmp_path: Path, rabbit: RabbitServer) -> None:
    queue = f"restart-{time.monotonic_ns()}"
    env = {"AMQP_URL": rabbit.url, "QUEUE": queue, "INTERLACE_DATA_DIR": str(tmp_path / "data")}
    folder = write_flows(tmp_path / "flows", FLOWS)
    rabbit.stop()
    try:
        with run_engine(folder, env=env) as engine:
            _until(lambda: httpx.get(f"{engine.management_url}/sources").json()["sources"][0]["state"] == "failing")
            rabbit.start()
            asyncio.run(_publish(rabbit.url, queue, [{"n": n} for n in range(30)]))
            out: list[object] = []
            _until(lambda: bool(out.extend(asyncio.run(_drain(rabbit.url, f"{queue}.out")))) or len(out) >= 30,
                   engine=engine)
            # the broker dies with messages waiting; they are all there once it is back
            asyncio.run(_publish(rabbit.url, queue, [{"n": n} for n in range(30, 60)]))
            rabbit.stop()
            rabbit.start()
            asyncio.run(_publish(rabbit.url, queue, [{"n": n} for n in range(60, 80)]))
            _until(lambda: bool(out.extend(asyncio.run(_drain(rabbit.url, f"{queue}.out")))) or
                   len({json.loads(m.body)["n"] for m in out}) >= 80, timeout=90, engine=engine)
    finally:
        if rabbit.process is None:
            rabbit.start()
    numbers = {json.loads(m.body)["n"] for m in out}  # type: ignore[attr-defined]
    assert numbers == set(range(80))  # at least once: some may have come twice around the crash


CRASH_FLOWS = """
endpoints:
  broker:
    amqp: {url: "${env.AMQP_URL}"}
  slow:
    http: {url: "${env.BACKEND_URL}", timeout: {connect: 1s, read: 60s}}
flows:
  hangs:
    source:
      amqp: {endpoint: broker, queue: "${env.QUEUE}", queue_type: quorum, prefetch: 1}
    on_error:
      redelivery:
        max_attempts: 2
        backoff: {initial: 10ms, max: 10ms}
        dead_letter: {source: true}
    steps:
      - call: {endpoint: slow, method: POST, path: /hang, expect_status: [2xx]}
"""


async def _publish_quorum(url: str, queue: str, body: bytes) -> None:
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        await channel.default_exchange.publish(aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                               routing_key=queue)


def test_attempts_survive_engine_crashes(tmp_path: Path, rabbit: RabbitServer) -> None:
    """A message whose flow never ends (the engine is killed while it runs) is delivered again by the
    broker with x-delivery-count; once that uses up max_attempts it is dead-lettered unrun."""
    from tests.support.backends import BackendServer

    queue = f"crash-{time.monotonic_ns()}"
    with BackendServer() as backend:
        backend.set_behaviour(delay=120)  # the flow hangs in its call until the engine is killed
        env = {"AMQP_URL": rabbit.url, "QUEUE": queue, "BACKEND_URL": backend.url,
               "INTERLACE_DATA_DIR": str(tmp_path / "data")}
        folder = write_flows(tmp_path / "flows", CRASH_FLOWS)
        asyncio.run(_publish_quorum(rabbit.url, queue, b"kills the engine"))
        for crash in (1, 2):
            with run_engine(folder, env=env) as engine:  # leaving the block is a SIGKILL
                _until(lambda n=crash: len(backend.requests) >= n, engine=engine)  # type: ignore[misc]
        with run_engine(folder, env=env) as engine:
            dead: list[Any] = []
            _until(lambda: bool(dead.extend(asyncio.run(_drain(rabbit.url, f"{queue}.dead")))) or len(dead) >= 1,
                   engine=engine)
            assert len(backend.requests) == 2  # not run a third time
            [source] = httpx.get(f"{engine.management_url}/sources").json()["sources"]
            assert source["processed"] == 0 and source["failures"] == 1
        backend.set_behaviour()
    [letter] = dead
    assert letter.body == b"kills the engine"
    assert letter.headers["x-interlace-attempts"] == 2
    assert letter.headers["x-interlace-error-code"] == "redelivery-exhausted"


PUBLISH_FLOWS = """
endpoints:
  broker:
    amqp:
      url: "${env.AMQP_URL}"
      exchanges: {"${env.EXCHANGE}": {type: topic}}
flows:
  ship:
    source: {http: {method: POST, path: /ship}}
    steps:
      - call: {endpoint: broker, operation: publish, exchange: "${env.EXCHANGE}",
               routing_key: "ship.${payload.country}"}
      - respond: {status: 202}
  nowhere:
    source: {http: {method: POST, path: /nowhere}}
    steps:
      - call: {endpoint: broker, operation: publish, exchange: "${env.EXCHANGE}-missing", routing_key: x}
  out-of-stock:
    source: {http: {method: POST, path: /reserve}}
    steps:
      - fail: {message: "no stock for ${payload.sku}", status: 503}
    on_error:
      redelivery:
        max_attempts: 2
        backoff: {initial: 10ms, max: 10ms}
        dead_letter:
          steps:   # the request, published to a queue with the error beside it
            - call: {endpoint: broker, operation: publish, routing_key: "${env.EXCHANGE}.dead",
                     headers: {x-error: "${error.message}", x-attempts: "${error.attempts}"}}
"""


async def _bind(url: str, exchange: str, queue: str, key: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        existing = await channel.get_exchange(exchange, ensure=True)  # passive: fails unless it exists
        declared = await channel.declare_queue(queue, durable=True)
        await declared.bind(existing, routing_key=key)


def test_publish_declares_the_exchanges_the_endpoint_lists(tmp_path: Path, rabbit: RabbitServer) -> None:
    exchange = f"shipping-{time.monotonic_ns()}"
    env = {"AMQP_URL": rabbit.url, "EXCHANGE": exchange, "INTERLACE_DATA_DIR": str(tmp_path / "data")}
    folder = write_flows(tmp_path / "flows", PUBLISH_FLOWS.replace("${env.EXCHANGE}", exchange))
    with run_engine(folder, env=env) as engine:
        assert httpx.post(f"{engine.url}/ship", json={"country": "nl"}).status_code == 202  # declared it
        asyncio.run(_bind(rabbit.url, exchange, f"{exchange}.in", "ship.*"))
        assert httpx.post(f"{engine.url}/ship", json={"country": "be"}).status_code == 202
        missing = httpx.post(f"{engine.url}/nowhere", json={})
        assert missing.status_code == 502 and missing.headers["content-type"] == "application/problem+json"
        assert "does not exist" in missing.json()["detail"] and "exchanges" in missing.json()["detail"]
        assert httpx.post(f"{engine.url}/ship", json={"country": "de"}).status_code == 202  # channel reopened
        arrived = asyncio.run(_drain(rabbit.url, f"{exchange}.in"))
        # a flow that is not a queue's dead-letters to a queue through dead_letter.steps
        asyncio.run(_drain(rabbit.url, f"{exchange}.dead"))  # declares it
        refused = httpx.post(f"{engine.url}/reserve", json={"sku": "A-1"})
        assert refused.status_code == 503 and refused.json()["attempts"] == 2 and refused.json()["dead_letter_id"]
        [dead] = asyncio.run(_drain(rabbit.url, f"{exchange}.dead"))
    assert [json.loads(m.body)["country"] for m in arrived] == ["be", "de"]
    assert json.loads(dead.body) == {"sku": "A-1"}
    assert dead.headers["x-error"] == "no stock for A-1" and dead.headers["x-attempts"] == "2"


OUT_OF_ORDER_FLOWS = """
endpoints:
  broker:
    amqp: {url: "${env.AMQP_URL}"}
  slow:
    http: {url: "${env.BACKEND_URL}", timeout: {connect: 1s, read: 10s}}
flows:
  mixed:
    source:
      amqp: {endpoint: broker, queue: "${env.QUEUE}", prefetch: 20, concurrency: 8}
    steps:
      - choice:
          when:
            - if: ${payload.slow == `true`}
              steps: [{call: {endpoint: slow, method: POST, path: /slow, expect_status: [2xx]}}]
      - call: {endpoint: broker, operation: publish, routing_key: "${env.QUEUE}.out"}
"""


async def _queue_depth(url: str, queue: str) -> int:
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


def test_messages_ending_out_of_order_are_each_acknowledged_once(tmp_path: Path, rabbit: RabbitServer) -> None:
    """Acknowledgements go out together (one multiple ack for the settled head of the delivery
    order, single acks behind a message still running): with slow messages early in the queue,
    every message is acknowledged exactly once. An ack past a running message would settle it
    before its flow ended (a crash would lose it); one sent twice closes the channel, and the
    broker would deliver what was unacknowledged again (duplicates in the output)."""
    from tests.support.backends import BackendServer

    queue = f"acks-{time.monotonic_ns()}"
    bodies: list[dict[str, object]] = [{"n": n, "slow": n % 10 == 0} for n in range(60)]
    with BackendServer() as backend:
        backend.set_behaviour(delay=1.0)
        env = {"AMQP_URL": rabbit.url, "QUEUE": queue, "BACKEND_URL": backend.url,
               "INTERLACE_DATA_DIR": str(tmp_path / "data")}
        folder = write_flows(tmp_path / "flows", OUT_OF_ORDER_FLOWS)
        with run_engine(folder, env=env) as engine:
            asyncio.run(_publish(rabbit.url, queue, bodies))
            out: list[Any] = []
            _until(lambda: bool(out.extend(asyncio.run(_drain(rabbit.url, f"{queue}.out")))) or len(out) >= 60,
                   engine=engine)
            # while the engine still runs: nothing ready, and nothing held unacknowledged either
            # (stopping it below returns what it holds to the queue)
            assert asyncio.run(_queue_depth(rabbit.url, queue)) == 0
            [source] = httpx.get(f"{engine.management_url}/sources").json()["sources"]
            assert source["state"] == "running" and source["processed"] == 60
            log = engine.log()
        assert asyncio.run(_queue_depth(rabbit.url, queue)) == 0  # each was acknowledged
        assert len(backend.requests) == 6
    assert sorted(json.loads(m.body)["n"] for m in out) == list(range(60))  # once each
    assert "could not acknowledge" not in log and "reconnecting" not in log
