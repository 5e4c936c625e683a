#!/usr/bin/env bash
# Fill docker/wheelhouse/ with the wheels the image installs (idempotent; re-runs only fetch
# what is missing). Wheels are for the image's interpreter, not this machine's: CPython 3.11,
# manylinux x86_64. torch must resolve to its CPU build (here: the pip find-links path, e.g.
# /opt/wheels; elsewhere pass PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu).
set -euo pipefail

log() { printf '[docker/wheelhouse] %s\n' "$*" >&2; }

root=$(cd "$(dirname "$0")/.." && pwd)
dest=${WHEELHOUSE:-$root/docker/wheelhouse}
python=${PYTHON:-python3}
mkdir -p "$dest"

platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux_2_12 \
    manylinux2010 manylinux_2_5 manylinux1; do
    platforms+=(--platform "${tag}_x86_64")
done

log "pip download -r requirements.txt -r requirements-uv.txt -> ${dest#"$root"/}"
"$python" -m pip download --quiet --disable-pip-version-check \
    --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 "${platforms[@]}" \
    -r "$root/requirements.txt" -r "$root/requirements-uv.txt" -d "$dest" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)

# (the lock pins the CPU build's local version, torch==X+cpu: the version is what precedes +)
torch_version=$(sed -n 's/^torch==\([^+[:space:]#]*\).*/\1/p' "$root/requirements-serve.txt")
if ! ls "$dest"/torch-"$torch_version"+cpu-*.whl >/dev/null 2>&1; then
    log "no CPU build of torch $torch_version in $dest: the image would pull in CUDA (GBs)."
    log "Put torch-$torch_version+cpu on pip's find-links path or set"
    log "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu, remove $dest/torch-*.whl, retry."
    exit 1
fi
log "$(find "$dest" -name '*.whl' | wc -l) wheels, $(du -sh "$dest" | cut -f1)"
