"""The serving side inside the ``.mar``: one package, ``gp_serve/handler/``, imported as
everywhere else, self-contained (no export stage, no BoTorch), and the copy a worker uses
even where another gp-serve is installed."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from gp_serve.handler import gp_artifact
from gp_serve.serving.archive import HANDLER_DIR, build_archive, stage_serving_package
from tests.serving.conftest import Exported


def test_archive_holds_the_package(exported: Exported, tmp_path: Path) -> None:
    mar = build_archive(exported.directory, tmp_path / "store")
    names = set(zipfile.ZipFile(mar).namelist())
    modules = {
        f"gp_serve/handler/{p.relative_to(HANDLER_DIR).as_posix()}"
        for p in HANDLER_DIR.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert modules <= names
    assert {
        "gp_serve/__init__.py",
        "gp_handler.py",
        gp_artifact.POSTERIOR_FILE,
        gp_artifact.METADATA_FILE,
    } <= names
    assert not [n for n in names if n.endswith(".pyc") or n.startswith("gp_serve/export")]
    # no flat copies of the handler's modules beside the entry point
    assert not [n for n in names if "/" not in n and n.endswith(".py") and n != "gp_handler.py"]


def test_staged_package_is_self_contained(tmp_path: Path) -> None:
    """As a worker imports it (the extracted archive first on ``PYTHONPATH``, working
    directory there): the archive's own ``gp_serve`` wins over the installed one, and loading
    the handler imports no export stage, BoTorch or GPyTorch."""
    root = stage_serving_package(tmp_path)
    code = (
        "import sys, gp_handler, gp_serve, gp_serve.handler.gp_artifact as a; "
        "print(gp_serve.__file__); print(a.__file__); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('botorch', 'gpytorch', 'linear_operator') or m.startswith('gp_serve.export')))"
    )
    (root / "gp_handler.py").write_bytes((HANDLER_DIR / "gp_handler.py").read_bytes())
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr
    package, artifact, heavy = run.stdout.splitlines()
    assert Path(package) == root / "gp_serve" / "__init__.py"
    assert Path(artifact) == root / "gp_serve" / "handler" / "gp_artifact.py"
    assert heavy == "[]"
