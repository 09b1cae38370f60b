"""The ``ftp`` kind: an FTP or FTPS server's folder, through aioftp.

```yaml
endpoints:
  partner:
    ftp:
      host: ftp.partner.example
      user: interlace
      password: ${secret.PARTNER_FTP_PASSWORD}
      tls: explicit                 # none | explicit (AUTH TLS) | implicit
      folder: /outbound
flows:
  partner-files:
    source: {ftp: {endpoint: partner, glob: "*.csv", done: done, failed: failed}}
    steps: [...]
```

The same operations as a local folder (write atomically under a hidden name then RNFR/RNTO,
read, list, move, delete) and the same polled source (engine/sources/poller.py: settled files,
claims in the store, done and failed folders).  Connections are pooled: a download streams on
its own connection while others list or move.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import posixpath
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from connectors._file_ops import FILE_OPERATIONS, FileOperations
from connectors._folders import Entry, aside_name, is_temporary, temp_name
from connectors.base import Connector, Operation, register_connector
from engine.errors import BackendRejected, BackendUnreachable

log = logging.getLogger("interlace.connectors.ftp")

POLL_SOURCE_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["endpoint"],
    "properties": {
        "endpoint": {"type": "string", "description": "The endpoint whose folder is polled."},
        "folder": {"type": "string", "description": "A subfolder of the endpoint's folder to poll."},
        "glob": {"type": "string", "description": "Which files, e.g. *.csv (default *)."},
        "poll": {"type": ["string", "number"], "description": "How often the folder is listed (default 5s)."},
        "settle": {"type": ["string", "number"], "description": "How long a file's size must stay unchanged "
                                                                "before it is taken (default 2s)."},
        "done": {"type": ["string", "null"], "description": "Where a processed file goes (relative to the polled "
                                                            "folder; default done); null leaves it."},
        "failed": {"type": "string", "description": "Where a failed file goes, with NAME.error (default failed)."},
        "delete": {"type": "boolean", "description": "Delete a processed file instead of moving it."},
        "concurrency": {"type": "integer", "minimum": 1, "maximum": 16, "description": "Files at once (default 1)."},
        "lease": {"type": ["string", "number"], "description": "How long a claim holds after a crash (default 10m)."},
    },
}


def _client_class() -> Any:
    import aioftp
    from aioftp.client import DataConnectionThrottleStreamIO
    from aioftp.common import SSLSessionBoundContext, async_enterable

    class DeferredTlsClient(aioftp.Client):
        """aioftp shakes hands on a data connection as it connects; vsftpd (and others) start that
        handshake only once the transfer command came, so both would wait.  Here the data
        connection opens plain, the command goes, then TLS starts on it, resuming the control
        connection's TLS session as such servers require."""

        _deferred: Any = None

        async def _open_connection(self, host: str, port: int) -> Any:
            stream = self._stream
            ssl_object = stream.writer.transport.get_extra_info("ssl_object") if stream is not None else None
            if ssl_object is None:
                return await super()._open_connection(host, port)
            self._deferred = SSLSessionBoundContext(ssl.PROTOCOL_TLS_CLIENT, context=ssl_object.context,
                                                    session=ssl_object.session)
            return await asyncio.wait_for(asyncio.open_connection(host, port), self.connection_timeout)

        @async_enterable
        async def get_stream(self, command: Any = None, expected_codes: Any = (), wait_codes: Any = (),
                             censor_after: Any = None, conn_type: Any = "I", offset: int = 0) -> Any:
            reader, writer = await self.get_passive_connection(conn_type)
            if offset:
                await self.command("REST " + str(offset), "350")
            await self.command(command, expected_codes, wait_codes, censor_after)
            context, self._deferred = self._deferred, None
            if context is not None:
                await writer.start_tls(context, server_hostname=self.server_host,
                                       ssl_handshake_timeout=self.connection_timeout)
            return DataConnectionThrottleStreamIO(self, reader, writer, throttles={"_": self.throttle},
                                                  timeout=self.socket_timeout)

    return DeferredTlsClient


def _client_errors() -> tuple[type[BaseException], ...]:
    import aioftp

    return (OSError, asyncio.TimeoutError, aioftp.StatusCodeError, ConnectionError, ssl.SSLError)


