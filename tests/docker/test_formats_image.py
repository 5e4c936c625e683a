"""The compiled formats in the image: ``posterior.pt2`` and ``posterior.onnx`` served from a
mounted model store, as a user deploys them.

The session's portable artifact (tests/conftest.py) is archived twice, once per format
(``handler.format`` in its model-config.yaml), and the image serves both: the AOTInductor
package compiled on the host loads against the image's libtorch, and onnxruntime is in the
image. Every loaded model must answer the healthcheck, and the answers equal eager BoTorch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gp_serve.export.families import eager_moments
from tests.conftest import FORMAT_MODELS, archive_formats
from tests.docker.conftest import HOME, Container, healthy_container, predict

pytestmark = pytest.mark.docker

TOLERANCE = 1e-8


@pytest.fixture(scope="module")
def formats_store(portable_artifact, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("formats-store")
    store = work / "store"
    store.mkdir()
    archive_formats(portable_artifact.directory, store, work)
    for mar in store.iterdir():
        mar.chmod(0o644)  # (the container's user reads the mount)
    store.chmod(0o755)
    return store


@pytest.fixture(scope="module")
def container(image: str, formats_store: Path):
    with healthy_container(
        image, "formats container", "-v", f"{formats_store}:{HOME}/model-store:ro"
    ) as c:
        yield c


@pytest.mark.parametrize("name", list(FORMAT_MODELS))
def test_compiled_format_served_by_the_image(
    container: Container, portable_artifact, name: str
) -> None:
    X = torch.tensor([[0.1, -0.4, 0.7], [1.2, 0.3, -0.9]], dtype=torch.float64)
    response = predict(container, name, json={"inputs": X.tolist(), "observation_noise": True})
    assert response.status_code == 200, response.text
    expected = eager_moments(portable_artifact.model, X, True)
    for key in ("mean", "variance", "covariance"):
        served = torch.tensor(response.json()[key], dtype=torch.float64)
        error = ((served - expected[key]).abs().max() / expected[key].abs().max()).item()
        assert error <= TOLERANCE, (name, key, error)


def test_healthcheck_asked_both_formats(container: Container) -> None:
    health = container.state()["Health"]
    assert health["Status"] == "healthy"
    answered = health["Log"][-1]["Output"].strip()
    assert answered in (
        "healthy: gponnx, gppt2 answered a prediction",
        "healthy: gppt2, gponnx answered a prediction",
    ), answered
