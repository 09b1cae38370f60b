#!/usr/bin/env bash
# Makes a runtime base image as a local OCI layout with umoci: no container engine, no registry.
#
#   deploy/make-base-layout.sh DIR                     # DIR:runtime, the runtime's settings only
#   deploy/make-base-layout.sh DIR --from oci:PY:3.11  # on top of an image you have as a layout
#   interlace build flows/ --tag shop/orders:1 --base oci:DIR:runtime --output IMAGE-DIR
#
# It sets what `interlace build` and the manifests expect of a base: user interlace (uid
# 10001), ENTRYPOINT interlace run, CMD /srv/interlace/flows, ports 8290 and 9201, the label
# io.interlace.flows.path, working directory /srv/interlace.  Without --from the image holds
# no Python: it is enough to build and inspect images (and for a host that mounts a Python
# environment, as the tests do), not to run on its own.  --from takes a layout of an image
# that has Python 3.11 and Interlace installed, e.g. one made by deploy/build-base.sh on a
# machine with a container engine and copied here with `skopeo copy docker://... oci:DIR:TAG`.
# Needs umoci (Debian: apt-get install umoci).  Prints the --base value to use.
set -euo pipefail

layout="${1:-}"
if [ -z "$layout" ] || [ "$layout" = "-h" ] || [ "$layout" = "--help" ]; then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    [ -n "$layout" ] && exit 0 || exit 64
fi
shift
from=""
while [ $# -gt 0 ]; do
    case "$1" in
        --from) from="${2:?--from needs oci:DIR:TAG}"; shift 2 ;;
        *) echo "make-base-layout: unknown argument $1" >&2; exit 64 ;;
    esac
done
command -v umoci >/dev/null 2>&1 || {
    echo "make-base-layout: umoci is not installed (Debian: apt-get install umoci)" >&2; exit 2; }

uid=10001
flows=/srv/interlace/flows
image="$layout:runtime"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ -n "$from" ]; then
    source="${from#oci:}"
    source_dir="${source%:*}"
    source_tag="${source##*:}"
    [ "$source" != "$source_dir" ] || { echo "make-base-layout: --from oci:DIR:TAG (name the image)" >&2; exit 64; }
    [ -f "$source_dir/index.json" ] || { echo "make-base-layout: $source_dir is not an OCI layout" >&2; exit 2; }
    [ ! -e "$layout" ] || { echo "make-base-layout: $layout exists; give a new folder with --from" >&2; exit 2; }
    cp -r "$source_dir" "$layout"
    umoci tag --image "$layout:$source_tag" runtime
else
    [ -d "$layout" ] || umoci init --layout "$layout"
    umoci new --image "$image"
fi

rootfs="$work/rootfs"
mkdir -p "$rootfs${flows}" "$rootfs/etc" "$rootfs/tmp"
if [ -z "$from" ]; then
    printf 'root:x:0:0::/root:/bin/sh\ninterlace:x:%s:%s::/nonexistent:/usr/sbin/nologin\n' "$uid" "$uid" \
        >"$rootfs/etc/passwd"
    printf 'root:x:0:\ninterlace:x:%s:\n' "$uid" >"$rootfs/etc/group"
fi
umoci insert --image "$image" "$rootfs" /
umoci config --image "$image" --config.user "$uid:$uid" \
    --config.entrypoint interlace --config.entrypoint run --config.cmd "$flows" \
    --config.exposedports 8290/tcp --config.exposedports 9201/tcp --config.workingdir /srv/interlace \
    --config.env INTERLACE_HOST=0.0.0.0 --config.label "io.interlace.flows.path=$flows" \
    --history.created_by "deploy/make-base-layout.sh"
echo "oci:$image"
