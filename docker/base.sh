#!/usr/bin/env bash
# Print the name of a base image the Dockerfile can build FROM (idempotent).
#
#   docker/base.sh [BASE_IMAGE]      (default: python:3.11-slim-bookworm)
#
# 1. BASE_IMAGE is already in the engine: print it.
# 2. `docker pull BASE_IMAGE` succeeds (bounded by BASE_PULL_TIMEOUT_S, default 60): print it.
# 3. Otherwise (no registry reachable): make an equivalent Debian bookworm base locally with
#    debootstrap from this machine's configured Debian mirror, import it as LOCAL_BASE_IMAGE
#    (default gp-serve-base:bookworm) unless it exists already, and print that name. It has no
#    Python: the Dockerfile installs Debian bookworm's python3 (3.11) when python3 is missing.
#
# Progress goes to stderr; stdout is only the image name.
set -euo pipefail

log() { printf '[docker/base] %s\n' "$*" >&2; }

base=${1:-${BASE_IMAGE:-python:3.11-slim-bookworm}}
local_base=${LOCAL_BASE_IMAGE:-gp-serve-base:bookworm}
suite=bookworm

if docker image inspect "$base" >/dev/null 2>&1; then
    echo "$base"
    exit 0
fi
log "pulling $base"
if timeout "${BASE_PULL_TIMEOUT_S:-60}" docker pull -q "$base" >&2 2>/dev/null; then
    echo "$base"
    exit 0
fi
log "cannot pull $base; using a local Debian $suite base ($local_base)"
if docker image inspect "$local_base" >/dev/null 2>&1; then
    echo "$local_base"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    log "making the local base needs root (debootstrap)"
    exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2 \
        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2; }
fi

# The machine's configured Debian mirrors (deb822 .sources or one-line .list files).
apt_uris() {  # $1: regex the URI must match
    {
        cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[[:space:]]*//p' | tr ' ' '\n'
        cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p'
    } | grep -E "$1" | head -n 1 || true
}
mirror=$(apt_uris '/debian/?$')
security=$(apt_uris '/debian-security/?$')
mirror=${DEBIAN_MIRROR:-${mirror:-http://deb.debian.org/debian}}
security=${DEBIAN_SECURITY_MIRROR:-${security:-http://deb.debian.org/debian-security}}

rootfs=$(mktemp -d /var/tmp/gp-serve-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
log "debootstrap --variant=minbase $suite from $mirror"
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || {
    tail -n 30 "$rootfs.log" >&2
    rm -f "$rootfs.log"
    exit 1
}
rm -f "$rootfs.log"

# Same sources as the official Debian images: the release, its updates and security.
rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: ${mirror%/}
Suites: $suite ${suite}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${security%/}
Suites: ${suite}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
# As in the official images: no recommends, no caches kept.
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$rootfs/etc/apt/apt.conf.d/99-no-recommends"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log

log "importing as $local_base"
tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["bash"]' \
    --message "debootstrap --variant=minbase $suite $mirror" \
    - "$local_base" >&2
echo "$local_base"