class FtpFolder:
    """A folder of an FTP server, on the connector's connection pool."""

    def __init__(self, connector: FtpConnector, path: str) -> None:
        self.connector = connector
        self.path = path
        self.location = f"ftp://{connector.host}:{connector.port}{path}"

    def _p(self, name: str) -> str:
        return posixpath.join(self.path, name)

    def child(self, sub: str) -> FtpFolder:
        return FtpFolder(self.connector, posixpath.normpath(posixpath.join(self.path, sub)))

    async def list(self, pattern: str) -> list[Entry]:
        async with self.connector.session() as client:
            if not await client.exists(self.path):
                await client.make_directory(self.path)
                return []
            out = []
            for path, info in await client.list(self.path, recursive=False):
                name = posixpath.basename(str(path))
                if info.get("type") != "file" or is_temporary(name) or not fnmatch.fnmatchcase(name, pattern):
                    continue
                out.append(Entry(name, int(info.get("size", 0)), _mtime(info.get("modify"))))
            return out

    async def read(self, name: str) -> AsyncIterator[bytes]:
        async with self.connector.session() as client:
            stream = await client.download_stream(self._p(name))
            try:
                async for block in stream.iter_by_block(64 * 1024):
                    yield block
                await stream.finish()
            except BaseException:
                stream.close()
                raise

    async def write(self, name: str, chunks: AsyncIterable[bytes]) -> int:
        temp = self._p(temp_name(name))
        size = 0
        async with self.connector.session() as client:
            if not await client.exists(self.path):
                await client.make_directory(self.path)
            stream = await client.upload_stream(temp)
            try:
                async for chunk in chunks:
                    size += len(chunk)
                    await stream.write(chunk)
                await stream.finish()
            except BaseException:
                stream.close()
                with contextlib.suppress(Exception):
                    await client.remove_file(temp)
                raise
            if await client.exists(self._p(name)):
                await client.remove_file(self._p(name))  # RNTO onto an existing name fails on some servers
            await client.rename(temp, self._p(name))
        return size

    async def move(self, name: str, folder: str, new_name: str | None = None) -> str:
        target_dir = posixpath.normpath(posixpath.join(self.path, folder))
        async with self.connector.session() as client:
            if not await client.exists(self._p(name)):
                raise FileNotFoundError(name)
            if not await client.exists(target_dir):
                await client.make_directory(target_dir)
            target = posixpath.join(target_dir, new_name or name)
            if await client.exists(target):
                target = posixpath.join(target_dir, aside_name(new_name or name))
            await client.rename(self._p(name), target)
        return target

    async def delete(self, name: str) -> None:
        async with self.connector.session() as client:
            if not await client.exists(self._p(name)):
                raise FileNotFoundError(name)
            await client.remove_file(self._p(name))

    async def exists(self, name: str) -> bool:
        async with self.connector.session() as client:
            return bool(await client.exists(self._p(name)) and await client.is_file(self._p(name)))


def _mtime(value: Any) -> float:
    """MLSD's / LIST's modify (YYYYMMDDHHMMSS, UTC) as epoch seconds."""
    if not value:
        return 0.0
    text = str(value).split(".")[0]
    try:
        import calendar

        return float(calendar.timegm(time.strptime(text[:14].ljust(14, "0"), "%Y%m%d%H%M%S")))
    except ValueError:
        return 0.0


