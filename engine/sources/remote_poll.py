"""Polling a connector's folder (ftp, sftp) as a source: the local poller on a remote Folder."""

from __future__ import annotations

from typing import Any

from engine.sources.poller import Poller, PollSettings
from engine.units import parse_duration


def remote_settings(config: dict[str, Any]) -> PollSettings:
    return PollSettings(pattern=str(config.get("glob", "*")), poll=parse_duration(config.get("poll", 5)),
                        settle=parse_duration(config.get("settle", 2)), done=config.get("done", "done"),
                        failed=str(config.get("failed", "failed")), delete=bool(config.get("delete", False)),
                        concurrency=int(config.get("concurrency", 1)),
                        lease=parse_duration(config.get("lease", 600)))


async def poll_remote(source: str, connector: Any, config: dict[str, Any], deliver: Any) -> None:
    """Run the poller over ``connector.folder(config.folder)`` with the flow's context."""
    folder = connector.folder(str(config.get("folder", "")))
    await Poller(source, folder, remote_settings(config)).run(deliver.ctx)
