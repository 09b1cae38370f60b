"""OCI images without a container engine: references, deterministic layers, the distribution
API (push and pull over HTTP or TLS, with credentials), and the on-disk image layout."""

from __future__ import annotations

import hashlib

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
# a Docker schema 2 image says the same things in other words: the OCI manifest we write names
# its blobs with the OCI media types (the bytes, and so the digests, are the same)
TO_OCI = {DOCKER_CONFIG: OCI_CONFIG, DOCKER_LAYER_GZIP: OCI_LAYER_GZIP}


def sha256_digest(data: bytes) -> str:
    """The content address of ``data``, as manifests and registries write it."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


class ImageError(Exception):
    """Building, pulling or pushing an image failed; the message says what and where."""
