"""The OCI image layout on disk: ``oci-layout``, ``index.json`` and ``blobs/sha256/...``.

Read as a base image (``oci:DIR[:REF]``) and written as a build's output (``--output DIR``); a
tag already in the index is replaced, other entries are kept, as skopeo and umoci do.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from deploy.oci import INDEX_TYPES, ImageError, sha256_digest

REF_NAME = "org.opencontainers.image.ref.name"


class Layout:
    def __init__(self, root: Path) -> None:
        self.root = root

    def blob_path(self, digest: str) -> Path:
        algorithm, _, hex_digest = digest.partition(":")
        return self.root / "blobs" / algorithm / hex_digest

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: str) -> bytes:
        try:
            data = self.blob_path(digest).read_bytes()
        except OSError:
            raise ImageError(f"{self.root}: blob {digest} is missing from the layout") from None
        if sha256_digest(data) != digest:
            raise ImageError(f"{self.root}: blob {digest} does not match its digest")
        return data

    def blob_chunks(self, digest: str, chunk: int = 1 << 20) -> Iterable[bytes]:
        with self.blob_path(digest).open("rb") as file:
            while block := file.read(chunk):
                yield block

    def index(self) -> dict[str, Any]:
        try:
            index = json.loads((self.root / "index.json").read_text())
        except FileNotFoundError:
            raise ImageError(f"{self.root} is not an OCI image layout (no index.json)") from None
        except ValueError as exc:
            raise ImageError(f"{self.root}/index.json: {exc}") from None
        return index if isinstance(index, dict) else {}

    def find(self, ref_name: str | None) -> dict[str, Any]:
        """The descriptor in index.json tagged ``ref_name``, or the only one when none is named."""
        manifests = self.index().get("manifests") or []
        if ref_name is None:
            if len(manifests) != 1:
                names = sorted(m.get("annotations", {}).get(REF_NAME, "?") for m in manifests)
                raise ImageError(f"{self.root} holds {len(manifests)} images ({', '.join(names)}); "
                                 "name one as oci:DIR:NAME")
            return dict(manifests[0])
        for descriptor in manifests:
            if descriptor.get("annotations", {}).get(REF_NAME) == ref_name:
                return dict(descriptor)
        raise ImageError(f"{self.root} has no image named {ref_name!r}")

    # writing

    def write_blob(self, digest: str, content: bytes | Iterable[bytes]) -> bool:
        """Store a blob unless it is there already; True when written.  Checked against ``digest``."""
        path = self.blob_path(digest)
        if path.is_file():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        hasher = hashlib.sha256()
        # written beside the final name and renamed, so an interrupted build leaves no half blob
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as file:
            try:
                for chunk in [content] if isinstance(content, bytes) else content:
                    hasher.update(chunk)
                    file.write(chunk)
            except BaseException:
                os.unlink(file.name)
                raise
        if "sha256:" + hasher.hexdigest() != digest:
            os.unlink(file.name)
            raise ImageError(f"blob {digest}: the bytes do not match the digest")
        os.chmod(file.name, 0o644)
        os.replace(file.name, path)
        return True

    def tag(self, descriptor: dict[str, Any], ref_name: str) -> None:
        """Point ``ref_name`` in index.json at ``descriptor`` (an image manifest already written)."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        index_file = self.root / "index.json"
        index: dict[str, Any] = self.index() if index_file.exists() else {}
        if index.get("mediaType") not in (None, *INDEX_TYPES):
            raise ImageError(f"{index_file} is not an image index")
        kept = [m for m in index.get("manifests") or [] if m.get("annotations", {}).get(REF_NAME) != ref_name]
        entry = {**descriptor, "annotations": {REF_NAME: ref_name}}
        index = {"schemaVersion": 2, "mediaType": INDEX_TYPES[0], "manifests": [*kept, entry]}
        index_file.write_text(json.dumps(index, indent=2) + "\n")
