"""gp-serve installed into a user's own environment, and its artifact served by the project.

The user's venv has BoTorch 0.16.1 (not the project's 0.18.1; requirements-user-botorch016.txt,
what pip resolved for ``torch==2.13.0 botorch==0.16.1``, installed by uv). A copy of the
checkout is installed there with a plain ``pip install`` (pyproject.toml's ranges, build
isolation, as a user does it): it must add only gp-serve, change no package and bring no
TorchServe. The model is fitted and exported in that environment through
``gp_serve.export_model``
(user_env/fit_and_export.py); the project's TorchServe then serves the artifact, which must
equal that environment's eager posterior.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import torch

from gp_serve.export.gate import relative_error
from gp_serve.handler import gp_artifact
from gp_serve.serving.archive import build_archive, write_model_config
from tests.conftest import REPO

pytestmark = [pytest.mark.server, pytest.mark.slow]

USER_REQUIREMENTS = REPO / "requirements-user-botorch016.txt"
UV = REPO / ".uv" / "bin" / "uv"
SCRIPT = Path(__file__).with_name("user_env") / "fit_and_export.py"
NAME = "gpuser"
TOLERANCE = 1e-8
# What a copy of the checkout leaves out: local environments and build outputs.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "build",
    "logs",
    "model_store",
    "__pycache__",
    "*.egg-info",
    ".pytest_cache",
    ".ruff_cache",
    "wheelhouse",
)


def _pip(python: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), "-m", "pip", *args], check=True, capture_output=True, text=True, timeout=900
    )


def _freeze(python: Path) -> set[str]:
    return set(_pip(python, "freeze", "--all", "--exclude", "pip").stdout.splitlines())


def _user_stack(venv: Path) -> None:
    """The user's venv (with pip) holding their stack, made by uv from the same sources as the
    project's venvs (`.ci/uv_sources.py`); only gp-serve itself is then installed with pip."""
    assert UV.exists(), f"expected uv at {UV} (make install puts it there)"
    subprocess.run(
        [str(UV), "venv", "--quiet", "--seed", "--python", sys.executable, str(venv)],
        check=True,
        timeout=300,
    )
    sources = subprocess.run(
        ["python3", str(REPO / ".ci" / "uv_sources.py")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    subprocess.run(
        [str(UV), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python")]
        + [*sources, "-r", str(USER_REQUIREMENTS)],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def user_env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The user's venv with gp-serve installed, the artifact it exported and its eager
    posterior; also what installing gp-serve changed."""
    root = tmp_path_factory.mktemp("user-env")
    venv = root / "venv"
    python = venv / "bin" / "python"
    _user_stack(venv)
    before = _freeze(python)
    source = root / "gp-serve"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    _pip(python, "install", "--quiet", str(source))
    after = _freeze(python)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    run = subprocess.run(
        [str(python), str(SCRIPT), str(root)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return {
        "venv": venv,
        "python": python,
        "added": after - before,
        "removed": before - after,
        "artifact": root / "model",
        "eager": json.loads((root / "eager.json").read_text()),
        "env": env,
    }


def test_install_adds_only_gp_serve(user_env: dict) -> None:
    """A plain install keeps the user's BoTorch, GPyTorch and torch and brings no
    TorchServe (nor, so, a need for Java)."""
    assert user_env["removed"] == set()
    assert [line.split(" @ ")[0].split("==")[0] for line in user_env["added"]] == ["gp-serve"]
    versions = user_env["eager"]["versions"]
    assert (versions["botorch"], versions["gpytorch"]) == ("0.16.1", "1.15.2")
    assert versions["torch"].startswith("2.13.0")
    # imported from the installed copy, not from this checkout
    assert Path(versions["gp_serve_file"]).is_relative_to(user_env["venv"])
    probe = subprocess.run(
        [
            str(user_env["python"]),
            "-c",
            "import importlib.util as u; print([m for m in ('ts', 'model_archiver', 'orjson') "
            "if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=user_env["env"],
        timeout=60,
    )
    assert probe.stdout.strip() == "[]"


def test_command_in_user_env(user_env: dict) -> None:
    """The installed ``gp-serve`` runs there, without TorchServe, and names its commands."""
    command = user_env["venv"] / "bin" / "gp-serve"
    run = subprocess.run(
        [str(command), "--help"], capture_output=True, text=True, env=user_env["env"], timeout=120
    )
    assert run.returncode == 0, run.stderr
    listed = re.findall(r"^  (\S+)\s", run.stdout.split("commands:")[-1], re.MULTILINE)
    assert {"export", "archive", "serve", "start", "stop", "describe", "score"} <= set(listed)
    # serving needs the [serve] extra: said so, not a traceback
    serve = subprocess.run(
        [str(command), "serve"], capture_output=True, text=True, env=user_env["env"], timeout=120
    )
    assert (serve.returncode, serve.stdout) == (2, "")
    assert serve.stderr == (
        "error: gp-serve serve needs the package 'requests' (gp-serve's [serve] extra), which "
        "is not installed here: pip install '<gp-serve checkout>[serve]'\n"
    )
    described = subprocess.run(
        [str(command), "describe", str(user_env["artifact"])],
        capture_output=True,
        text=True,
        env=user_env["env"],
        timeout=120,
    )
    assert described.returncode == 0, described.stderr
    assert "outputs (2): yield, cost" in described.stdout


def test_artifact_records_the_user_stack(user_env: dict) -> None:
    metadata = gp_artifact.load_metadata(user_env["artifact"])
    assert metadata.input_names == ["speed", "angle", "temperature"]
    assert metadata.output_names == ["yield", "cost"]
    assert metadata.document["versions"]["botorch"] == "0.16.1"


def test_served_equals_user_eager(user_env: dict, server, tmp_path: Path) -> None:
    """The project's TorchServe serves the user's artifact equal to the user's eager
    BoTorch posterior: every size, with and without observation noise, mean, variance and
    the output-major joint covariance."""
    config = write_model_config(tmp_path / "model-config.yaml", minWorkers=1, maxWorkers=1)
    build_archive(user_env["artifact"], server.model_store, NAME, config)
    registered = requests.post(
        f"{server.management_url}/models",
        params={"url": f"{NAME}.mar", "initial_workers": 1, "synchronous": "true"},
        headers=server.headers("management"),
        timeout=300,
    )
    assert registered.status_code == 200, registered.text
    try:
        for case in user_env["eager"]["cases"]:
            for noise, key in ((False, "noiseless"), (True, "noisy")):
                response = requests.post(
                    f"{server.inference_url}/predictions/{NAME}",
                    headers=server.headers(),
                    json={
                        "inputs": case["points"],
                        "covariance": "full",
                        "observation_noise": noise,
                    },
                    timeout=60,
                )
                assert response.status_code == 200, response.text
                answer = response.json()
                assert answer["outputs"] == ["yield", "cost"]
                for part in ("mean", "variance", "covariance"):
                    served = torch.tensor(answer[part], dtype=torch.float64)
                    eager = torch.tensor(case[key][part], dtype=torch.float64)
                    assert served.shape == eager.shape, (part, served.shape, eager.shape)
                    error = relative_error(served, eager)
                    assert error <= TOLERANCE, (len(case["points"]), key, part, error)
    finally:
        requests.delete(
            f"{server.management_url}/models/{NAME}",
            headers=server.headers("management"),
            timeout=120,
        )
