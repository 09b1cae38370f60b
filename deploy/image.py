"""`interlace build`: the flows baked into an OCI image, pushed or written, without a container engine.

The image is the runtime base image plus one layer that holds the flow folder, at the path the
base names in its ``io.interlace.flows.path`` label (``/srv/interlace/flows`` by default).  The
same flows on the same base give the same digest: the layer is deterministic (see
``deploy.oci.layer``) and every timestamp is the base's own (or SOURCE_DATE_EPOCH).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TextIO

from deploy.oci import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, ImageError, sha256_digest
from deploy.oci.auth import find_credentials
from deploy.oci.base import BaseImage, default_platform, open_base
from deploy.oci.layer import DEFAULT_EXCLUDES, Layer, build_layer
from deploy.oci.layout import Layout
from deploy.oci.reference import Reference, parse_reference
from deploy.oci.registry import Registry
from engine.loader import LoadErrors, load_project

FLOWS_PATH_LABEL = "io.interlace.flows.path"
FLOWS_LABEL = "io.interlace.flows"
DEFAULT_FLOWS_PATH = "/srv/interlace/flows"
BASE_VARIABLE = "INTERLACE_BASE_IMAGE"
# The project publishes its runtime image here, one tag per version (deploy/build-base.sh makes it).
PUBLISHED_BASE = "registry.interlace.dev/interlace/runtime"
# Where that image is looked for instead (a mirror; the tests point it at loopback).
PUBLISHED_VARIABLE = "INTERLACE_PUBLISHED_BASE"


@dataclass
class BuildOptions:
    flows_dir: Path
    tag: str
    base: str | None = None
    output: Path | None = None
    platform: str | None = None  # OS/ARCH; None: this machine's from a multi-platform base, any from a single one
    plain_http: bool = False  # else HTTPS, and plain HTTP for a loopback registry without TLS
    ca_file: str | None = None
    username: str | None = None
    excludes: tuple[str, ...] = DEFAULT_EXCLUDES


@dataclass
class Image:
    manifest: bytes
    manifest_digest: str
    config: bytes
    config_digest: str
    layer: Layer
    base: BaseImage

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": OCI_MANIFEST, "digest": self.manifest_digest, "size": len(self.manifest)}


class Progress:
    """What the build does, one line a step on standard error; a running byte count on a terminal."""

    def __init__(self, stream: TextIO = sys.stderr, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.live = stream.isatty() and not quiet

    def say(self, message: str) -> None:
        if not self.quiet:
            print(message, file=self.stream, flush=True)

    def counting(self, label: str, size: int, chunks: Iterable[bytes]) -> Iterator[bytes]:
        sent, shown = 0, 0.0
        for chunk in chunks:
            sent += len(chunk)
            if self.live and time.monotonic() - shown > 0.2:
                shown = time.monotonic()
                print(f"\r{label} {_size(sent)} / {_size(size)}", end="", file=self.stream, flush=True)
            yield chunk
        if self.live:
            print("\r\033[K", end="", file=self.stream, flush=True)


def build(options: BuildOptions, progress: Progress) -> tuple[Image, str]:
    """Build the image; push it (or write the layout); the pinned reference or layout name and digest."""
    if not options.flows_dir.is_dir():
        raise ImageError(f"{options.flows_dir}: not a folder; `interlace build` bakes a flow folder")
    project = load_project(options.flows_dir)
    target = parse_reference(options.tag)
    if options.output is None and target.registry is None:
        raise ImageError(f"--tag {options.tag}: name the registry to push to (HOST[:PORT]/NAME:TAG), "
                         "or write an OCI layout with --output DIR")
    clients: dict[str, Registry] = {}

    def registry_for(reference: Reference) -> Registry:
        assert reference.registry is not None
        if reference.registry not in clients:
            clients[reference.registry] = Registry(
                reference.registry, plain_http=True if options.plain_http else None, ca_file=options.ca_file,
                credentials=find_credentials(reference.registry,
                                             options.username if reference.registry == target.registry else None))
        return clients[reference.registry]

    try:
        base_name, base = _open_base(options, target, registry_for)
        _check_platform(base, options.platform)
        progress.say(f"base    {base_name} {base.digest} ({_count(len(base.layers), 'layer')}, "
                     f"{_size(sum(layer['size'] for layer in base.layers))})")
        image = assemble(sorted(flow.name for flow in project.flows),
                         options.flows_dir, base, options.excludes)
        progress.say(f"flows   {len(image.layer.files)} files into {_flows_path(base.config)}, "
                     f"layer {image.layer.digest} ({_size(image.layer.size)})")
        if options.output is not None:
            write_layout(image, Layout(options.output), target.tag or "latest", progress)
            return image, f"{options.output}:{target.tag or 'latest'}@{image.manifest_digest}"
        push(image, target, registry_for(target), progress)
        return image, str(target.with_digest(image.manifest_digest))
    finally:
        for client in clients.values():
            client.close()


def assemble(flow_names: list[str], flows_dir: Path, base: BaseImage, excludes: tuple[str, ...]) -> Image:
    """The flows layer, the config and the manifest of the new image (nothing is sent yet)."""
    created = _created(base.config)
    flows_path = _flows_path(base.config)
    layer = build_layer(flows_dir, flows_path, mtime=int(created.timestamp()), excludes=excludes)
    config = copy.deepcopy(base.config)
    stamp = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    config["created"] = stamp
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["diff_ids"] = [*rootfs.get("diff_ids", []), layer.diff_id]
    step = {"created": stamp, "created_by": f"interlace build: {len(layer.files)} files into {flows_path}"}
    config["history"] = [*config.get("history", []), step]
    runtime = config.setdefault("config", {})
    runtime["Labels"] = {**(runtime.get("Labels") or {}), FLOWS_PATH_LABEL: flows_path,
                         FLOWS_LABEL: ",".join(flow_names)}
    config_bytes = _canonical(config)
    config_digest = sha256_digest(config_bytes)
    annotations = {"org.opencontainers.image.base.digest": base.digest, "org.opencontainers.image.created": stamp}
    if base.registry is not None:  # a layout's path is this machine's business, and would change the digest
        annotations["org.opencontainers.image.base.name"] = base.name
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": [*base.layers, {"mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size}],
        "annotations": annotations,
    }
    manifest_bytes = _canonical(manifest)
    return Image(manifest_bytes, sha256_digest(manifest_bytes), config_bytes, config_digest, layer, base)


def push(image: Image, target: Reference, registry: Registry, progress: Progress) -> None:
    name = target.name
    for layer in image.base.layers:
        digest, size = layer["digest"], layer["size"]
        short = digest[:19]
        if registry.has_blob(name, digest):
            progress.say(f"push    layer {short} exists")
            continue
        location = None
        if image.base.registry is registry and image.base.repository:
            location = registry.mount_blob(name, digest, image.base.repository)
            if location is None:
                progress.say(f"push    layer {short} mounted from {image.base.repository}")
                continue
        with image.base.chunks(digest) as chunks:
            registry.upload_blob(name, digest, size, progress.counting(f"push    layer {short}", size, chunks),
                                 location=location)
        progress.say(f"push    layer {short} copied from the base, {_size(size)}")
    for what, digest, data in (("layer", image.layer.digest, image.layer.blob),
                               ("config", image.config_digest, image.config)):
        if registry.has_blob(name, digest):
            progress.say(f"push    {what} {digest[:19]} exists")
        else:
            registry.upload_blob(name, digest, len(data), data)
            progress.say(f"push    {what} {digest[:19]} uploaded, {_size(len(data))}")
    registry.put_manifest(name, target.tag or "latest", image.manifest, OCI_MANIFEST)
    progress.say(f"push    manifest {target} {image.manifest_digest}")


def write_layout(image: Image, layout: Layout, ref_name: str, progress: Progress) -> None:
    copied = 0
    for layer in image.base.layers:
        if not layout.has_blob(layer["digest"]):
            with image.base.chunks(layer["digest"]) as chunks:
                layout.write_blob(layer["digest"], progress.counting(f"write   layer {layer['digest'][:19]}",
                                                                     layer["size"], chunks))
            copied += 1
    layout.write_blob(image.layer.digest, image.layer.blob)
    layout.write_blob(image.config_digest, image.config)
    layout.write_blob(image.manifest_digest, image.manifest)
    layout.tag(image.descriptor(), ref_name)
    copied_text = _count(copied, "base layer")
    progress.say(f"write   {layout.root} as {ref_name!r} ({copied_text} copied) {image.manifest_digest}")


def _check_platform(base: BaseImage, wanted: str | None) -> None:
    """A platform asked for must be the base's: the flows layer runs on the base's Python."""
    found = f"{base.config.get('os', '?')}/{base.config.get('architecture', '?')}"
    if wanted and found != wanted:
        raise ImageError(f"base image {base.name} is {found}, not the {wanted} asked for with --platform")


def published_base() -> str:
    """The project's runtime image for this version, the base when none is named."""
    return f"{os.environ.get(PUBLISHED_VARIABLE) or PUBLISHED_BASE}:{_runtime_version()}"


