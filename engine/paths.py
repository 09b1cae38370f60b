"""Files a flow names (stylesheets, WSDLs, what they include) come from the flow folder only.

A flow folder is what a gateway team reviews and what `interlace build` bakes into the image;
a name that climbs out of it (``../../etc/passwd``, an absolute path, a symbolic link pointing
elsewhere) would make the flows depend on, or read, whatever the machine holds there.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit


class OutsideFolder(ValueError):
    """A named file that resolves outside the flow folder."""


def inside(folder: Path, name: str | Path) -> Path:
    """``name`` (relative to ``folder``) resolved, links followed; OutsideFolder if it leaves ``folder``."""
    root = Path(folder).resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        raise OutsideFolder(f"{str(name)!r} is outside the flow folder {root}: a flow names files inside its "
                            f"folder only (no .., no absolute paths, no links out)")
    return path


def inside_url(folder: Path, url: str) -> Path:
    """The file a parser asks for by URL (``file:`` or a plain path), if it lies inside ``folder``."""
    parts = urlsplit(url)
    if parts.scheme not in ("", "file"):
        raise OutsideFolder(f"{url!r} is not a file of the flow folder: a flow's files include no URLs")
    return inside(folder, unquote(parts.path))
