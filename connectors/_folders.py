"""Folders the file sources poll and the file operations act on: local, FTP(S) and SFTP alike.

A ``Folder`` lists entries (name, size, mtime), streams a file out, writes one atomically
(temporary hidden name, then rename), moves and deletes.  The poller (engine/sources/poller.py)
and the file connectors' operations are written once against it.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

CHUNK = 64 * 1024
TEMP_SUFFIX = ".part"


def is_temporary(name: str) -> bool:
    """Hidden or half-written: never polled, never listed as a result."""
    return name.startswith(".") or name.endswith(TEMP_SUFFIX)


def temp_name(name: str) -> str:
    return f".{name}.{os.urandom(4).hex()}{TEMP_SUFFIX}"


def aside_name(name: str) -> str:
    """A name for a file whose name is taken already in the folder it moves to."""
    stem, dot, suffix = name.rpartition(".")
    stamp = f"{time.strftime('%Y%m%dT%H%M%S')}.{os.urandom(2).hex()}"
    return f"{stem}.{stamp}.{suffix}" if dot and stem else f"{name}.{stamp}"


@dataclass(frozen=True)
class Entry:
    name: str
    size: int
    mtime: float  # seconds since the epoch (FTP: as precise as the server says)


class Folder(Protocol):
    """One folder of some file system (local, FTP, SFTP)."""

    location: str  # for logs and the management API: never a password

    async def list(self, pattern: str) -> list[Entry]: ...
    def read(self, name: str) -> AsyncIterator[bytes]: ...
    async def write(self, name: str, chunks: AsyncIterable[bytes]) -> int: ...
    async def move(self, name: str, folder: str, new_name: str | None = None) -> str: ...
    async def delete(self, name: str) -> None: ...
    async def exists(self, name: str) -> bool: ...
    def child(self, sub: str) -> Folder: ...


class LocalFolder:
    """A folder on this machine; blocking calls run on worker threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    def _list(self, pattern: str) -> list[Entry]:
        self.path.mkdir(parents=True, exist_ok=True)
        out = []
        with os.scandir(self.path) as entries:
            for entry in entries:
                if is_temporary(entry.name) or not fnmatch.fnmatchcase(entry.name, pattern):
                    continue
                try:
                    if not entry.is_file():
                        continue
                    stat = entry.stat()
                except FileNotFoundError:
                    continue
                out.append(Entry(entry.name, stat.st_size, stat.st_mtime))
        return out

    async def list(self, pattern: str) -> list[Entry]:
        entries: list[Entry] = await self._run(self._list, pattern)
        return entries

    async def read(self, name: str) -> AsyncIterator[bytes]:
        handle = await self._run(lambda: open(self.path / name, "rb"))  # noqa: SIM115  # closed below, in finally
        try:
            while True:
                chunk = await self._run(handle.read, CHUNK)
                if not chunk:
                    return
                yield chunk
        finally:
            handle.close()

    async def write(self, name: str, chunks: AsyncIterable[bytes]) -> int:
        await self._run(lambda: self.path.mkdir(parents=True, exist_ok=True))
        temp = self.path / temp_name(name)
        out = await self._run(lambda: open(temp, "wb"))  # noqa: SIM115  # closed below on every path
        size = 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                await self._run(out.write, chunk)
            await self._run(out.flush)
            await self._run(os.fsync, out.fileno())
        except BaseException:
            out.close()
            temp.unlink(missing_ok=True)
            raise
        out.close()
        await self._run(os.replace, temp, self.path / name)
        return size

    def _move(self, name: str, folder: str, new_name: str | None) -> str:
        target_dir = (self.path / folder).resolve()
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / (new_name or name)
        if target.exists():
            target = target_dir / aside_name(new_name or name)
        os.replace(self.path / name, target)
        return str(target)

    async def move(self, name: str, folder: str, new_name: str | None = None) -> str:
        moved: str = await self._run(self._move, name, folder, new_name)
        return moved

    async def delete(self, name: str) -> None:
        await self._run((self.path / name).unlink)

    async def exists(self, name: str) -> bool:
        found: bool = await self._run((self.path / name).is_file)
        return found

    def child(self, sub: str) -> LocalFolder:
        return LocalFolder((self.path / sub).resolve())
