"""The ``sftp`` kind: a folder on an SSH server, through asyncssh's SFTP client.

```yaml
endpoints:
  archive:
    sftp:
      host: files.example
      user: interlace
      private_key: ${env.SFTP_KEY_FILE || 'keys/interlace'}    # a key file; or password: ${secret.X}
      known_hosts: keys/known_hosts                            # the server's key, checked
      folder: /srv/orders
```

The same operations as a local folder (write atomically: a hidden temporary name, then a
POSIX rename; read streamed; list; move; delete) and the same polled source.  One SSH
connection carries all of them (SFTP requests run concurrently on it); it is opened again
when it drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import posixpath
import stat as stat_module
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any

from connectors._file_ops import FILE_OPERATIONS, FileOperations
from connectors._folders import Entry, aside_name, is_temporary, temp_name
from connectors.base import Connector, Operation, register_connector
from connectors.ftp import POLL_SOURCE_SCHEMA
from engine.errors import BackendRejected, BackendUnreachable


class SftpFolder:
    def __init__(self, connector: SftpConnector, path: str) -> None:
        self.connector = connector
        self.path = path
        self.location = f"sftp://{connector.host}:{connector.port}{path}"

    def _p(self, name: str) -> str:
        return posixpath.join(self.path, name)

    def child(self, sub: str) -> SftpFolder:
        return SftpFolder(self.connector, posixpath.normpath(posixpath.join(self.path, sub)))

    async def list(self, pattern: str) -> list[Entry]:
        async with self.connector.sftp() as sftp:
            await sftp.makedirs(self.path, exist_ok=True)
            out = []
            for item in await sftp.readdir(self.path):
                name = str(item.filename)
                attrs = item.attrs
                if is_temporary(name) or not fnmatch.fnmatchcase(name, pattern):
                    continue
                if attrs.permissions is not None and not stat_module.S_ISREG(attrs.permissions):
                    continue
                out.append(Entry(name, int(attrs.size or 0), float(attrs.mtime or 0)))
            return out

    async def read(self, name: str) -> AsyncIterator[bytes]:
        async with self.connector.sftp() as sftp, sftp.open(self._p(name), "rb") as handle:
            while True:
                block = await handle.read(64 * 1024)
                if not block:
                    return
                yield block

    async def write(self, name: str, chunks: AsyncIterable[bytes]) -> int:
        temp = self._p(temp_name(name))
        size = 0
        async with self.connector.sftp() as sftp:
            await sftp.makedirs(self.path, exist_ok=True)
            try:
                async with sftp.open(temp, "wb") as handle:
                    async for chunk in chunks:
                        size += len(chunk)
                        await handle.write(chunk)
                await sftp.posix_rename(temp, self._p(name))
            except BaseException:
                with contextlib.suppress(Exception):
                    await sftp.remove(temp)
                raise
        return size

    async def move(self, name: str, folder: str, new_name: str | None = None) -> str:
        target_dir = posixpath.normpath(posixpath.join(self.path, folder))
        async with self.connector.sftp() as sftp:
            if not await sftp.isfile(self._p(name)):
                raise FileNotFoundError(name)
            await sftp.makedirs(target_dir, exist_ok=True)
            target = posixpath.join(target_dir, new_name or name)
            if await sftp.exists(target):
                target = posixpath.join(target_dir, aside_name(new_name or name))
            await sftp.posix_rename(self._p(name), target)
        return target

    async def delete(self, name: str) -> None:
        async with self.connector.sftp() as sftp:
            if not await sftp.isfile(self._p(name)):
                raise FileNotFoundError(name)
            await sftp.remove(self._p(name))

    async def exists(self, name: str) -> bool:
        async with self.connector.sftp() as sftp:
            return bool(await sftp.isfile(self._p(name)))


@register_connector("sftp")
class SftpConnector(FileOperations, Connector):
    SUMMARY = "A folder on an SSH server (SFTP): write files atomically, read, list, move, delete; poll it as a source."
    SCHEMA = {
        "type": "object", "additionalProperties": False, "required": ["host", "user"],
        "description": "An SFTP server through asyncssh; the server's host key is checked against known_hosts.",
        "properties": {
            "host": {"type": "string", "description": "The server's host name or address."},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535, "description": "Default 22."},
            "user": {"type": "string", "description": "The SSH user."},
            "password": {"type": "string", "description": "From ${secret.NAME}; or a private_key."},
            "private_key": {"type": "string", "description": "A private key file (relative to the flow file)."},
            "known_hosts": {"type": "string", "description": "A known_hosts file with the server's key (relative "
                                                             "to the flow file). Required unless verify is false."},
            "verify": {"type": "boolean", "description": "Check the server's host key (default true)."},
            "folder": {"type": "string", "description": "The base folder on the server (default: the login's)."},
            "timeout": {"type": ["string", "number"], "description": "Connect timeout (default 10s)."},
        },
    }
    OPERATIONS = FILE_OPERATIONS
    SOURCES = {"sftp": Operation("Poll a folder of the server: a flow per settled file, then it moves to done or "
                                 "failed (never processed twice, even by two replicas).", schema=POLL_SOURCE_SCHEMA,
                                 examples=[{"endpoint": "archive", "glob": "*.xml", "delete": True}])}

    def __init__(self, name: str, config: dict[str, Any], context: Any = None) -> None:
        super().__init__(name, config, context)
        from engine.units import parse_duration

        self.host = str(config["host"])
        self.port = int(config.get("port", 22))
        self.user = str(config["user"])
        self.password = config.get("password")
        folder = Path(self.context.folder)
        self.key_file = str((folder / config["private_key"]).resolve()) if config.get("private_key") else None
        self.known_hosts = str((folder / config["known_hosts"]).resolve()) if config.get("known_hosts") else None
        if self.known_hosts is None and config.get("verify", True):
            raise ValueError("give known_hosts (the server's host key), or verify: false to skip the check")
        if self.password is None and self.key_file is None:
            raise ValueError("give a password or a private_key")
        self.base = str(config.get("folder", "."))
        self.timeout = parse_duration(config.get("timeout", 10))
        self.targets = (f"sftp://{self.host}:{self.port}",)
        self._connection: Any = None
        self._client: Any = None
        self._lock = asyncio.Lock()

    def folder(self, sub: str = "") -> SftpFolder:
        return SftpFolder(self, posixpath.normpath(posixpath.join(self.base, sub)) if sub else self.base)

    async def _open(self) -> Any:
        import asyncssh

        async with self._lock:
            if self._client is not None and self._connection is not None and not self._connection.is_closed():
                return self._client
            await self.close()
            try:
                self._connection = await asyncio.wait_for(asyncssh.connect(
                    self.host, self.port, username=self.user, password=self.password,
                    client_keys=[self.key_file] if self.key_file else None,
                    known_hosts=self.known_hosts, agent_path=None), self.timeout)
                self._client = await self._connection.start_sftp_client()
            except asyncssh.PermissionDenied as exc:
                raise BackendRejected(f"endpoint {self.name!r}: the SSH server refused the login") from exc
            except (TimeoutError, OSError, asyncssh.Error) as exc:
                raise BackendUnreachable(f"endpoint {self.name!r}: cannot reach the SFTP server",
                                         internal=f"{exc.__class__.__name__}: {exc}") from exc
            return self._client

    @contextlib.asynccontextmanager
    async def sftp(self) -> AsyncIterator[Any]:
        import asyncssh

        client = await self._open()
        try:
            yield client
        except asyncssh.SFTPNoSuchFile as exc:
            raise FileNotFoundError(str(exc)) from exc
        except asyncssh.SFTPError as exc:
            raise BackendRejected(f"endpoint {self.name!r}: the SFTP server refused: {exc.reason}") from exc
        except (OSError, asyncssh.Error) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            await self.close()
            raise BackendUnreachable(f"endpoint {self.name!r}: the SFTP connection failed",
                                     internal=f"{exc.__class__.__name__}: {exc}") from exc

    async def close(self) -> None:
        connection, self._connection, self._client = self._connection, None, None
        if connection is not None:
            connection.close()
            with contextlib.suppress(Exception):
                await connection.wait_closed()

    def needs_server(self) -> bool:
        return True

    def health(self) -> dict[str, Any]:
        return {"connected": self._connection is not None}

    async def listen(self, source: str, config: dict[str, Any], deliver: Any) -> None:
        from engine.sources.remote_poll import poll_remote

        await poll_remote(source, self, config, deliver)
