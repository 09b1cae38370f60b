"""The loader's own verdict on the folder as the designer has it, unsaved edits included.

The folder's files are staged in a temporary folder with the edited texts in place of the
files on disk, and the engine's loader (or, for a test suite, the suite reader) reads it: the
messages are exactly those ``interlace validate`` and ``interlace run`` would print, with
file, line and column.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from designer.workspace import MAX_FILE_BYTES, Workspace
from engine.loader import LoadError, LoadErrors, load_project
from engine.testing.suite import load_suite


@contextmanager
def staged(workspace: Workspace, texts: dict[str, str]) -> Iterator[Path]:
    """A temporary copy of the folder's own files, with ``texts`` (name -> text) in place."""
    with tempfile.TemporaryDirectory(prefix="interlace-designer-") as temp:
        folder = Path(temp)
        for path in workspace.root.iterdir():
            if path.is_file() and not path.name.startswith(".") and path.resolve().parent == workspace.root \
                    and path.stat().st_size <= MAX_FILE_BYTES and path.name not in texts:
                shutil.copyfile(path, folder / path.name)
        for name, text in texts.items():
            workspace.path(name)  # the same name rules as for the folder itself
            (folder / name).write_text(text, encoding="utf-8")
        yield folder


def problem(error: LoadError, folder: Path) -> dict[str, Any]:
    message = error.message.replace(f"{folder}/", "")
    return {"file": error.file.name, "line": error.line, "column": error.column, "message": message,
            "text": f"{error.file.name}:{error.line}:{error.column}: {message}"}


def lint_folder(folder: Path, suite: str | None = None) -> list[dict[str, Any]]:
    """Every problem the loader finds in the staged folder (and in one suite, if named)."""
    errors: list[LoadError] = []
    try:
        load_project(folder)
    except LoadErrors as exc:
        errors.extend(exc.errors)
    if suite is not None and (folder / suite).is_file():
        try:
            load_suite(folder / suite)
        except LoadErrors as exc:
            errors.extend(exc.errors)
    return [problem(e, folder) for e in errors]
