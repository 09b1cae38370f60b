"""``dead_letter: {steps: [...]}`` on every kind of source (an HTTP flow's is in test_amqp.py): a
folder, a schedule, the store processor and MQTT, one engine serving them all against a real
folder, Mosquitto and an HTTP backend.  The steps get the message with ``${error.*}`` once its
attempts are used up; the source then settles it as dead-lettered (file to failed, stored message
removed, MQTT message acknowledged).  When the steps fail the source disposes of the message as it
would without them (the processor buries it in its dead-letter store, MQTT publishes it to the
source's own dead-letter topic)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.backends import BackendServer
from tests.support.brokers import MosquittoServer, MqttListener
from tests.support.engine import RunningEngine, run_engine, write_flows

pytestmark = [pytest.mark.service("mosquitto"), pytest.mark.slow]

# each flow fails, twice (max_attempts 2), then its dead-letter steps report to the backend
# (the processor's publish theirs to MQTT); ${error.*} is the last failure
FLOWS = """
endpoints:
  backend:
    http: {url: "${env.BACKEND_URL}"}
  sensors:
    mqtt: {host: 127.0.0.1, port: "${env.MQTT_PORT}", version: "5", client_id: "${env.PREFIX}-engine"}
flows:
  inbox:
    source: {file: {folder: "${env.INBOX_DIR}", glob: "*.txt", poll: 100ms, settle: 100ms}}
    steps:
      - fail: {message: "cannot read ${vars.file_name}", status: 422}
    on_error:
      redelivery:
        max_attempts: 2
        backoff: {initial: 10ms, max: 10ms}
        dead_letter:
          steps:
            - call: {endpoint: backend, method: POST, path: /dead/inbox,
                     headers: {x-error: "${error.message}", x-attempts: "${error.attempts}",
                               x-file: "${vars.file_name}"}}

  tick:
    source: {schedule: {every: 500ms}}
    steps:
      - fail: {message: "the report could not be made", status: 503}
    on_error:
      redelivery:
        max_attempts: 2
        backoff: {initial: 10ms, max: 10ms}
        dead_letter:
          steps:
            - payload: {json: {fired_at: "${vars.fired_at}", error: "${error.message}"}}
            - call: {endpoint: backend, method: POST, path: /dead/tick, headers: {x-attempts: "${error.attempts}"}}

  accept:
    source: {http: {method: POST, path: /jobs}}
    steps:
      - store: {queue: jobs}
  forward:
    source: {store: {queue: jobs, poll: 100ms}}
    steps:
      - call: {endpoint: backend, method: POST, path: /status/503, expect_status: [2xx]}
    on_error:
      redelivery:
        max_attempts: 2
        backoff: {initial: 10ms, max: 10ms}
        dead_letter:
          steps:
            - choice:
                when:
                  - if: ${payload.bury == `true`}
                    steps: [{fail: {message: "the dead-letter topic refuses ${payload.n}"}}]
            - call: {endpoint: sensors, operation: publish, topic: "${env.PREFIX}/dead/jobs", qos: 1}

  readings:
    source: {mqtt: {endpoint: sensors, topic: "${env.PREFIX}/in", qos: 1, dead_letter: "${env.PREFIX}/dead/own"}}
    steps:
      - fail: {message: "bad reading ${payload.n}", status: 422}
    on_error:
      redelivery:
        max_attempts: 2
        backoff: {initial: 10ms, max: 10ms}
        dead_letter:
          steps:
            - choice:
                when:
                  - if: ${payload.bury == `true`}
                    steps: [{fail: {message: "no room for reading ${payload.n}"}}]
            - call: {endpoint: backend, method: POST, path: /dead/readings,
                     headers: {x-error: "${error.message}", x-attempts: "${error.attempts}", x-topic: "${vars.topic}"}}
