"""Print the package sources uv is to use here, as uv options: uv does not read pip's
configuration, where this kind of machine keeps its find-links path (torch's CPU build) and
extra indexes. Without any, PyTorch's CPU index beside PyPI (docs/testing.md, "Environments").

    python3 .ci/uv_sources.py      # what the Makefile's UV_SOURCES holds
"""

from __future__ import annotations

import subprocess
import sys

TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def pip_config(key: str) -> list[str]:
    """The values of pip's ``global.<key>`` (none when unset), read by the pip of the
    interpreter running this (the Makefile's ``$(PYTHON)``, which has pip; the venvs do not)."""
    found = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", f"global.{key}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.split() if found.returncode == 0 else []


def sources() -> list[str]:
    """uv's options for the same sources as pip's (``--find-links``, ``--extra-index-url``),
    preferring the best match across them as pip does."""
    options = ["--index-strategy", "unsafe-best-match"]
    links = pip_config("find-links")
    for link in links:
        options += ["--find-links", link]
    if not links:
        options += ["--extra-index-url", TORCH_CPU_INDEX]
    for index in pip_config("extra-index-url"):
        options += ["--extra-index-url", index]
    return options


if __name__ == "__main__":
    print(" ".join(sources()))
