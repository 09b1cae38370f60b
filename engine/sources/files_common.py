"""What the file sources and steps share: settings read once at load, atomic writes, dead
letters in a folder.  (The folders themselves, local and remote: connectors/_folders.py.)"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors._folders import temp_name

if TYPE_CHECKING:
    from engine.compiler import CompileContext, CompiledFlow
    from engine.message import Message


def static_text(ctx: CompileContext, value: Any, key: Any) -> str:
    """A setting that may read ``${env.X || 'default'}``, rendered once at load (no payload)."""
    from engine.compiler import StepConfigError
    from engine.message import Message

    template = ctx.template(value, key)
    if any(expr.uses_payload for expr in template.expressions):
        raise StepConfigError("this setting is read once at load: only ${env.*} is allowed here", key)
    return str(template.render(Message()))


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that it appears whole or not at all (and survives a crash)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(temp_name(path.name))
    with open(temp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)


async def write_dead_letter_file(folder: str, flow: CompiledFlow, msg: Message, error: dict[str, Any]) -> None:
    """The body under the file's own name (or the message id) with ``NAME.error.json`` beside it."""
    base = Path(folder)
    name = str(msg.vars.get("file_name") or msg.vars.get("message_id") or msg.correlation_id or os.urandom(8).hex())
    body = msg.body
    report = json.dumps({"flow": flow.name, "error": error, "headers": dict(msg.headers)}, indent=2, default=str)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, write_atomic, base / name, body)
    await loop.run_in_executor(None, write_atomic, base / f"{name}.error.json", report.encode())
