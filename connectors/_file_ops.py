"""The file operations every folder kind shares (file, ftp, sftp): write, read, list, move, delete.

A kind gives ``folder()`` (a connectors._folders.Folder at its base) and declares
``OPERATIONS = FILE_OPERATIONS``; this mixin compiles the steps' keys at load and runs them.

```yaml
- call: {endpoint: outbox, operation: write, name: "${vars.file_stem}.json"}   # atomically
- call: {endpoint: archive, operation: read, name: "${payload.file}"}         # body = the file
- call: {endpoint: partner, operation: list, glob: "*.csv", into: files}      # [{name, size, modified}]
- call: {endpoint: partner, operation: move, name: "${vars.file_name}", to: archive}
- call: {endpoint: partner, operation: delete, name: "${vars.file_name}"}
```
"""

from __future__ import annotations

import abc
import mimetypes
import posixpath
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from connectors.base import Invocation, Invoke, Operation, Reply, Request
from engine.errors import BackendRejected
from engine.expressions import to_text

if TYPE_CHECKING:
    from connectors._folders import Folder
    from engine.compiler import CompileContext
    from engine.message import Message

NAME = {"type": "string", "description": "The file's name (${...} allowed); a/b.txt is in subfolder a."}
FOLDER = {"type": "string", "description": "A subfolder of the endpoint's folder (${...} allowed)."}

FILE_OPERATIONS: dict[str, Operation] = {
    "write": Operation("Write the message body (streamed) to a file, atomically: a hidden temporary name, then a "
                       "rename. The message is kept; ${vars.NAME} of into gets {name, size}.",
                       schema={"type": "object", "additionalProperties": False, "required": ["name"],
                               "properties": {"name": NAME, "folder": FOLDER}},
                       examples=[{"operation": "write", "name": "${vars.file_stem}.json"}]),
    "read": Operation("Read a file: its content (streamed) becomes the body.",
                      schema={"type": "object", "additionalProperties": False, "required": ["name"],
                              "properties": {"name": NAME, "folder": FOLDER}},
                      examples=[{"operation": "read", "name": "${payload.file}"}]),
    "list": Operation("List the files matching a glob: the payload becomes [{name, size, modified}].",
                      schema={"type": "object", "additionalProperties": False,
                              "properties": {"glob": {"type": "string", "description": "Which files (default *)."},
                                             "folder": FOLDER}},
                      examples=[{"operation": "list", "glob": "*.csv", "into": "files"}]),
    "move": Operation("Move a file into another folder (relative to the endpoint's), optionally renamed.",
                      schema={"type": "object", "additionalProperties": False, "required": ["name", "to"],
                              "properties": {"name": NAME, "folder": FOLDER,
                                             "to": {"type": "string", "description": "The folder it moves to."},
                                             "rename": {"type": "string", "description": "Its new name."}}},
                      examples=[{"operation": "move", "name": "${vars.file_name}", "to": "archive"}]),
    "delete": Operation("Delete a file.",
                        schema={"type": "object", "additionalProperties": False, "required": ["name"],
                                "properties": {"name": NAME, "folder": FOLDER,
                                               "missing_ok": {"type": "boolean",
                                                              "description": "No error when it is not there "
                                                                             "(default false)."}}},
                        examples=[{"operation": "delete", "name": "${vars.file_name}"}]),
}


class FileRequest(Request):
    __slots__ = ("body", "folder", "name", "settings")

    def __init__(self, operation: str, folder: str, name: str, settings: dict[str, Any], body: Any = None) -> None:
        super().__init__(operation)
        self.folder = folder
        self.name = name
        self.settings = settings
        self.body = body

    def replayable(self) -> bool:
        return self.operation != "write" or isinstance(self.body, bytes)

    def view(self) -> dict[str, Any]:
        return {"operation": self.operation, "folder": self.folder, "name": self.name, **self.settings}

    async def content(self) -> tuple[bytes, str | None]:
        """A write's body (a stream is read: a mocked write keeps it), else the view as JSON."""
        if self.operation != "write":
            return await super().content()
        if not isinstance(self.body, (bytes, bytearray)) and self.body is not None:
            self.body = b"".join([chunk async for chunk in self.body])
        return bytes(self.body or b""), mimetypes.guess_type(self.name)[0]


def _safe(name: str, what: str) -> str:
    """A relative path that stays inside the endpoint's folder."""
    clean = posixpath.normpath(name.replace("\\", "/"))
    if not name or clean.startswith(("/", "..")) or clean == ".":
        raise BackendRejected(f"{what} {name!r} must be a relative path inside the endpoint's folder")
    return clean


