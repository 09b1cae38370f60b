#!/usr/bin/env bash
# Installs the non-Python services the tests run on loopback (Debian packages).
# Outside CI it only installs what is missing when INTERLACE_INSTALL_SERVICES=1;
# tests that need a missing service then skip and name this script.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
packages_file="$here/debian-packages.txt"
[ -f "$packages_file" ] || exit 0
if [ "${CI:-}" != "true" ] && [ "${INTERLACE_INSTALL_SERVICES:-}" != "1" ]; then exit 0; fi
missing=()
while read -r pkg probe _; do
    [ -z "$pkg" ] || [ "${pkg#\#}" != "$pkg" ] && continue
    command -v "$probe" >/dev/null 2>&1 || missing+=("$pkg")
done < "$packages_file"
[ "${#missing[@]}" -eq 0 ] && exit 0
echo "[services] apt-get install ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
made_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
    # keep package scripts from starting system services; fixtures start them on loopback
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
[ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
exit 0
