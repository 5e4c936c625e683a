#!/usr/bin/env bash
# Inside the image build: install requirement files into a virtual environment.
#
#   pip-install.sh VENV REQUIREMENTS...
#
# With wheels in /wheelhouse (make docker-image fills docker/wheelhouse/): offline, with uv
# (`uv pip install --no-index --find-links /wheelhouse`). Without (plain `docker build .` with normal
# internet): torch's CPU build from the PyTorch CPU index first (no other package is taken from
# that index), then everything else from PyPI; the pinned torch is then already satisfied.
set -euo pipefail

venv=$1
shift
reqs=()
for f in "$@"; do reqs+=(-r "$f"); done

# The lines of requirement files, following their `-r other.txt` includes.
# shellcheck disable=SC2094  # only reads $f
requirement_lines() {
    local f inc line
    for f in "$@"; do
        while IFS= read -r line || [[ -n $line ]]; do
            if [[ $line =~ ^-r[[:space:]]*([^[:space:]#]+) ]]; then
                inc=${BASH_REMATCH[1]}
                [[ $inc == /* ]] || inc=$(dirname "$f")/$inc
                requirement_lines "$inc"
            else
                printf '%s\n' "$line"
            fi
        done <"$f"
    done
}

[[ -x $venv/bin/python ]] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --no-cache-dir --disable-pip-version-check)

if compgen -G '/wheelhouse/*.whl' >/dev/null; then
    # uv (pinned in requirements-uv.txt, its wheel in the wheelhouse) installs the same wheels
    # several times faster than pip, bytecode included; it is not kept in the image.
    echo "pip-install: offline, from /wheelhouse, with uv" >&2
    uv_dir=$(mktemp -d)
    "${pip[@]}" --quiet --no-index --find-links /wheelhouse --target "$uv_dir" \
        -r /src/requirements-uv.txt
    "$uv_dir/bin/uv" pip install --quiet --no-cache --compile-bytecode \
        --python "$venv/bin/python" --no-index --find-links /wheelhouse "${reqs[@]}"
    rm -rf "$uv_dir"
else
    echo "pip-install: online (PyPI; torch from ${TORCH_INDEX_URL})" >&2
    torch_pin=$(requirement_lines "$@" | sed -n 's/^\(torch==[^[:space:]#]*\).*/\1/p' | head -n 1)
    if [[ -n $torch_pin ]] && ! "$venv/bin/python" -m pip show -q torch >/dev/null 2>&1; then
        "${pip[@]}" --no-deps --index-url "$TORCH_INDEX_URL" "$torch_pin"
    fi
    "${pip[@]}" "${reqs[@]}"
fi
# Fail the build on a broken or incomplete environment.
"$venv/bin/python" -m pip check
