#!/usr/bin/env bash
# Builds the runtime base image from deploy/Containerfile and pushes it as
# REGISTRY/interlace/runtime:VERSION, the base `interlace build` takes by default.
#
#   deploy/build-base.sh REGISTRY            e.g. deploy/build-base.sh registry.example.internal:5000
#   ENGINE=podman deploy/build-base.sh ...   choose buildah, podman or docker (default: the first found)
#   PLATFORM=linux/arm64 deploy/build-base.sh ...
#   PUSH=0 deploy/build-base.sh ...          build only
#
# Needs buildah, podman or a Docker engine; where none is installed it says so and exits 2, so a
# CI job can run it unconditionally and skip the step on machines without one.
set -euo pipefail

registry="${1:-}"
if [ -z "$registry" ] || [ "$registry" = "-h" ] || [ "$registry" = "--help" ]; then
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    [ -n "$registry" ] && exit 0 || exit 64
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/pyproject.toml" | head -n 1)"
image="$registry/interlace/runtime:$version"

usable() {  # installed, and for docker a daemon that answers (a client alone cannot build)
    command -v "$1" >/dev/null 2>&1 || return 1
    [ "$1" != docker ] || docker info >/dev/null 2>&1
}
engine="${ENGINE:-}"
if [ -z "$engine" ]; then
    for candidate in buildah podman docker; do
        if usable "$candidate"; then engine="$candidate"; break; fi
    done
fi
if [ -z "$engine" ]; then
    echo "build-base: no buildah, podman or reachable Docker engine here; install one" \
         "(Debian: apt-get install buildah)" >&2
    exit 2
fi
usable "$engine" || { echo "build-base: $engine is not installed or its engine does not answer" >&2; exit 2; }

# a registry on this machine talks plain HTTP; docker already treats 127.0.0.0/8 so
tls=()
case "$registry" in
    localhost:*|127.*|\[::1\]:*) [ "$engine" != docker ] && tls=(--tls-verify=false) ;;
esac
platform=()
[ -n "${PLATFORM:-}" ] && platform=(--platform "$PLATFORM")

echo "build-base: $engine building $image" >&2
case "$engine" in
    buildah) buildah bud --format oci "${platform[@]}" --build-arg "VERSION=$version" \
                 -f "$root/deploy/Containerfile" -t "$image" "$root" ;;
    *)       "$engine" build "${platform[@]}" --build-arg "VERSION=$version" \
                 -f "$root/deploy/Containerfile" -t "$image" "$root" ;;
esac
if [ "${PUSH:-1}" != "0" ]; then
    "$engine" push "${tls[@]}" "$image"
    echo "build-base: pushed $image" >&2
fi
echo "$image"
