"""The ``file`` source: poll a local folder for files matching a glob, one flow run per file.

engine/sources/poller.py does the polling (settling, claims in the store, done and failed
folders) for this source and for the FTP and SFTP ones alike.  A hidden or ``*.part`` file is
never taken (that is how files are written atomically).  The flow gets the file's content as a
stream and ``${vars.file_name}``, ``file_stem``, ``file_path``, ``file_size``, ``file_modified``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connectors._folders import LocalFolder
from engine.sources.base import Source, SourceContext, source_kind
from engine.sources.files_common import static_text
from engine.sources.policy import DURATION
from engine.sources.poller import Poller, PollSettings
from engine.units import parse_duration

if TYPE_CHECKING:
    from engine.compiler import CompileContext

log = logging.getLogger("interlace.sources.file")


class FilePollSource(Source):
    kind = "file"
    needs_store = True

    def __init__(self, folder: Path, settings: PollSettings) -> None:
        self.poller = Poller("file", LocalFolder(folder), settings)
        self.folder = folder
        self.settings = settings

    def describe(self) -> dict[str, Any]:
        return {"folder": str(self.folder), **self.settings.describe()}

    async def run(self, ctx: SourceContext) -> None:
        await self.poller.run(ctx)


def poll_settings(config: dict[str, Any], ctx: CompileContext) -> PollSettings:
    """The settings every polled folder shares (file, ftp, sftp), read once at load."""
    done = config.get("done", "done")
    return PollSettings(pattern=str(config.get("glob", "*")), poll=parse_duration(config.get("poll", 1)),
                        settle=parse_duration(config.get("settle", 1)),
                        done=static_text(ctx, done, "done") if done is not None else None,
                        failed=static_text(ctx, config.get("failed", "failed"), "failed"),
                        delete=bool(config.get("delete", False)), concurrency=int(config.get("concurrency", 1)),
                        lease=parse_duration(config.get("lease", 600)))


FOLDER_SCHEMA: dict[str, Any] = {
    "folder": {"type": "string", "description": "The folder to poll (relative to the flow file; ${env.X || "
                                               "'default'} allowed)."},
    "glob": {"type": "string", "description": "Which files, e.g. *.csv (default *)."},
    "poll": {**DURATION, "description": "How often the folder is listed (default 1s)."},
    "settle": {**DURATION, "description": "How long a file's size and modification time must stay unchanged before "
                                         "it is taken: a file still being written waits (default 1s)."},
    "done": {"type": ["string", "null"], "description": "Where a processed file goes (relative to the polled "
                                                       "folder; default done); null leaves it (claims remember it)."},
    "failed": {"type": "string", "description": "Where a file whose flow failed goes, with NAME.error beside it "
                                               "(default failed)."},
    "delete": {"type": "boolean", "description": "Delete a processed file instead of moving it to done."},
    "concurrency": {"type": "integer", "minimum": 1, "maximum": 64, "description": "Files processed at once "
                                                                                     "(default 1)."},
    "lease": {**DURATION, "description": "How long a claimed file stays this process's: after a crash another "
                                        "replica takes it once this is over (default 10m)."},
}


@source_kind(
    "file",
    summary="Poll a local folder: a flow per settled file matching the glob, then the file moves to done or failed "
            "(never processed twice, even by two replicas).",
    schema={"type": "object", "additionalProperties": False, "required": ["folder"], "properties": FOLDER_SCHEMA},
    examples=[{"folder": "${env.INBOX_DIR || 'data/inbox'}", "glob": "*.csv"},
              {"folder": "/var/spool/orders", "glob": "*.xml", "delete": True, "concurrency": 4}],
)
def build_file_poll(config: dict[str, Any], ctx: CompileContext) -> Source:
    folder = (ctx.file.parent / static_text(ctx, config["folder"], "folder")).resolve()
    return FilePollSource(folder, poll_settings(config, ctx))
