"""A folder as one image layer, byte for byte the same for the same files.

Entries are sorted, owned by root with normalised modes, stamped with one fixed time, written
as PAX tar and compressed with a gzip header that holds no name and no time: so the digest
depends on the files' paths and contents alone, not on the clone, the clock or the umask.
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from deploy.oci import ImageError, sha256_digest

# never baked: version control, editors' and Python's leftovers, and the flows' test suites
DEFAULT_EXCLUDES = (".*", "__pycache__", "*.pyc", "*.test.yaml", "*.test.yml")


@dataclass(frozen=True)
class Layer:
    blob: bytes  # the gzip-compressed tar
    digest: str  # of the compressed bytes: what manifests and registries name
    diff_id: str  # of the uncompressed tar: what the image config lists
    files: tuple[str, ...]  # paths inside the image
    size_uncompressed: int

    @property
    def size(self) -> int:
        return len(self.blob)


def collect_files(root: Path, excludes: tuple[str, ...] = DEFAULT_EXCLUDES) -> list[tuple[PurePosixPath, Path]]:
    """(path relative to ``root``, file on disk) for every file to bake, sorted by path.

    A pattern is matched against each name and each relative path, so ``bench`` or ``bench/*``
    leave out a sub-folder.  A symbolic link is baked as the file it points to when that file is
    inside ``root``; one that leads outside is refused, since the image would hold a file the
    folder does not."""
    resolved_root = root.resolve()
    found: list[tuple[PurePosixPath, Path]] = []

    def excluded(relative: PurePosixPath) -> bool:
        return any(fnmatch.fnmatchcase(relative.name, pattern) or fnmatch.fnmatchcase(str(relative), pattern)
                   for pattern in excludes)

    def walk(folder: Path, relative: PurePosixPath) -> None:
        for entry in sorted(folder.iterdir(), key=lambda p: p.name):
            entry_relative = relative / entry.name
            if excluded(entry_relative):
                continue
            if entry.is_symlink():
                target = entry.resolve()
                if not target.is_relative_to(resolved_root):
                    raise ImageError(f"{entry}: a symbolic link to {target}, outside {root}; copy the file into "
                                     "the folder or leave it out with --exclude")
            if entry.is_dir():
                walk(entry, entry_relative)
            elif entry.is_file():
                found.append((entry_relative, entry))

    walk(root, PurePosixPath())
    return sorted(found, key=lambda item: str(item[0]))


def build_layer(root: Path, destination: str, *, mtime: int,
                excludes: tuple[str, ...] = DEFAULT_EXCLUDES) -> Layer:
    """The files of ``root`` placed under ``destination`` (an absolute path in the image)."""
    target = PurePosixPath(destination)
    if not target.is_absolute() or ".." in target.parts:
        raise ImageError(f"the flows' path in the image must be absolute and plain, not {destination!r}")
    files = collect_files(root, excludes)
    if not files:
        raise ImageError(f"{root}: no files to bake (everything is excluded or the folder is empty)")
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directories = {target, *target.parents} - {PurePosixPath("/")}
        for relative, _ in files:
            directories.update(target / parent for parent in relative.parents)
        for directory in sorted(directories, key=str):
            tar.addfile(_entry(str(directory).lstrip("/") + "/", tarfile.DIRTYPE, 0o755, mtime))
        for relative, path in files:
            data = path.read_bytes()
            mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            info = _entry(str(target / relative).lstrip("/"), tarfile.REGTYPE, mode, mtime)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    uncompressed = tar_bytes.getvalue()
    compressed = io.BytesIO()
    # mtime=0 and no file name: the gzip header then holds nothing that changes between builds
    with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=9, mtime=0) as stream:
        stream.write(uncompressed)
    blob = compressed.getvalue()
    return Layer(blob=blob, digest=sha256_digest(blob), diff_id=sha256_digest(uncompressed),
                 files=tuple(str(target / relative) for relative, _ in files), size_uncompressed=len(uncompressed))


def _entry(name: str, kind: bytes, mode: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info