def base_candidates(options: BuildOptions, target: Reference) -> list[str]:
    """The bases to try, in order: the one named (--base, $INTERLACE_BASE_IMAGE), else
    interlace/runtime:VERSION on the --tag registry (a mirror), then the published one."""
    named = options.base or os.environ.get(BASE_VARIABLE)
    if named:
        return [named]
    mirror = [f"{target.registry}/interlace/runtime:{_runtime_version()}"] if target.registry else []
    return [*mirror, published_base()]


def _open_base(options: BuildOptions, target: Reference, registry_for: Any) -> tuple[str, BaseImage]:
    failures = []
    for name in base_candidates(options, target):
        try:
            return name, open_base(name, options.platform or default_platform(), registry_for)
        except ImageError as exc:
            failures.append(f"  {name}: {exc}")
    raise ImageError("no base image to build on:\n" + "\n".join(failures) + "\n" + next_steps())


def next_steps() -> str:
    """What to do when no base can be read."""
    return f"""what to do next, any one of:
  - name a runtime base you can reach: --base REGISTRY/interlace/runtime:{_runtime_version()} (a registry that \
mirrors the published {PUBLISHED_BASE}), or set {BASE_VARIABLE}
  - build one with a container engine and push it: deploy/build-base.sh REGISTRY (buildah, podman or docker)
  - with no container engine, make one as a local OCI layout: deploy/make-base-layout.sh DIR (umoci), then \
--base oci:DIR:runtime
  (docs/deploy.md, "A first build on this machine", walks through the last one)"""




