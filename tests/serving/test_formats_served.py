"""The compiled formats behind a real TorchServe, and the choice of format in model-config.yaml.

``gppt2`` and ``gponnx`` (`conftest.FORMAT_MODELS`) serve the session's portable artifact
(tests/conftest.py) from ``posterior.pt2`` and ``posterior.onnx``: the same REST contract,
eager BoTorch's numbers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import torch
import yaml

from gp_serve.export.families import eager_moments
from gp_serve.handler import gp_artifact
from gp_serve.handler.gp_handler import GPHandler
from gp_serve.serving import archive
from gp_serve.serving.archive import MODEL_CONFIG, build_archive
from tests.serving.conftest import FORMAT_MODELS, Exported
from tests.serving.test_handler import FakeContext

pytestmark = pytest.mark.server

TOLERANCE = 1e-8


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def points(q: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 4 * torch.rand(q, 3, generator=generator, dtype=torch.float64) - 1


@pytest.mark.parametrize("noise", [False, True])
@pytest.mark.parametrize("name", list(FORMAT_MODELS))
def test_compiled_format_served_equals_eager(
    server, portable_artifact, name: str, noise: bool
) -> None:
    X = points(9, seed=31)
    expected = eager_moments(portable_artifact.model, X, noise)
    for covariance in ("full", "diag"):
        response = requests.post(
            f"{server.inference_url}/predictions/{name}",
            timeout=60,
            headers=server.headers(),
            json={"inputs": X.tolist(), "observation_noise": noise, "covariance": covariance},
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        for key in ("mean", "variance") + (("covariance",) if covariance == "full" else ()):
            served = torch.tensor(answer[key], dtype=torch.float64)
            assert relative_error(served, expected[key]) <= TOLERANCE, (key, covariance)


@pytest.mark.parametrize("name", list(FORMAT_MODELS))
def test_compiled_format_describes_itself_and_refuses_bad_input(server, name: str) -> None:
    assert server.metadata(name).document["serving"]["format"] == FORMAT_MODELS[name]
    response = requests.post(
        f"{server.inference_url}/predictions/{name}",
        timeout=60,
        json={"inputs": [[0.1, 0.2]]},
        headers=server.headers(),
    )
    assert response.status_code == 400
    assert response.json()["error"] == (
        "inputs[0]: expected 3 numbers (inputs ['x1', 'x2', 'x3']), got 2"
    ), response.text


def test_handler_refuses_a_format_the_artifact_lacks(exported: Exported, caplog) -> None:
    context = FakeContext(exported.directory)
    context.model_yaml_config["handler"]["format"] = "pt2"
    with pytest.raises(
        RuntimeError,
        match=r"format: model-config.yaml asks for 'pt2', "
        r"the artifact holds \['torchscript'\]",
    ):
        GPHandler().initialize(context)
    assert gp_artifact.LOAD_ERROR_MARKER in caplog.text


def test_archive_refuses_a_format_the_artifact_lacks(exported: Exported, tmp_path: Path) -> None:
    config = yaml.safe_load(MODEL_CONFIG.read_text())
    config["handler"]["format"] = "onnx"
    path = tmp_path / "model-config.yaml"
    path.write_text(yaml.safe_dump(config))
    # (the recipe imports the contract as handler.gp_artifact, the tests as gp_artifact)
    with pytest.raises(
        archive.gp_artifact.ArtifactError,
        match=r"handler.format is 'onnx', but .* was "
        r"exported in \['torchscript'\] only; export with --format "
        r"torchscript,onnx",
    ):
        build_archive(exported.directory, tmp_path / "store", "gp", path)
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_handler_serves_a_compiled_format(portable_artifact, fmt: str) -> None:
    context = FakeContext(portable_artifact.directory)
    context.model_yaml_config["handler"]["format"] = fmt
    handler = GPHandler()
    handler.initialize(context)
    X = points(5, seed=32)
    mean, variance, covariance = handler.predict(X, covariance=True, noisy=True)
    expected = eager_moments(portable_artifact.model, X, True)
    assert relative_error(mean, expected["mean"]) <= TOLERANCE
    assert relative_error(variance, expected["variance"]) <= TOLERANCE
    assert relative_error(covariance, expected["covariance"]) <= TOLERANCE
