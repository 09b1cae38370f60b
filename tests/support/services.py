"""Finding the outside programs a test needs (Debian packages started on loopback).

Outside CI a missing program skips the test and names the command that installs it;
under CI=true it fails the run, since CI installs everything through tests/services/install.sh.
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest

IN_CI = os.environ.get("CI") == "true"


def require_command(command: str, package: str) -> str:
    """Return the path of ``command``; skip (or fail under CI) when it is not installed."""
    path = shutil.which(command) or next(
        (p for p in (f"/usr/sbin/{command}", f"/usr/bin/{command}", f"/usr/lib/postgresql/15/bin/{command}")
         if os.path.exists(p)),
        None,
    )
    if path:
        return path
    message = (
        f"{command} is not installed: run `apt-get install {package}` "
        f"(or `INTERLACE_INSTALL_SERVICES=1 bash tests/services/install.sh`)"
    )
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
