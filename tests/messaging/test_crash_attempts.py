"""Attempts that survive a crash, for the sources whose broker or server counts nothing: a polled
folder (local, FTP, SFTP) and MQTT.  A message whose flow never ends is taken while the engine is killed
(SIGKILL) in its flow, twice; the third engine finds the two attempts in its store and, the flow's
max_attempts being 2, dead-letters it without running it again (AMQP's counterpart, with the
broker's x-delivery-count, is test_amqp.py::test_attempts_survive_engine_crashes)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.backends import BackendServer
from tests.support.brokers import MosquittoServer, MqttListener
from tests.support.engine import RunningEngine, run_engine, write_flows
from tests.support.fileservers import FtpServer, SftpServer

pytestmark = pytest.mark.slow

# the flow hangs in its call (the backend answers after two minutes) until the engine is killed
POLLED = """
endpoints:
  backend:
    http: {url: "${env.BACKEND_URL}", timeout: {connect: 1s, read: 5m}}
%(endpoint)s
flows:
  inbox:
    source: {%(source)s}
    on_error:
      redelivery: {max_attempts: 2, backoff: {initial: 10ms, max: 10ms}}
    steps:
      - call: {endpoint: backend, method: POST, path: "/files/${vars.file_name}"}
"""


def _until(check: Callable[[], object], engine: RunningEngine | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    log = f"; the engine's log:\n{engine.log()[-3000:]}" if engine is not None else ""
    raise AssertionError(f"condition not met in time{log}")


def _crash_twice(tmp_path: Path, backend: BackendServer, flows: str, env: dict[str, str],
                 started: Callable[[RunningEngine], None] = lambda engine: None) -> Path:
    """Two engines killed while the flow's call hangs; the flow folder for the third one.
    ``started``: after each engine is ready."""
    backend.set_behaviour(delay=120)
    folder = write_flows(tmp_path / "flows", flows)
    for crash in (1, 2):
        with run_engine(folder, env=env) as engine:  # leaving the block is a SIGKILL
            started(engine)
            _until(lambda n=crash: len(backend.requests) >= n, engine)  # type: ignore[misc]
    return folder


def _check_failed_file(inbox: Path, engine: RunningEngine, backend: BackendServer) -> None:
    _until(lambda: (inbox / "failed" / "poison.txt.error").exists(), engine)
    reason = (inbox / "failed" / "poison.txt.error").read_text()
    assert "redelivery-exhausted" in reason and "attempts: 2" in reason, reason
    assert (inbox / "failed" / "poison.txt").read_text() == "kills the engine"
    assert len(backend.requests) == 2  # not run a third time
    [source] = httpx.get(f"{engine.management_url}/sources").json()["sources"]
    assert source["processed"] == 0 and source["failures"] == 1


def _poison_is_failed_after_two_crashes(tmp_path: Path, inbox: Path, endpoint: str, source: str,
                                        env: dict[str, str] | None = None) -> None:
    """Two engines die in the poison file's flow; the third fails the file without running it."""
    flows = POLLED % {"endpoint": endpoint, "source": source}
    with BackendServer() as backend:
        env = {**(env or {}), "BACKEND_URL": backend.url, "INTERLACE_DATA_DIR": str(tmp_path / "data")}
        folder = _crash_twice(tmp_path, backend, flows, env)
        with run_engine(folder, env=env) as engine:
            _check_failed_file(inbox, engine, backend)
        backend.set_behaviour()


def test_a_file_whose_flow_kills_the_engine_is_failed_after_max_attempts(tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "poison.txt").write_text("kills the engine")
    # lease 1s: a restarted engine takes the dead one's claim again a second later
    _poison_is_failed_after_two_crashes(
        tmp_path, inbox, "", 'file: {folder: "${env.INBOX_DIR}", glob: "*.txt", poll: 100ms, settle: 100ms, lease: 1s}',
        {"INBOX_DIR": str(inbox)})


@pytest.mark.service("sshd")
def test_an_sftp_file_whose_flow_kills_the_engine_is_failed_after_max_attempts(tmp_path: Path) -> None:
    with SftpServer() as sftp:
        inbox = sftp.root / "in"
        inbox.mkdir()
        (inbox / "poison.txt").write_text("kills the engine")
        endpoint = (f"  remote:\n    sftp: {{host: 127.0.0.1, port: {sftp.port}, user: {sftp.user}, "
                    f"private_key: {sftp.client_key}, known_hosts: {sftp.known_hosts}, folder: {sftp.root}}}")
        _poison_is_failed_after_two_crashes(
            tmp_path, inbox, endpoint,
            'sftp: {endpoint: remote, folder: in, glob: "*.txt", poll: 100ms, settle: 100ms, lease: 1s}')


