"""The installable package (pyproject.toml): its ranges, its pins and its lazy top level.

No server and no BoTorch import: quick. The editable install itself is `make install`'s.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest
import tomllib
from packaging.requirements import Requirement

from tests.conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# BoTorch's fully Bayesian extra (JAX, NumPyro) is left out of the pinned stack: SAAS is
# exported by BoTorch 0.12 in the compatibility venv (tests/serving/conftest.py).
NOT_PINNED_EXTRAS = {"saas"}


def _requirements() -> list[tuple[str, Requirement]]:
    project = PYPROJECT["project"]
    pairs = [("dependencies", Requirement(text)) for text in project["dependencies"]]
    for extra, texts in project["optional-dependencies"].items():
        if extra not in NOT_PINNED_EXTRAS:
            pairs += [(f"[{extra}]", Requirement(text)) for text in texts]
    return pairs


def test_distribution_and_import_names() -> None:
    assert PYPROJECT["project"]["name"] == "gp-serve"
    assert PYPROJECT["project"]["scripts"] == {"gp-serve": "gp_serve.cli:main"}
    assert set(PYPROJECT["project"]["optional-dependencies"]) >= {
        "serve",
        "formats",
        "saas",
        "client",
    }
    import gp_serve

    assert importlib.metadata.version("gp-serve") == gp_serve.__version__


def test_base_install_is_the_export_stack_as_ranges() -> None:
    """``pip install .`` asks for torch, BoTorch 0.12 through 0.18, GPyTorch and
    linear_operator, each as a range (never one exact version: a user's stays)."""
    requirements = {r.name: r for where, r in _requirements() if where == "dependencies"}
    assert set(requirements) == {"torch", "botorch", "gpytorch", "linear-operator"}
    assert all("==" not in str(r.specifier) for r in requirements.values())
    botorch = requirements["botorch"].specifier
    assert all(botorch.contains(v) for v in ("0.12.0", "0.16.1", "0.18.1"))
    assert not any(botorch.contains(v) for v in ("0.11.3", "0.19.0"))


@pytest.mark.parametrize(("where", "requirement"), _requirements(), ids=lambda value: str(value))
def test_pins_satisfy_the_ranges(where: str, requirement: Requirement) -> None:
    """The project's exact pins (installed in this venv) lie inside every range a user gets,
    so ``make test`` tests versions a user can have."""
    installed = importlib.metadata.version(requirement.name)
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"{where}: {requirement} excludes the pinned {requirement.name}=={installed}"
    )


def test_top_level_imports_nothing_heavy() -> None:
    """``import gp_serve`` loads neither torch nor BoTorch; ``gp_serve.export_model``
    imports the export stage on first use."""
    code = (
        "import sys, gp_serve; heavy = [m for m in ('torch', 'botorch', 'gpytorch') "
        "if m in sys.modules]; assert not heavy, heavy; "
        "from gp_serve import export_model, trace_posterior; "
        "assert 'botorch' in sys.modules; "
        "print(sorted(set(gp_serve.__all__) & set(dir(gp_serve))))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == (
        "['DataError', 'ExportGateError', '__version__', 'export_model', 'trace_posterior']"
    )
