"""MQTT against a real Mosquitto, in 3.1.1 and 5: ack after success, QoS 0/1/2 and retain on
publish, poison to a dead-letter topic with its error, broker restarted mid-run with nothing lost."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.brokers import MosquittoServer
from tests.support.engine import run_engine, write_flows

pytestmark = [pytest.mark.service("mosquitto"), pytest.mark.slow]

FLOWS = """
endpoints:
  sensors:
    mqtt: {host: 127.0.0.1, port: "${env.MQTT_PORT}", version: "${env.MQTT_VERSION}", client_id: "${env.CLIENT}"}
flows:
  readings:
    source:
      mqtt: {endpoint: sensors, topic: "${env.PREFIX}/in/+", qos: 1, concurrency: 2, dead_letter: "${env.PREFIX}/dead"}
    on_error:
      redelivery: {max_attempts: 2, backoff: {initial: 10ms, max: 20ms}}
    steps:
      - choice:
          when:
            - if: ${payload.poison == `true`}
              steps: [{fail: {message: "bad reading ${payload.n}"}}]
      - call: {endpoint: sensors, operation: publish, topic: "${env.PREFIX}/out/${payload.n}", qos: 2, retain: true}
"""


@pytest.fixture(scope="module")
def mosquitto() -> Iterator[MosquittoServer]:
    with MosquittoServer() as server:
        yield server


def _until(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


async def _publish(port: int, messages: list[tuple[str, dict[str, Any]]]) -> None:
    import aiomqtt

    async with aiomqtt.Client("127.0.0.1", port, identifier=f"test-pub-{time.monotonic_ns()}") as client:
        for topic, body in messages:
            await client.publish(topic, json.dumps(body).encode(), qos=1)


async def _retained(port: int, pattern: str, expect: int, version: str) -> dict[str, Any]:
    """What the broker keeps as retained under ``pattern`` (a fresh subscriber gets it at once)."""
    import aiomqtt

    found: dict[str, Any] = {}
    protocol = aiomqtt.ProtocolVersion.V5 if version == "5" else aiomqtt.ProtocolVersion.V311
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"test-sub-{time.monotonic_ns()}",
                              protocol=protocol) as client:
        await client.subscribe(pattern, qos=1)
        try:
            async with asyncio.timeout(3):
                async for message in client.messages:
                    found[str(message.topic)] = message
                    if len(found) >= expect:
                        break
        except TimeoutError:
            pass
    return found


async def _collect(port: int, topic: str, version: str) -> list[Any]:
    """The first message on ``topic`` (or none after 20 s)."""
    import aiomqtt

    protocol = aiomqtt.ProtocolVersion.V5 if version == "5" else aiomqtt.ProtocolVersion.V311
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"test-dead-{time.monotonic_ns()}",
                              protocol=protocol) as client:
        await client.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(20):
                async for message in client.messages:
                    return [message]
        except TimeoutError:
            pass
    return []


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_consume_publish_retained_and_dead_letter(tmp_path: Path, mosquitto: MosquittoServer, version: str) -> None:
    prefix = f"t{time.monotonic_ns()}"
    env = {"MQTT_PORT": str(mosquitto.port), "MQTT_VERSION": version, "PREFIX": prefix, "CLIENT": f"c-{prefix}",
           "INTERLACE_DATA_DIR": str(tmp_path / "data")}
    folder = write_flows(tmp_path / "flows", FLOWS.replace("${env.MQTT_VERSION}", version))
    with run_engine(folder, env=env) as engine:
        _until(lambda: httpx.get(f"{engine.management_url}/sources").json()["sources"][0]["state"] == "running")
        readings: list[tuple[str, dict[str, Any]]] = [(f"{prefix}/in/s{n % 3}", {"n": n}) for n in range(20)]
        readings.insert(5, (f"{prefix}/in/s9", {"n": 99, "poison": True}))
        dead: list[Any] = []
        watcher = threading.Thread(target=lambda: dead.extend(asyncio.run(_collect(mosquitto.port, f"{prefix}/dead",
                                                                                   version))))
        watcher.start()
        time.sleep(0.5)  # subscribed before the poison comes
        asyncio.run(_publish(mosquitto.port, readings))

        def done() -> bool:
            out = asyncio.run(_retained(mosquitto.port, f"{prefix}/out/#", 20, version))
            return len(out) == 20

        _until(done)
        sources = httpx.get(f"{engine.management_url}/sources").json()["sources"]
        assert sources[0]["processed"] == 20 and sources[0]["failures"] == 2  # the poison, twice
        watcher.join(30)
    [poison] = dead
    if version == "5":
        assert json.loads(poison.payload) == {"n": 99, "poison": True}
        properties = dict(poison.properties.UserProperty)
        assert properties["x-interlace-error"] == "bad reading 99" and properties["x-interlace-attempts"] == "2"
    else:  # 3.1.1 has no properties: an envelope carries the error and the original payload
        envelope = json.loads(poison.payload)
        assert envelope["error"] == "bad reading 99" and envelope["payload"] == {"n": 99, "poison": True}
        assert envelope["topic"] == f"{prefix}/in/s9"


def test_broker_restart_loses_nothing(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    prefix = f"r{time.monotonic_ns()}"
    env = {"MQTT_PORT": str(mosquitto.port), "MQTT_VERSION": "5", "PREFIX": prefix, "CLIENT": f"c-{prefix}",
           "INTERLACE_DATA_DIR": str(tmp_path / "data")}
    folder = write_flows(tmp_path / "flows", FLOWS.replace("${env.MQTT_VERSION}", "5"))
    with run_engine(folder, env=env) as engine:
        _until(lambda: httpx.get(f"{engine.management_url}/sources").json()["sources"][0]["state"] == "running")
        asyncio.run(_publish(mosquitto.port, [(f"{prefix}/in/a", {"n": n}) for n in range(10)]))
        _until(lambda: len(asyncio.run(_retained(mosquitto.port, f"{prefix}/out/#", 10, "5"))) == 10)
        mosquitto.stop()
        _until(lambda: httpx.get(f"{engine.management_url}/sources").json()["sources"][0]["state"] == "failing")
        mosquitto.start()
        asyncio.run(_publish(mosquitto.port, [(f"{prefix}/in/b", {"n": n}) for n in range(10, 25)]))
        _until(lambda: len(asyncio.run(_retained(mosquitto.port, f"{prefix}/out/#", 25, "5"))) == 25, timeout=45)
