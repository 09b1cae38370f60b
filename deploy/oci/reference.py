"""Image references as container tools write them: ``[HOST[:PORT]/]NAME[:TAG][@DIGEST]``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from deploy.oci import ImageError

_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


@dataclass(frozen=True)
class Reference:
    registry: str | None  # host[:port]; None for a name that only makes sense in an OCI layout
    name: str
    tag: str | None = None
    digest: str | None = None

    @property
    def version(self) -> str:
        """What a manifest request asks for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.name, self.tag, digest)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.name}" if self.registry else self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def is_loopback(registry: str) -> bool:
    """Whether ``host[:port]`` is this machine (an IPv6 address is written ``[::1]:5000``)."""
    host = registry[:registry.index("]") + 1] if registry.startswith("[") else registry.split(":")[0]
    return host in LOOPBACK_HOSTS


def parse_reference(text: str) -> Reference:
    """Parse an image reference; the first part is a registry when it has a dot, a port or is localhost."""
    rest, _, digest = text.partition("@")
    if digest and not _DIGEST.match(digest):
        raise ImageError(f"image reference {text!r}: the digest must be sha256: and 64 hex digits")
    registry: str | None = None
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, rest = first, remainder
    name, tag = rest, None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        name, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.match(tag):
            raise ImageError(f"image reference {text!r}: tag {tag!r} may hold letters, digits, '_', '.' and '-' "
                             "(at most 128, not starting with '.' or '-')")
    if not _NAME.match(name):
        raise ImageError(f"image reference {text!r}: the name {name!r} must be lowercase letters and digits, "
                         "separated by '.', '_', '-' or '/'")
    return Reference(registry, name, tag, digest or None)
