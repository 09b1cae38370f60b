"""What the file sources and steps share: atomic writes and moves, and dead letters in a folder.

A file appears atomically: it is written under a hidden temporary name in the same folder
(``.NAME.<random>.part``, skipped by every poller) and renamed when complete, so a reader
never sees half of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.compiler import CompiledFlow
    from engine.message import Message

TEMP_SUFFIX = ".part"


def is_temporary(name: str) -> bool:
    return name.startswith(".") or name.endswith(TEMP_SUFFIX)


def temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.urandom(4).hex()}{TEMP_SUFFIX}")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that it appears whole or not at all (and survives a crash)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_name(path)
    with open(temp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)


async def write_stream_atomic(path: Path, chunks: AsyncIterable[bytes]) -> int:
    """Write a stream of chunks to ``path`` atomically; returns the bytes written."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, lambda: path.parent.mkdir(parents=True, exist_ok=True))
    temp = temp_name(path)
    out = await loop.run_in_executor(None, open, temp, "wb")
    size = 0
    try:
        async for chunk in chunks:
            size += len(chunk)
            await loop.run_in_executor(None, out.write, chunk)
        await loop.run_in_executor(None, out.flush)
        await loop.run_in_executor(None, os.fsync, out.fileno())
    except BaseException:
        out.close()
        temp.unlink(missing_ok=True)
        raise
    out.close()
    await loop.run_in_executor(None, os.replace, temp, path)
    return size


def move_aside(path: Path, folder: Path) -> Path:
    """Move a processed file into ``folder`` (same file system: a rename); a name already there
    gets a time suffix instead of being overwritten."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists():
        target = folder / f"{path.stem}.{time.strftime('%Y%m%dT%H%M%S')}.{os.urandom(2).hex()}{path.suffix}"
    os.replace(path, target)
    return target


async def write_dead_letter_file(folder: str, flow: CompiledFlow, msg: Message, error: dict[str, Any]) -> None:
    """The body as ``<id>.bin`` (or the file's own name) with ``<name>.error.json`` beside it."""
    base = Path(folder)
    name = str(msg.vars.get("file_name") or msg.vars.get("message_id") or msg.correlation_id or os.urandom(8).hex())
    body = msg.body
    report = json.dumps({"flow": flow.name, "error": error, "headers": dict(msg.headers)}, indent=2, default=str)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, write_atomic, base / name, body)
    await loop.run_in_executor(None, write_atomic, base / f"{name}.error.json", report.encode())