def _runtime_version() -> str:
    try:
        return version("interlace")
    except PackageNotFoundError:
        return "latest"


def _flows_path(config: dict[str, Any]) -> str:
    labels = (config.get("config") or {}).get("Labels") or {}
    return str(labels.get(FLOWS_PATH_LABEL) or DEFAULT_FLOWS_PATH)


def _created(base_config: dict[str, Any]) -> datetime:
    """SOURCE_DATE_EPOCH when set (reproducible-builds convention), else the base image's own time."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        try:
            return datetime.fromtimestamp(int(os.environ["SOURCE_DATE_EPOCH"]), UTC)
        except ValueError:
            raise ImageError("SOURCE_DATE_EPOCH must be a number of seconds") from None
    try:
        created = datetime.fromisoformat(str(base_config.get("created", "")).replace("Z", "+00:00"))
        return created.astimezone(UTC).replace(microsecond=0)
    except ValueError:
        return datetime.fromtimestamp(0, UTC)


def _canonical(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if count < 1024 or unit == "MiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} MiB"


def _build(args: argparse.Namespace) -> int:
    options = BuildOptions(
        flows_dir=Path(args.dir), tag=args.tag, base=args.base, output=Path(args.output) if args.output else None,
        platform=args.platform, plain_http=args.plain_http, ca_file=args.ca_file,
        username=args.username,
        excludes=tuple(p for p in DEFAULT_EXCLUDES if not (args.include_tests and p.startswith("*.test")))
        + tuple(args.exclude))
    try:
        image, pinned = build(options, Progress(quiet=args.quiet))
    except LoadErrors as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        print(f"{len(exc.errors)} error{'s' if len(exc.errors) != 1 else ''} in {args.dir}: nothing was built",
              file=sys.stderr)
        return 1
    except (ImageError, ValueError) as exc:
        print(f"interlace build: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # an output folder that cannot be written, a file that cannot be read
        print(f"interlace build: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    if args.digest_file:
        Path(args.digest_file).write_text(image.manifest_digest + "\n")
    print(pinned)
    return 0


def add_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "build", help="bake the flows into an OCI image and push it (no container engine needed)",
        description="Bake the flows of DIR into an OCI image: the runtime base image plus one layer holding the "
                    "folder. Pushes it over the OCI distribution API, or writes an OCI layout with --output. The "
                    "same flows on the same base give the same digest. Prints the pushed reference with its "
                    "digest. Credentials: --username with INTERLACE_REGISTRY_PASSWORD, or the auth file of your "
                    "container tool (REGISTRY_AUTH_FILE, containers/auth.json, ~/.docker/config.json).")
    parser.add_argument("dir", metavar="DIR", help="the flow folder (checked like `interlace validate` first)")
    parser.add_argument("--tag", required=True, help="REGISTRY/NAME:TAG to push (with --output, the name in the "
                                                     "layout)")
    parser.add_argument("--base", help=f"the runtime base image: REGISTRY/NAME:TAG or oci:DIR[:NAME] (default "
                                       f"${BASE_VARIABLE}, else interlace/runtime:{_runtime_version()} on the --tag "
                                       f"registry, else the published {published_base()})")
    parser.add_argument("--output", metavar="DIR", help="write an OCI image layout to DIR instead of pushing")
    parser.add_argument("--platform", help=f"OS/ARCH to take from a multi-platform base (default "
                                           f"{default_platform()})")
    parser.add_argument("--plain-http", action="store_true",
                        help="talk HTTP, not HTTPS, to the registries (a loopback registry without TLS is "
                             "reached in HTTP anyway)")
    parser.add_argument("--ca-file", help="trust this CA bundle for the registries' TLS certificates")
    parser.add_argument("--username", help="registry user; the password is read from INTERLACE_REGISTRY_PASSWORD")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="leave out files or folders matching GLOB (a name or a path in DIR); repeatable")
    parser.add_argument("--include-tests", action="store_true", help="bake the *.test.yaml suites too")
    parser.add_argument("--digest-file", help="also write the image's digest to this file")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the pushed reference")
    parser.set_defaults(func=_build)
