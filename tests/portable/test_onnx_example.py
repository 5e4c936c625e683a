"""examples/onnx: ``score.py`` in its own venv (numpy, onnx, onnxruntime; no torch) answers
exactly what eager BoTorch answers.

    make install-onnx-example && .venv/bin/python -m pytest -q tests/portable/test_onnx_example.py

Runs ``.venv-onnx/bin/python examples/onnx/score.py`` on the shared exported artifact
(``portable_artifact``) for every method and two batch sizes (one with a reordered header
row); its JSON must equal `export.families.eager_moments` within the export gate's
tolerance. Also: torch cannot be imported in ``.venv-onnx``, and a wrong number of columns
exits 2 with its message. ``make test`` creates ``.venv-onnx``; without it the tests fail.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from gp_serve.export import families, gate
from gp_serve.handler import gp_artifact
from tests.conftest import REPO

pytestmark = pytest.mark.slow

SCORE = REPO / "examples" / "onnx" / "score.py"
VENV_PYTHON = REPO / ".venv-onnx" / "bin" / "python"
# Each method's command line and the name of its second output in the JSON.
ARGS = {
    "forward": ["--method", "forward"],
    "forward_noisy": ["--method", "forward", "--noise"],
    "mean_var": ["--method", "mean_var"],
    "mean_var_noisy": ["--method", "mean_var", "--noise"],
}
SECOND = {
    "forward": "covariance",
    "forward_noisy": "covariance",
    "mean_var": "variance",
    "mean_var_noisy": "variance",
}


@pytest.fixture(scope="module")
def python() -> Path:
    """``.venv-onnx``'s interpreter."""
    if not VENV_PYTHON.exists():
        pytest.fail(f"{VENV_PYTHON} is missing: run `make install-onnx-example` (`make test` does)")
    return VENV_PYTHON


def _run(python: Path, args: list, tmp_path: Path, stdin: str = "") -> subprocess.CompletedProcess:
    """``python *args`` with ``stdin``, in ``tmp_path`` (its temp files there, no bytecode)."""
    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [python, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )


def _metadata(directory: Path) -> dict:
    return json.loads((directory / gp_artifact.METADATA_FILE).read_text())


def _csv(X: torch.Tensor, header: list[str] | None = None) -> str:
    # repr is the shortest text that reads back as the same float64.
    lines = [] if header is None else [",".join(header)]
    lines += [",".join(map(repr, row)) for row in X.tolist()]
    return "".join(line + "\n" for line in lines)


@pytest.mark.parametrize("q", [1, 50])
@pytest.mark.parametrize("method", gp_artifact.METHODS)
def test_matches_eager_botorch(
    python: Path, portable_artifact, tmp_path: Path, method: str, q: int
) -> None:
    directory = portable_artifact.directory
    metadata = _metadata(directory)
    bounds = torch.tensor(metadata["input_bounds"], dtype=torch.float64)
    X = gate.sample_points(bounds, q, seed=gate.GATE_SEED + q)
    # q > 1: a header naming the columns in reverse order (score.py puts them back)
    stdin = _csv(X.flip(-1), metadata["input_names"][::-1]) if q > 1 else _csv(X)
    result = _run(python, [SCORE, directory, *ARGS[method]], tmp_path, stdin)
    assert result.returncode == 0, result.stderr

    answer = json.loads(result.stdout)
    second = SECOND[method]
    assert set(answer) == {"output_names", "mean", second}
    assert answer["output_names"] == metadata["output_names"]
    eager = families.eager_moments(portable_artifact.model, X, method.endswith("_noisy"))
    for key in ("mean", second):
        actual = torch.tensor(answer[key], dtype=torch.float64)
        error = gate.relative_error(actual, eager[key])
        assert error <= gate.TOLERANCE, (key, tuple(actual.shape), error)


def test_torch_is_not_installed(python: Path, tmp_path: Path) -> None:
    result = _run(python, ["-c", "import torch"], tmp_path)
    assert result.returncode == 1
    assert "No module named 'torch'" in result.stderr


def test_wrong_number_of_columns(python: Path, portable_artifact, tmp_path: Path) -> None:
    directory = portable_artifact.directory
    names = _metadata(directory)["input_names"]
    d = len(names)
    row = ",".join(["0.5"] * (d + 1))
    result = _run(python, [SCORE, directory], tmp_path, f"{row}\n{row}\n")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"score.py: line 1: expected {d} columns ({', '.join(names)}), got {d + 1}\n"
    )
