"""Registry credentials and the token dance of the distribution API.

Credentials come, first found first, from ``--username`` with the password in the environment
variable INTERLACE_REGISTRY_PASSWORD (never from the command line, where ``ps`` shows it), then
from the auth files container tools already keep: $REGISTRY_AUTH_FILE,
$XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json, ~/.docker/config.json.
A registry that answers 401 with a Basic challenge gets them as Basic auth; one with a Bearer
challenge gets a token from its realm for the scope asked for.  They are never printed.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

PASSWORD_VARIABLE = "INTERLACE_REGISTRY_PASSWORD"
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # keeps the password out of tracebacks and debug output
        return f"Credentials(username={self.username!r}, password=***)"

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def auth_files() -> list[Path]:
    files = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    if os.environ.get("XDG_RUNTIME_DIR"):
        files.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    home = Path.home()
    files += [home / ".config" / "containers" / "auth.json", home / ".docker" / "config.json"]
    return files


def find_credentials(registry: str, username: str | None = None) -> Credentials | None:
    """The credentials for ``registry`` (host[:port]), or None to go anonymous."""
    if username:
        password = os.environ.get(PASSWORD_VARIABLE)
        if password is None:
            raise ValueError(f"--username {username} needs the password in the environment variable "
                             f"{PASSWORD_VARIABLE}")
        return Credentials(username, password)
    for file in auth_files():
        try:
            auths = json.loads(file.read_text()).get("auths", {})
        except (OSError, ValueError, AttributeError):
            continue
        for key in (registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/"):
            entry = auths.get(key)
            if isinstance(entry, dict) and entry.get("auth"):
                try:
                    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    raise ValueError(f"{file}: the auth entry of {registry} is not base64 of user:password") from None
                return Credentials(user, password)
    return None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` as ("bearer", {"realm": ..., "service": ...})."""
    scheme, _, params = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(params))
