#!/usr/bin/env bash
# Build the gp-serve image on this kind of machine (what `make docker-image` runs; idempotent).
#
#   docker/build.sh [extra docker build arguments...]
#
# 1. a Docker engine (docker/engine.sh: installs docker.io and starts dockerd if needed);
# 2. a base image (docker/base.sh: BASE_IMAGE if present or pullable, else a local debootstrapped
#    Debian bookworm);
# 3. the wheelhouse (docker/wheelhouse.sh: wheels for the image, so the build needs no index);
# 4. docker build --network host (the engine runs without a bridge), tagged $IMAGE.
#
# Env: IMAGE (default gp-serve:latest), BASE_IMAGE (default python:3.11-slim-bookworm),
#      DOCKER_BUILD_QUIET=1 for quiet output.
set -euo pipefail

log() { printf '[docker/build] %s\n' "$*" >&2; }

root=$(cd "$(dirname "$0")/.." && pwd)
image=${IMAGE:-gp-serve:latest}
start=$SECONDS

"$root/docker/engine.sh"
base=$("$root/docker/base.sh" "${BASE_IMAGE:-python:3.11-slim-bookworm}")
"$root/docker/wheelhouse.sh"

quiet=()
[[ ${DOCKER_BUILD_QUIET:-0} == 1 ]] && quiet=(--quiet)
log "docker build -t $image (base $base)"
# The classic builder: it works with the Debian engine and needs no frontend image.
DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} docker build "${quiet[@]}" --network host \
    --build-arg "BASE_IMAGE=$base" -t "$image" "$@" "$root" >&2
log "built $image in $((SECONDS - start))s: $(docker image ls --format '{{.Size}}' "$image")"
