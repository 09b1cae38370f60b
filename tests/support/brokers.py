"""Real message brokers for tests, on free loopback ports: RabbitMQ and Mosquitto.

    with RabbitServer() as rabbit:        # boots in a few seconds; start it once per session
        rabbit.url                        # amqp://guest:guest@127.0.0.1:PORT/
        rabbit.stop(); rabbit.start()     # the broker going down and coming back, same port, same data

    with MosquittoServer() as broker:
        broker.port
        broker.stop(); broker.start()     # persistence on: queued QoS 1/2 messages survive

RabbitMQ runs as the ``rabbitmq`` user (its data folder is given to it), with its own node name,
distribution port and epmd port so that it never meets another test's or the system's node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.services import free_port, require_command


def _runuser(user: str) -> list[str]:
    if os.geteuid() != 0:
        return []
    return [shutil.which("runuser") or "/usr/sbin/runuser", "-u", user, "--"]


def _own(path: Path, user: str) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        for root, dirs, files in os.walk(path):
            os.chown(root, entry.pw_uid, entry.pw_gid)
            for name in dirs + files:
                os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


class RabbitServer:
    def __init__(self) -> None:
        require_command("rabbitmq-server", "rabbitmq-server")
        # the script itself: /usr/sbin/rabbitmq-server is a wrapper that sends its output to /var/log
        self.server = "/usr/lib/rabbitmq/bin/rabbitmq-server"
        self.folder = Path(tempfile.mkdtemp(prefix="interlace-rabbit-"))
        os.chmod(self.folder, 0o755)
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node = f"interlace{os.getpid()}{self.port}@localhost"
        (self.folder / "home").mkdir()
        cookie = self.folder / "home" / ".erlang.cookie"
        cookie.write_text(os.urandom(16).hex())
        os.chmod(cookie, 0o400)
        (self.folder / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n"
            "vm_memory_high_watermark.absolute = 512MiB\ndisk_free_limit.absolute = 50MB\n")
        (self.folder / "enabled_plugins").write_text("[].\n")
        _own(self.folder, "rabbitmq")
        self.process: subprocess.Popen[bytes] | None = None
        self.epmd: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        return {**os.environ, "HOME": str(self.folder / "home"), "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port), "ERL_EPMD_PORT": str(self.epmd_port),
                "ERL_EPMD_ADDRESS": "127.0.0.1",
                "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"), "RABBITMQ_LOG_BASE": str(self.folder / "log"),
                "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
                "RABBITMQ_PID_FILE": str(self.folder / "rabbit.pid")}

    def start(self, timeout: float = 180) -> RabbitServer:
        log = (self.folder / "server.out").open("ab")
        if self.epmd is None:
            # our own Erlang port mapper, on a private port, as our child (stopped by its pid)
            epmd = shutil.which("epmd") or "/usr/bin/epmd"
            self.epmd = subprocess.Popen([*_runuser("rabbitmq"), epmd, "-port", str(self.epmd_port), "-address",
                                          "127.0.0.1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.process = subprocess.Popen([*_runuser("rabbitmq"), "env", *[f"{k}={v}" for k, v in self.env().items()
                                                                          if k.startswith(("RABBITMQ", "ERL", "HOME"))],
                                         self.server], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        env=self.env(),
                                        start_new_session=True, cwd=self.folder)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"rabbitmq-server exited with {self.process.returncode}:\n{self.log()}")
            if _port_open(self.port) and self._amqp_ready():
                return self
            time.sleep(0.2)
        raise AssertionError(f"rabbitmq-server not ready after {timeout}s:\n{self.log()}")

    def _amqp_ready(self) -> bool:
        import asyncio

        import aio_pika

        async def probe() -> bool:
            try:
                connection = await aio_pika.connect(self.url, timeout=2)
            except Exception:
                return False
            await connection.close()
            return True

        return asyncio.run(probe())

    def log(self) -> str:
        out = (self.folder / "server.out").read_text(errors="replace") if (self.folder / "server.out").exists() else ""
        return out[-4000:]

    def stop(self) -> None:
        """Kill the broker (as a crash would): clients see their connections drop."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(20)
        self.process = None
        deadline = time.monotonic() + 10
        while _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def __enter__(self) -> RabbitServer:
        try:
            return self.start()
        except BaseException:
            self.__exit__()  # the port mapper and the folder go too
            raise

    def __exit__(self, *_: Any) -> None:
        self.stop()
        if self.epmd is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.epmd.pid, signal.SIGKILL)
            self.epmd.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


class MosquittoServer:
    def __init__(self) -> None:
        self.binary = require_command("mosquitto", "mosquitto")
        self.folder = Path(tempfile.mkdtemp(prefix="interlace-mqtt-"))
        os.chmod(self.folder, 0o755)
        self.port = free_port()
        (self.folder / "data").mkdir()
        (self.folder / "mosquitto.conf").write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {self.folder / 'data'}/\nautosave_interval 1\n"
            f"max_queued_messages 100000\nlog_dest file {self.folder / 'mosquitto.log'}\n"
            + ("user mosquitto\n" if os.geteuid() == 0 else ""))
        _own(self.folder, "mosquitto")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15) -> MosquittoServer:
        self.process = subprocess.Popen([self.binary, "-c", str(self.folder / "mosquitto.conf")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"mosquitto exited with {self.process.returncode}:\n{self.log()}")
            if _port_open(self.port):
                return self
            time.sleep(0.05)
        raise AssertionError(f"mosquitto not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        path = self.folder / "mosquitto.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self, graceful: bool = True) -> None:
        """Stop the broker: gracefully it saves its persistent sessions first (as a restart does)."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
        self.process.wait(15)
        self.process = None

    def __enter__(self) -> MosquittoServer:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class MqttListener:
    """A subscriber on a thread of its own, for as long as the ``with`` block: what arrives on ``topic``
    (a filter), in ``messages`` (aiomqtt's)."""

    def __init__(self, port: int, topic: str, version: str) -> None:
        self.port, self.topic, self.version = port, topic, version
        self.messages: list[Any] = []
        self.subscribed = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self._task = self._loop.create_task(self._run())
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._task)
        self._loop.close()

    async def _run(self) -> None:
        import aiomqtt

        protocol = aiomqtt.ProtocolVersion.V5 if self.version == "5" else aiomqtt.ProtocolVersion.V311
        async with aiomqtt.Client("127.0.0.1", self.port, identifier=f"test-dead-{time.monotonic_ns()}",
                                  protocol=protocol) as client:
            await client.subscribe(self.topic, qos=1)
            self.subscribed.set()
            async for message in client.messages:
                self.messages.append(message)

    def __enter__(self) -> MqttListener:
        self._thread.start()
        assert self.subscribed.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(10)
