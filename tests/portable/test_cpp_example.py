"""examples/cpp: the C++ client of ``posterior.pt2`` builds against the torch wheel's libtorch
and answers exactly what eager BoTorch answers.

The example is configured and built once per session under pytest's temp dir (Release, Ninja
when present), then run on the shared exported artifact (``portable_artifact``) for every
method and two batch sizes; its JSON must equal `export.families.eager_moments` within the
export gate's tolerance. Skipped only where there is no C++ compiler or no CMake.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from gp_serve.export import families, gate
from gp_serve.handler import gp_artifact

pytestmark = pytest.mark.slow

SOURCE = Path(__file__).resolve().parents[2] / "examples" / "cpp"
# Each method's name for its second output in the program's JSON.
SECOND = {
    "forward": "covariance",
    "forward_noisy": "covariance",
    "mean_var": "variance",
    "mean_var_noisy": "variance",
}


def _run(command: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, command))} exited {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def _compiler() -> str | None:
    return os.environ.get("CXX") or next(
        filter(None, map(shutil.which, ("c++", "g++", "clang++"))), None
    )


@pytest.fixture(scope="session")
def predict(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built ``predict`` executable."""
    cmake, compiler = shutil.which("cmake"), _compiler()
    if cmake is None or compiler is None:
        pytest.skip(
            f"the C++ example needs CMake and a C++ compiler (cmake: {cmake}, c++: {compiler})"
        )
    build = tmp_path_factory.mktemp("cpp-example")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    _run(
        [
            cmake,
            "-S",
            SOURCE,
            "-B",
            build,
            *generator,
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
        ]
    )
    _run([cmake, "--build", build, "--parallel"])
    return build / "predict"


def _csv(X: torch.Tensor) -> str:
    # repr is the shortest text that reads back as the same float64.
    return "".join(",".join(map(repr, row)) + "\n" for row in X.tolist())


def _metadata(directory: Path) -> gp_artifact.Metadata:
    return gp_artifact.validate(json.loads((directory / gp_artifact.METADATA_FILE).read_text()))


def _points(directory: Path, q: int) -> torch.Tensor:
    bounds = torch.tensor(_metadata(directory).input_bounds, dtype=torch.float64)
    return gate.sample_points(bounds, q, seed=gate.GATE_SEED + q)


@pytest.mark.parametrize("q", [1, 37])
@pytest.mark.parametrize("method", gp_artifact.METHODS)
def test_matches_eager_botorch(predict: Path, portable_artifact, method: str, q: int) -> None:
    directory = portable_artifact.directory
    X = _points(directory, q)
    answer = json.loads(_run([predict, directory, "--method", method], input=_csv(X)).stdout)

    metadata = _metadata(directory)
    assert answer["method"] == method
    assert answer["input_names"] == metadata.input_names
    assert answer["output_names"] == metadata.output_names
    expected = families.eager_moments(portable_artifact.model, X, method.endswith("_noisy"))
    for quantity in ("mean", SECOND[method]):
        actual = torch.tensor(answer[quantity], dtype=torch.float64)
        assert gate.relative_error(actual, expected[quantity]) <= gate.TOLERANCE, (
            f"{method} q={q} {quantity}"
        )


@pytest.mark.parametrize("case", ["too-many-columns", "trailing-comma", "nan", "text", "empty"])
def test_rejects_bad_input(predict: Path, portable_artifact, case: str) -> None:
    """The package does not check its input, so the program must: status 2, one message."""
    directory = portable_artifact.directory
    names = _metadata(directory).input_names
    point = [repr(v) for v in _points(directory, 1)[0].tolist()]
    d, good = len(point), ",".join(point)
    stdin, message = {
        "too-many-columns": (
            f"{good}\n{good},0.5\n",
            f"line 2: expected {d} columns ({', '.join(names)}), got {d + 1}",
        ),
        "trailing-comma": (
            f"{good},\n",
            f'line 1, column {d + 1}: expected a finite number, got ""',
        ),
        "nan": (
            ",".join(["nan", *point[1:]]) + "\n",
            'line 1, column 1: expected a finite number, got "nan"',
        ),
        "text": (
            ",".join([*point[:-1], "x"]) + "\n",
            f'line 1, column {d}: expected a finite number, got "x"',
        ),
        "empty": ("\n\n", "no points on stdin"),
    }[case]
    result = subprocess.run(
        [predict, directory, "--method", "mean_var"], input=stdin, capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert f"predict: {message}" in result.stderr
