"""Type-check the import package ``gp_serve`` as it is installed: mypy cannot follow the editable
install's import hook, so this lays the package out from pyproject.toml's
``tool.setuptools.package-dir`` as links under ``build/typecheck`` and runs mypy there."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"


def main() -> int:
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    shutil.rmtree(TREE, ignore_errors=True)
    for package, source in sorted(package_dir.items()):
        for path in sorted((ROOT / source).rglob("*.py")):
            target = TREE.joinpath(*package.split("."), path.relative_to(ROOT / source))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    return subprocess.call([sys.executable, "-m", "mypy", *sys.argv[1:]], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
