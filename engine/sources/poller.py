"""Polling a folder (local, FTP, SFTP): one flow run per settled file, claimed in the store.

Each poll lists the folder (not its subfolders).  A file is taken once it has settled: its size
and modification time unchanged over two listings at least ``settle`` apart (and, where the
clock says so, not modified for ``settle``), so a file still being written waits.  Before it is
processed it is claimed in the store (source, name, size, mtime): two engines polling one folder,
or one engine after a restart, never process it twice.  Each attempt is written down in the store
before it runs: a file whose flow kills the engine is taken again once its claim's lease is over,
with the attempts it had, so the flow's ``on_error.redelivery.max_attempts`` ends it (moved to
``failed``, or to the dead-letter target) instead of a crash loop.  The flow reads the file as a stream;
afterwards it moves to ``done`` (or is deleted), or to ``failed`` with the reason in
``NAME.error`` beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from connectors._folders import Entry, Folder
from engine.message import Message
from engine.sources.base import Outcome, SourceContext
from engine.store import StoreError, current_store

log = logging.getLogger("interlace.sources.poller")


@dataclass(frozen=True)
class PollSettings:
    pattern: str = "*"
    poll: float = 1.0
    settle: float = 1.0
    done: str | None = "done"
    failed: str = "failed"
    delete: bool = False
    concurrency: int = 1
    lease: float = 600.0

    def describe(self) -> dict[str, Any]:
        return {"glob": self.pattern, "poll_seconds": self.poll, "settle_seconds": self.settle, "done": self.done,
                "failed": self.failed, "delete": self.delete, "concurrency": self.concurrency}


def file_vars(entry: Entry, location: str) -> dict[str, Any]:
    name = entry.name
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return {"file_name": name, "file_stem": stem, "file_path": f"{location.rstrip('/')}/{name}",
            "file_size": entry.size, "file_modified": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.mtime))}


def error_report(error: dict[str, Any] | None) -> bytes:
    if not error:
        return b"the flow failed\n"
    lines = [str(error.get("message", "the flow failed"))]
    lines += [f"{key}: {error[key]}" for key in ("code", "status", "step", "attempts") if error.get(key) is not None]
    return ("\n".join(lines) + "\n").encode()


async def _one_chunk(data: bytes) -> Any:
    yield data


class Poller:
    """The loop of one polled folder; ``kind`` names the source for claims (file, ftp, sftp)."""

    def __init__(self, kind: str, folder: Folder, settings: PollSettings) -> None:
        self.kind = kind
        self.folder = folder
        self.settings = settings
        self._seen: dict[str, tuple[int, float, float]] = {}  # name -> size, mtime, since when so

    def _settled(self, entries: list[Entry]) -> list[Entry]:
        now = time.monotonic()
        wall = time.time()
        seen: dict[str, tuple[int, float, float]] = {}
        ready = []
        for entry in entries:
            before = self._seen.get(entry.name)
            same = before is not None and before[:2] == (entry.size, entry.mtime)
            since = before[2] if same and before is not None else now
            seen[entry.name] = (entry.size, entry.mtime, since)
            quiet_here = now - since if same else 0.0
            quiet_clock = wall - entry.mtime  # a file untouched for long is settled on first sight
            if max(quiet_here, quiet_clock if before is None or same else 0.0) >= self.settings.settle:
                ready.append(entry)
        self._seen = seen
        return sorted(ready, key=lambda e: (e.mtime, e.name))

    async def run(self, ctx: SourceContext) -> None:
        store = current_store()
        claims = f"{self.kind}:{ctx.name}"
        slots = asyncio.Semaphore(self.settings.concurrency)
        busy: set[str] = set()
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                await ctx.admit()
                try:
                    entries = await self.folder.list(self.settings.pattern)
                except Exception as exc:  # the server or folder is unavailable: say so, try again
                    ctx.failing(f"cannot list {self.folder.location}: {exc.__class__.__name__}: {exc}")
                    await asyncio.sleep(max(self.settings.poll, 1.0))
                    continue
                ctx.running()
                ready = self._settled(entries)
                ctx.lag(max((time.time() - e.mtime for e in ready if e.name not in busy), default=0.0))
                for entry in ready:
                    if entry.name in busy:
                        continue
                    key = f"{entry.name}:{entry.size}:{entry.mtime}"
                    try:
                        if not await store.claim_file(claims, key, self.settings.lease):
                            continue
                    except StoreError as exc:
                        ctx.failing(str(exc))
                        break
                    await slots.acquire()
                    busy.add(entry.name)
                    task = asyncio.create_task(self._one(ctx, entry, claims, key))
                    tasks.add(task)

                    def finished(t: asyncio.Task[None], name: str = entry.name) -> None:
                        tasks.discard(t)
                        busy.discard(name)
                        slots.release()

                    task.add_done_callback(finished)
                await asyncio.sleep(self.settings.poll)
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _one(self, ctx: SourceContext, entry: Entry, claims: str, key: str) -> None:
        with ctx.working():  # a retiring source is cancelled only once this is done, move included
            content_type = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"

            def make(attempt: int) -> Message:
                msg = Message(method="FILE")
                # the file's writer's data (Source.brings_data): a wrong shape in it is the file's fault
                msg.set_request_body(self.folder.read(entry.name), content_type)
                msg.vars.update(file_vars(entry, self.folder.location))
                msg.vars["attempt"] = attempt
                return msg

            # attempts begun on this file by a process that died in them (the claim's lease ran out)
            try:
                before = await current_store().attempts_made(claims, key)
            except StoreError as exc:
                log.warning("file %s: its earlier attempts cannot be read (%s); counting from 0", entry.name, exc)
                before = 0
            outcome, error = await ctx.deliver(make, origin=f"{self.kind}:{self.folder.location}",
                                               attempts_before=before, record=_recorder(claims, key, entry.name))
            state = "done" if outcome == Outcome.DONE else "failed"
            try:
                if outcome == Outcome.DONE:
                    if self.settings.delete:
                        await self.folder.delete(entry.name)
                    elif self.settings.done is not None:
                        await self.folder.move(entry.name, self.settings.done)
                else:
                    moved = await self.folder.move(entry.name, self.settings.failed)
                    moved_name = moved.rsplit("/", 1)[-1]
                    await self.folder.child(self.settings.failed).write(moved_name + ".error",
                                                                        _one_chunk(error_report(error)))
                    log.warning("file %s failed, moved to %s: %s", entry.name, self.settings.failed,
                                (error or {}).get("message"))
            except FileNotFoundError:
                pass  # removed meanwhile
            except Exception as exc:
                log.warning("file %s: could not move it after the flow (%s): %s", entry.name, state, exc)
            with contextlib.suppress(StoreError):
                await store_finish(claims, key, state)


def _recorder(claims: str, key: str, name: str) -> Callable[[int], Awaitable[None]]:
    """Writes down each attempt before it runs (engine/sources/base.py ``deliver``)."""

    async def record(attempt: int) -> None:
        try:
            await current_store().record_attempt(claims, key, attempt)
        except StoreError as exc:  # the flow runs all the same; only a crash in it would go uncounted
            log.warning("file %s: attempt %d not recorded in the store (%s)", name, attempt, exc)

    return record


async def store_finish(claims: str, key: str, state: str) -> None:
    await current_store().finish_file(claims, key, state)