@pytest.mark.service("vsftpd")
def test_an_ftp_file_whose_flow_kills_the_engine_is_failed_after_max_attempts(tmp_path: Path) -> None:
    """The same on vsftpd: the claim's attempts are in the engine's store, the file on the server."""
    with FtpServer() as ftp:
        inbox = ftp.root / "inbox" / "in"
        inbox.mkdir()
        inbox.chmod(0o777)  # the FTP server's own user moves the file into failed/
        (inbox / "poison.txt").write_text("kills the engine")
        endpoint = f"  remote:\n    ftp: {{host: 127.0.0.1, port: {ftp.port}, folder: /inbox}}"
        _poison_is_failed_after_two_crashes(
            tmp_path, inbox, endpoint,
            'ftp: {endpoint: remote, folder: in, glob: "*.txt", poll: 100ms, settle: 100ms, lease: 1s}')


MQTT_FLOWS = """
endpoints:
  backend:
    http: {url: "${env.BACKEND_URL}", timeout: {connect: 1s, read: 5m}}
  sensors:
    mqtt: {host: 127.0.0.1, port: "${env.MQTT_PORT}", version: "MQTT_VERSION", client_id: "${env.CLIENT}"}
flows:
  readings:
    source: {mqtt: {endpoint: sensors, topic: "${env.PREFIX}/in", qos: 1, dead_letter: "${env.PREFIX}/dead"}}
    on_error:
      redelivery: {max_attempts: 2, backoff: {initial: 10ms, max: 10ms}}
    steps:
      - call: {endpoint: backend, method: POST, path: /readings}
"""


@pytest.fixture(scope="module")
def mosquitto() -> Iterator[MosquittoServer]:
    with MosquittoServer() as server:
        yield server


async def _publish(port: int, topic: str, body: bytes) -> None:
    import aiomqtt

    async with aiomqtt.Client("127.0.0.1", port, identifier=f"test-pub-{time.monotonic_ns()}") as client:
        await client.publish(topic, body, qos=1)


@pytest.mark.service("mosquitto")
@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_an_mqtt_message_whose_flow_kills_the_engine_is_dead_lettered_after_max_attempts(
        tmp_path: Path, mosquitto: MosquittoServer, version: str) -> None:
    prefix = f"crash{time.monotonic_ns()}"
    published = threading.Event()

    def subscribed_then_publish(engine: RunningEngine) -> None:
        """The first engine's session exists once its source runs: the message goes to it."""
        if published.is_set():
            return

        def running() -> bool:
            sources = httpx.get(f"{engine.management_url}/sources").json()["sources"]
            return bool(sources) and sources[0]["state"] == "running"

        _until(running, engine)
        time.sleep(0.3)  # subscribed
        asyncio.run(_publish(mosquitto.port, f"{prefix}/in", b'{"reading": "kills the engine"}'))
        published.set()

    with BackendServer() as backend, MqttListener(mosquitto.port, f"{prefix}/dead", version) as dead:
        env = {"BACKEND_URL": backend.url, "MQTT_PORT": str(mosquitto.port),
               "CLIENT": f"engine-{prefix}", "PREFIX": prefix, "INTERLACE_DATA_DIR": str(tmp_path / "data")}
        folder = _crash_twice(tmp_path, backend, MQTT_FLOWS.replace("MQTT_VERSION", version), env,
                              started=subscribed_then_publish)
        with run_engine(folder, env=env) as engine:
            _until(lambda: dead.messages, engine)
            assert len(backend.requests) == 2  # not run a third time
            [source] = httpx.get(f"{engine.management_url}/sources").json()["sources"]
            assert source["processed"] == 0 and source["failures"] == 1
        backend.set_behaviour()
    [letter] = dead.messages
    if version == "5":
        fields = dict(letter.properties.UserProperty)
        assert fields["x-interlace-code"] == "redelivery-exhausted" and fields["x-interlace-attempts"] == "2"
        assert letter.payload == b'{"reading": "kills the engine"}'
    else:
        envelope = json.loads(letter.payload)
        assert envelope["code"] == "redelivery-exhausted" and envelope["attempts"] == "2"
        assert envelope["payload"] == {"reading": "kills the engine"}