@register_connector("ftp")
class FtpConnector(FileOperations, Connector):
    SUMMARY = "An FTP or FTPS server's folder: write files atomically, read, list, move, delete; poll it as a source."
    SCHEMA = {
        "type": "object", "additionalProperties": False, "required": ["host"],
        "description": "An FTP server (FTPS with tls: explicit or implicit) through aioftp.",
        "properties": {
            "host": {"type": "string", "description": "The server's host name or address."},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535, "description": "Default 21 (990 implicit)."},
            "user": {"type": "string", "description": "Default anonymous."},
            "password": {"type": "string", "description": "From ${secret.NAME}, never in the file."},
            "tls": {"enum": ["none", "explicit", "implicit"], "description": "FTPS: explicit (AUTH TLS on the "
                                                                             "plain port) or implicit (default none)."},
            "ca_file": {"type": "string", "description": "CA bundle that signed the server's certificate (relative "
                                                         "to the flow file); default the system's."},
            "verify": {"type": "boolean", "description": "Check the server's certificate (default true)."},
            "folder": {"type": "string", "description": "The base folder on the server (default /)."},
            "timeout": {"type": ["string", "number"], "description": "Connect and read timeout (default 10s)."},
            "connections": {"type": "integer", "minimum": 1, "maximum": 16,
                            "description": "Most connections open at once (default 4)."},
        },
    }
    OPERATIONS = FILE_OPERATIONS
    SOURCES = {"ftp": Operation("Poll a folder of the server: a flow per settled file, then it moves to done or "
                                "failed (never processed twice, even by two replicas).", schema=POLL_SOURCE_SCHEMA,
                                examples=[{"endpoint": "partner", "glob": "*.csv"}])}

    def __init__(self, name: str, config: dict[str, Any], context: Any = None) -> None:
        super().__init__(name, config, context)
        from engine.units import parse_duration

        self.host = str(config["host"])
        self.tls = str(config.get("tls", "none"))
        self.port = int(config.get("port", 990 if self.tls == "implicit" else 21))
        self.user = str(config.get("user", "anonymous"))
        self.password = str(config.get("password", "anon@"))
        self.base = str(config.get("folder", "/"))
        if not self.base.startswith("/"):
            raise ValueError(f"folder must be an absolute path on the server, not {self.base!r}")
        self.timeout = parse_duration(config.get("timeout", 10))
        self.limit = asyncio.Semaphore(int(config.get("connections", 4)))
        self.ca_file = config.get("ca_file")
        self.verify = bool(config.get("verify", True))
        self.targets = (f"{'ftps' if self.tls != 'none' else 'ftp'}://{self.host}:{self.port}{self.base}",)
        self._idle: list[Any] = []
        self._context: ssl.SSLContext | None = None

    def folder(self, sub: str = "") -> FtpFolder:
        return FtpFolder(self, posixpath.normpath(posixpath.join(self.base, sub)) if sub else self.base)

    def _ssl(self) -> ssl.SSLContext:
        if self._context is None:
            from pathlib import Path

            context = ssl.create_default_context(
                cafile=str((Path(self.context.folder) / self.ca_file).resolve()) if self.ca_file else None)
            if not self.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._context = context
        return self._context

    async def _connect(self) -> Any:
        import aioftp

        client = _client_class()(socket_timeout=self.timeout, connection_timeout=self.timeout,
                                 path_timeout=self.timeout, ssl=self._ssl() if self.tls == "implicit" else None)
        try:
            await client.connect(self.host, self.port)
            if self.tls == "explicit":
                await client.upgrade_to_tls(self._ssl())
            elif self.tls == "implicit":
                # TLS came with the connection; the data connections still need asking for (RFC 4217:
                # without PROT P a server that requires encrypted data refuses with 522)
                await client.command("PBSZ 0", "200")
                await client.command("PROT P", "200")
            await client.login(self.user, self.password)
        except _client_errors() as exc:
            client.close()
            if isinstance(exc, aioftp.StatusCodeError) and "530" in str(exc):
                raise BackendRejected(f"endpoint {self.name!r}: the server refused the login") from exc
            raise BackendUnreachable(f"endpoint {self.name!r}: cannot reach the FTP server",
                                     internal=f"{exc.__class__.__name__}: {exc}") from exc
        return client

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Any]:
        """A logged-in client for one operation: reused when the last one went well."""
        async with self.limit:
            client = self._idle.pop() if self._idle else await self._connect()
            try:
                yield client
            except FileNotFoundError:
                self._idle.append(client)
                raise
            except _client_errors() as exc:
                client.close()
                import aioftp

                if isinstance(exc, aioftp.StatusCodeError):
                    raise BackendRejected(f"endpoint {self.name!r}: the FTP server refused: "
                                          f"{' '.join(exc.received_codes)}", internal=str(exc)) from exc
                raise BackendUnreachable(f"endpoint {self.name!r}: the FTP connection failed",
                                         internal=f"{exc.__class__.__name__}: {exc}") from exc
            except BaseException:
                client.close()
                raise
            else:
                self._idle.append(client)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.quit(), 2)
            client.close()

    def needs_server(self) -> bool:
        return True

    def health(self) -> dict[str, Any]:
        return {"idle_connections": len(self._idle), "tls": self.tls}

    async def listen(self, source: str, config: dict[str, Any], deliver: Any) -> None:
        from engine.sources.remote_poll import poll_remote

        await poll_remote(source, self, config, deliver)
