"""The base image a build starts from: a registry reference or an OCI layout (``oci:DIR[:NAME]``).

Only the manifest and the config are read; the base's layers are copied (or mounted, or found
already there) when the image is pushed or written, never unpacked.
"""

from __future__ import annotations

import json
import platform as host_platform
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.oci import INDEX_TYPES, MANIFEST_TYPES, TO_OCI, ImageError
from deploy.oci.layout import Layout
from deploy.oci.reference import parse_reference
from deploy.oci.registry import Registry

_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


def default_platform() -> str:
    machine = host_platform.machine().lower()
    return f"linux/{_ARCHITECTURES.get(machine, machine)}"


@dataclass
class BaseImage:
    name: str  # as the user gave it
    digest: str  # of its manifest
    config: dict[str, Any]
    layers: list[dict[str, Any]]  # descriptors, with OCI media types
    registry: Registry | None = None  # where to copy layers from, when it came from a registry
    repository: str | None = None
    layout: Layout | None = None  # or from an OCI layout

    def chunks(self, digest: str) -> AbstractContextManager[Iterable[bytes]]:
        if self.registry is not None and self.repository is not None:
            return self.registry.blob_stream(self.repository, digest)
        assert self.layout is not None
        return _from_layout(self.layout, digest)


@contextmanager
def _from_layout(layout: Layout, digest: str) -> Iterator[Iterable[bytes]]:
    if not layout.has_blob(digest):
        raise ImageError(f"{layout.root}: blob {digest} is missing from the layout")
    yield layout.blob_chunks(digest)


def open_base(text: str, platform: str, registry_for: Any) -> BaseImage:
    """Read the base named ``text``; ``registry_for(reference)`` gives a client for a registry."""
    if text.startswith("oci:"):
        return _from_oci_layout(text, platform)
    reference = parse_reference(text)
    if reference.registry is None:
        raise ImageError(f"base image {text!r}: name its registry (HOST[:PORT]/NAME:TAG) or give oci:DIR")
    registry: Registry = registry_for(reference)

    def read_manifest(version: str) -> tuple[bytes, str, str]:
        return registry.manifest(reference.name, version)

    def read_blob(digest: str) -> bytes:
        return registry.blob(reference.name, digest)

    digest, config, layers = _resolve(text, platform, reference.version, read_manifest, read_blob)
    return BaseImage(text, digest, config, layers, registry=registry, repository=reference.name)


def _from_oci_layout(text: str, platform: str) -> BaseImage:
    path, ref_name = text[4:], None
    head, colon, tail = path.rpartition(":")
    if colon and "/" not in tail:
        path, ref_name = head, tail
    layout = Layout(Path(path))
    descriptor = layout.find(ref_name)

    def read_manifest(digest: str) -> tuple[bytes, str, str]:
        data = layout.read_blob(digest)
        media_type = descriptor["mediaType"] if digest == descriptor["digest"] else ""
        return data, media_type or json.loads(data).get("mediaType", ""), digest

    digest, config, layers = _resolve(text, platform, descriptor["digest"], read_manifest, layout.read_blob)
    return BaseImage(text, digest, config, layers, layout=layout)


def _resolve(text: str, platform: str, version: str, read_manifest: Any, read_blob: Any
             ) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    data, media_type, digest = read_manifest(version)
    document = _json(data, f"the manifest of {text}")
    media_type = media_type or document.get("mediaType", "")
    if media_type in INDEX_TYPES or "manifests" in document:
        wanted_os, _, wanted_arch = platform.partition("/")
        choices = [m for m in document.get("manifests", [])
                   if m.get("platform", {}).get("os") == wanted_os
                   and m.get("platform", {}).get("architecture") == wanted_arch]
        if not choices:
            offered = sorted(f"{m.get('platform', {}).get('os')}/{m.get('platform', {}).get('architecture')}"
                             for m in document.get("manifests", []))
            raise ImageError(f"base image {text} has no {platform} image (it has {', '.join(offered) or 'none'}); "
                             "choose with --platform")
        data, media_type, digest = read_manifest(choices[0]["digest"])
        document = _json(data, f"the {platform} manifest of {text}")
        media_type = media_type or document.get("mediaType", "")
    if media_type not in MANIFEST_TYPES and "layers" not in document:
        raise ImageError(f"base image {text}: a manifest of type {media_type or 'unknown'} is not an image")
    config = _json(read_blob(document["config"]["digest"]), f"the config of {text}")
    layers = [{"mediaType": TO_OCI.get(layer["mediaType"], layer["mediaType"]), "digest": layer["digest"],
               "size": layer["size"]} for layer in document.get("layers", [])]
    return digest, config, layers


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ImageError(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ImageError(f"{what} is not a JSON object")
    return value