class FileOperations(abc.ABC):
    """Mixin for connector kinds whose endpoint is a folder: each gives its ``folder``."""

    name: str
    MOCK_MATCH: ClassVar[dict[str, Any]] = {
        "name": {"type": "string", "description": "(files) The file's name; * and ? are wildcards."},
        "folder": {"type": "string", "description": "(files) The subfolder named by the step."},
        "glob": {"type": "string", "description": "(files) A list's glob."},
        "to": {"type": "string", "description": "(files) The folder a move goes to."},
    }

    def mock_reply(self, request: Request, answer: Mapping[str, Any], body: bytes | None,
                   content_type: str | None) -> Reply:
        """A mocked file operation: a read gives the answer's body, a list its payload, a write
        (its content captured) reports name and size; the message is kept otherwise."""
        assert isinstance(request, FileRequest)
        meta = {"name": request.name, **(answer.get("meta") or {})}
        if request.operation == "write":
            meta.setdefault("size", len(request.body) if isinstance(request.body, bytes) else 0)
        if "payload" in answer:
            return Reply(status=None, headers=None, payload=answer["payload"], meta=meta)
        if body is not None:
            return Reply(status=None, headers=None, body=body,
                         content_type=content_type or mimetypes.guess_type(request.name)[0], meta=meta)
        return Reply(status=None, headers=None, body=None, meta=meta)

    @abc.abstractmethod
    def folder(self, sub: str = "") -> Folder:
        """The endpoint's folder, or ``sub`` inside it (checked to stay inside)."""

    def prepare(self, operation: str, config: dict[str, Any], ctx: CompileContext, invoke: Invoke) -> Invocation:
        name = ctx.template(config["name"], "name") if "name" in config else None
        folder = ctx.template(config["folder"], "folder") if "folder" in config else None
        settings: dict[str, Any] = {k: config[k] for k in ("glob", "to", "rename", "missing_ok") if k in config}
        to = ctx.template(config["to"], "to") if "to" in config else None
        rename = ctx.template(config["rename"], "rename") if "rename" in config else None

        async def run(msg: Message) -> Reply:
            sub = to_text(folder.render(msg)) if folder is not None else ""
            file_name = to_text(name.render(msg)) if name is not None else ""
            extra = dict(settings)
            if to is not None:
                extra["to"] = to_text(to.render(msg))
            if rename is not None:
                extra["rename"] = to_text(rename.render(msg))
            body: Any = None
            if operation == "write":
                stream = msg.take_stream()
                body = stream if stream is not None else msg.body
            return await invoke(FileRequest(operation, sub, file_name, extra, body))

        return run

    async def attempt(self, request: Request, target: int) -> Reply:
        assert isinstance(request, FileRequest)
        sub = _safe(request.folder, "folder") if request.folder else ""
        base = self.folder(sub)
        op = request.operation
        if op == "list":
            entries = await base.list(str(request.settings.get("glob", "*")))
            rows = [{"name": e.name, "size": e.size,
                     "modified": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.mtime))}
                    for e in sorted(entries, key=lambda e: e.name)]
            return Reply(status=None, headers=None, payload=rows, meta={"count": len(rows)})
        path = _safe(request.name, "name")
        head, _, leaf = path.rpartition("/")
        folder = base.child(head) if head else base
        if op == "write":
            body = request.body

            async def chunks() -> Any:
                if isinstance(body, (bytes, bytearray)):
                    yield bytes(body)
                else:
                    async for chunk in body:
                        yield chunk

            size = await folder.write(leaf, chunks())
            return Reply(status=None, headers=None, body=None, meta={"name": path, "size": size})
        if op == "read":
            if not await folder.exists(leaf):
                raise BackendRejected(f"endpoint {self.name!r}: no file {path!r}", status=404, code="file-not-found")
            content_type = mimetypes.guess_type(leaf)[0] or "application/octet-stream"
            return Reply(status=None, headers=None, body=None, stream=folder.read(leaf), content_type=content_type,
                         meta={"name": path})
        if op == "move":
            target_folder = _safe(str(request.settings["to"]), "to")
            try:
                moved = await folder.move(leaf, _relative(posixpath.join(sub, head) if sub else head, target_folder),
                                          request.settings.get("rename"))
            except FileNotFoundError:
                raise BackendRejected(f"endpoint {self.name!r}: no file {path!r}", status=404,
                                      code="file-not-found") from None
            return Reply(status=None, headers=None, body=None, meta={"name": path, "moved_to": moved})
        if op == "delete":
            try:
                await folder.delete(leaf)
            except FileNotFoundError:
                if not request.settings.get("missing_ok"):
                    raise BackendRejected(f"endpoint {self.name!r}: no file {path!r}", status=404,
                                          code="file-not-found") from None
            return Reply(status=None, headers=None, body=None, meta={"name": path})
        raise BackendRejected(f"unknown file operation {op!r}")


def _relative(head: str, target: str) -> str:
    """``target`` (relative to the endpoint's folder) as seen from subfolder ``head``."""
    if not head:
        return target
    return posixpath.relpath(target, head)
