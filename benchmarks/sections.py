"""The benchmarks' raw sections (``<out>/<section>.json``): the package versions they record, and
writing them. Standard library only (`benchmarks.report` imports no torch); docs/benchmarks.md.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path


def versions(names: Iterable[str]) -> dict[str, str]:
    """Python's version, then each installed distribution's in ``names`` (``not installed``)."""
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def write_section(section: dict, out: Path) -> Path:
    """Write ``section`` to ``out/<section name>.json`` (the directory is created)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{section['section']}.json"
    path.write_text(json.dumps(section, indent=1, allow_nan=False) + "\n")
    return path
