"""The folder the designer edits: which files it may read and write, and nothing outside it.

A file is named by its bare name (``orders.yaml``), never by a path: a name with a slash, a
leading dot, or one that resolves (through a symlink) outside the folder is refused.  Files
are read only up to ``MAX_FILE_BYTES`` and only when their nesting stays under ``MAX_DEPTH``
(the C parser recurses per level), so a hostile file gives an error, never a crash.
Writes are atomic (a temporary file renamed over the old one) and conditional: the caller
names the hash of the text it edited, and a file changed on disk meanwhile is never
overwritten.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from engine.loader import FLOW_SUFFIXES, TEST_SUFFIXES

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.ya?ml$")


class WorkspaceError(Exception):
    """A request the folder refuses; ``status`` is the HTTP status it maps to."""

    def __init__(self, status: int, title: str, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def nesting_depth(text: str) -> int:
    """How deep the text nests: by flow brackets and by indentation (a cheap upper bound)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
    widest = max((len(line) - len(line.lstrip(" -")) for line in text.splitlines()), default=0)
    return max(deepest, widest // 2)


@dataclass(frozen=True)
class FileText:
    name: str
    text: str

    @property
    def hash(self) -> str:
        return text_hash(self.text)


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise WorkspaceError(404, "No such folder", f"{root} is not a folder")

    def path(self, name: str) -> Path:
        """The file a bare name stands for, inside the folder; else an error."""
        if not _NAME.match(name) or ".." in name:
            raise WorkspaceError(400, "Bad file name",
                                 f"{name!r} is not a file name of this folder (letters, digits, '_', '.', '-', "
                                 f"ending in .yaml or .yml; no folders)")
        path = self.root / name
        resolved = path.resolve()
        if resolved.parent != self.root:
            raise WorkspaceError(403, "Outside the folder", f"{name!r} leads outside the designer's folder")
        return path

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_file() and p.name.endswith(FLOW_SUFFIXES) and _NAME.match(p.name)
                      and p.resolve().parent == self.root)

    @staticmethod
    def is_suite(name: str) -> bool:
        return name.endswith(TEST_SUFFIXES)

    def read(self, name: str) -> FileText:
        path = self.path(name)
        if not path.is_file():
            raise WorkspaceError(404, "No such file", f"{name} does not exist in this folder")
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise WorkspaceError(413, "File too large",
                                 f"{name} is {size} bytes; the designer opens files up to {MAX_FILE_BYTES} bytes")
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WorkspaceError(422, "Not UTF-8", f"{name} is not UTF-8 text ({exc.reason} at byte {exc.start})") \
                from None
        check_text(name, text)
        return FileText(name, text)

    def write(self, name: str, text: str, base: str | None) -> FileText:
        """Write ``text`` if the file still holds what ``base`` hashed (None: a new file)."""
        check_text(name, text)
        path = self.path(name)
        if base is None:
            if path.exists():
                raise WorkspaceError(409, "File exists", f"{name} exists already; open it instead")
        else:
            current = self.read(name)
            if current.hash != base:
                raise WorkspaceError(409, "Changed on disk",
                                     f"{name} was changed on disk since it was opened; reload it (your edits are "
                                     f"kept in the designer until you do)", current_hash=current.hash)
        descriptor, temp = tempfile.mkstemp(prefix=f".{name}.", dir=self.root)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
            if path.exists():
                os.chmod(temp, path.stat().st_mode & 0o7777)
            os.replace(temp, path)
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            raise
        return FileText(name, text)


def check_text(name: str, text: str) -> None:
    if len(text.encode("utf-8")) > MAX_FILE_BYTES:
        raise WorkspaceError(413, "File too large", f"{name} would be over {MAX_FILE_BYTES} bytes")
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise WorkspaceError(422, "Nested too deep",
                             f"{name} nests {depth} levels deep; the designer reads up to {MAX_DEPTH}")
