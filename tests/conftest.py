"""Shared by every tier. Hypothesis's files go under pytest's temp dir.

Everything is imported as the installed package names it (``gp_serve.handler.gp_artifact``,
``gp_serve.export``): the venvs install the checkout editable, and the model archive ships
``gp_serve/handler/`` under the same name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.hookimpl(trylast=True)  # after the tmp_path plugin has set up its factory
def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis keeps its cache under pytest's base temp dir, not in the repository."""
    base = config._tmp_path_factory.getbasetemp()  # (pytest's own factory)
    os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(base / "hypothesis"))


@dataclass(frozen=True)
class PortableArtifact:
    """An artifact exported in every format (``posterior.pt``, ``.pt2``, ``.onnx``)."""

    directory: Path
    model: object  # the fitted BoTorch model it came from


@pytest.fixture(scope="session")
def portable_artifact(tmp_path_factory: pytest.TempPathFactory) -> PortableArtifact:
    """A two-output SingleTaskGP (Matern-5/2, Normalize, Standardize) exported in every
    format, once per session: AOTInductor compiles four models (about a minute)."""
    from gp_serve.export.artifact import export_model
    from gp_serve.handler import gp_artifact
    from tests.export.conftest import make_model

    model = make_model(30, 3, 2, seed=5)
    directory = tmp_path_factory.mktemp("portable") / "model"
    export_model(model, directory, formats=tuple(gp_artifact.FORMAT_FILES))
    return PortableArtifact(directory, model)


# The portable artifact served in each compiled format: model name -> ``handler.format``.
FORMAT_MODELS = {"gppt2": "pt2", "gponnx": "onnx"}


def archive_formats(artifact: Path, store: Path, work: Path) -> None:
    """Archive ``artifact`` into ``store`` once per compiled format (`FORMAT_MODELS`), one
    worker each; the model-config files go to ``work``."""
    # (the serving stack's: not in the export-only venvs that share this file)
    from gp_serve.serving.archive import build_archive, write_model_config

    for name, fmt in FORMAT_MODELS.items():
        config = write_model_config(
            work / f"model-config-{fmt}.yaml", {"format": fmt}, minWorkers=1, maxWorkers=1
        )
        build_archive(artifact, store, name, config)