"""


def _until(check: Callable[[], object], engine: RunningEngine, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"condition not met in time; the engine's log:\n{engine.log()[-3000:]}")


async def _publish(port: int, topic: str, body: bytes) -> None:
    import aiomqtt

    async with aiomqtt.Client("127.0.0.1", port, identifier=f"test-pub-{time.monotonic_ns()}") as client:
        await client.publish(topic, body, qos=1)


@pytest.fixture(scope="module")
def mosquitto() -> Iterator[MosquittoServer]:
    with MosquittoServer() as server:
        yield server


def test_dead_letter_steps_on_a_folder_a_schedule_the_store_processor_and_mqtt(
        tmp_path: Path, mosquitto: MosquittoServer) -> None:
    prefix = f"dl{time.monotonic_ns()}"
    inbox = tmp_path / "in"
    inbox.mkdir()
    with BackendServer() as backend, MqttListener(mosquitto.port, f"{prefix}/dead/#", "5") as dead:
        env = {"BACKEND_URL": backend.url, "MQTT_PORT": str(mosquitto.port), "PREFIX": prefix,
               "INBOX_DIR": str(inbox), "INTERLACE_DATA_DIR": str(tmp_path / "data")}
        folder = write_flows(tmp_path / "flows", FLOWS)
        with run_engine(folder, env=env) as engine:
            def dead_for(flow: str) -> list[object]:
                return [r for r in backend.requests if r.path == f"/dead/{flow}"]

            sources = lambda: {s["flow"]: s for s in  # noqa: E731
                               httpx.get(f"{engine.management_url}/sources").json()["sources"]}
            _until(lambda: sources()["readings"]["state"] == "running", engine)
            time.sleep(0.3)  # subscribed
            (inbox / ".orders.txt.part").write_text("order 1")
            os.replace(inbox / ".orders.txt.part", inbox / "orders.txt")
            asyncio.run(_publish(mosquitto.port, f"{prefix}/in", b'{"n": 7}'))
            asyncio.run(_publish(mosquitto.port, f"{prefix}/in", b'{"n": 8, "bury": true}'))
            kept = httpx.post(f"{engine.url}/jobs", json={"n": 1}).json()["id"]
            buried = httpx.post(f"{engine.url}/jobs", json={"n": 2, "bury": True}).json()["id"]

            # the folder: the steps got the file's vars and the error; the file went to failed
            _until(lambda: dead_for("inbox") and (inbox / "failed" / "orders.txt").exists(), engine)
            [inbox_letter] = dead_for("inbox")
            assert inbox_letter.headers["x-error"] == "cannot read orders.txt"  # type: ignore[attr-defined]
            assert inbox_letter.headers["x-attempts"] == "2"  # type: ignore[attr-defined]
            assert inbox_letter.headers["x-file"] == "orders.txt"  # type: ignore[attr-defined]
            assert inbox_letter.body == b"order 1"  # type: ignore[attr-defined]

            # the schedule: each firing that failed twice, with the time it fired
            _until(lambda: dead_for("tick"), engine)
            tick = json.loads(dead_for("tick")[0].body)  # type: ignore[attr-defined]
            assert tick["error"] == "the report could not be made" and tick["fired_at"]
            assert dead_for("tick")[0].headers["x-attempts"] == "2"  # type: ignore[attr-defined]

            # MQTT: the steps took one (acknowledged); the other, whose steps failed, went to the
            # source's own dead-letter topic with the error of its last attempt
            own = f"{prefix}/dead/own"
            _until(lambda: dead_for("readings") and any(str(m.topic) == own for m in dead.messages), engine)
            [reading] = dead_for("readings")
            assert reading.headers["x-error"] == "bad reading 7"  # type: ignore[attr-defined]
            assert reading.headers["x-topic"] == f"{prefix}/in"  # type: ignore[attr-defined]
            assert reading.body == b'{"n": 7}'  # type: ignore[attr-defined]

            # the processor: one published to the dead-letter topic, the other (its steps failed) buried
            _until(lambda: any(str(m.topic) == f"{prefix}/dead/jobs" for m in dead.messages), engine)
            management = engine.management_url
            _until(lambda: httpx.get(f"{management}/stores/jobs.dead/dead").json()["messages"], engine)
            [letter] = [m for m in dead.messages if str(m.topic) == f"{prefix}/dead/jobs"]
            assert json.loads(letter.payload) == {"n": 1}
            [grave] = httpx.get(f"{management}/stores/jobs.dead/dead").json()["messages"]
            assert grave["id"] == buried and grave["attempts"] == 2
            assert kept != buried
            stats = sources()
            assert stats["forward"]["dead_letters"] == 2 and stats["readings"]["dead_letters"] == 1
            assert stats["readings"]["failures"] == 4
            assert stats["inbox"]["dead_letters"] == 1 and stats["tick"]["dead_letters"] >= 1
            assert httpx.get(f"{management}/stores").json()["stores"].get("jobs", {}).get("stored", 0) == 0
    [own_letter] = [m for m in dead.messages if str(m.topic) == own]
    assert json.loads(own_letter.payload) == {"n": 8, "bury": True}
    fields = dict(own_letter.properties.UserProperty)
    assert fields["x-interlace-error"] == "bad reading 8" and fields["x-interlace-attempts"] == "2"
