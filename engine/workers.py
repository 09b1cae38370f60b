"""The worker group: with ``--workers N`` the management API answers for every worker.

The workers share the management port, so a connection lands on any one of them.  Each worker
also serves its own management app, unguarded, on a Unix socket in the group's private folder
(mode 0700, made by the supervisor before it forks: only the engine's user can reach it).  The
worker that takes a management request asks the others there and answers for the group:

- ``GET /metrics``: every worker's samples merged (engine/metrics.py ``merge_families``);
- ``POST /reload``: every worker reloads; the answer reports each (``workers``), and is ok only
  when all of them are;
- ``GET /flows`` and ``GET /endpoints``: each worker's view under ``workers`` (breakers, for one,
  are per worker), with the answering worker's at the top level as before.

A worker that does not answer in time is reported as such (``"error"``), never waited for
forever.
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

PEER_TIMEOUT = 5.0
RELOAD_TIMEOUT = 60.0  # a reload compiles the whole folder again


@dataclass(frozen=True)
class WorkerGroup:
    directory: Path
    index: int
    size: int
    restarts: int = 0  # how often the supervisor has started this worker's place again before this one

    def socket_path(self, index: int) -> Path:
        return self.directory / f"worker-{index}.sock"

    def bind(self) -> socket.socket:
        """The Unix socket of this worker's own management app."""
        path = self.socket_path(self.index)
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sock.listen(64)
        return sock

    async def ask_all(self, method: str, path: str, wait: float = PEER_TIMEOUT) -> list[dict[str, Any]]:
        """``method path`` on every worker's own app (this one's too), in worker order: each answer's
        JSON with ``worker`` (its index), or ``{"worker": i, "error": ...}``."""
        return list(await asyncio.gather(*(self._ask(i, method, path, wait) for i in range(self.size))))

    async def _ask(self, index: int, method: str, path: str, wait: float) -> dict[str, Any]:
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket_path(index)))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://worker", timeout=wait) as client:
                reply = await client.request(method, path)
            body = reply.json()
            return {"worker": index, **body} if isinstance(body, dict) else {"worker": index, "answer": body}
        except (httpx.HTTPError, ValueError, OSError) as exc:
            return {"worker": index, "error": f"worker {index} did not answer: {type(exc).__name__}"}


def worker_info(group: WorkerGroup | None) -> dict[str, Any]:
    return {"worker": group.index if group else 0, "pid": os.getpid()}
