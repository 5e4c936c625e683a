"""A user's own model store, mounted read-only over the image's: that model is served instead.

The model is made here the way a user makes one (python -m export on their CSV, then
torch-model-archiver with the repository's handler), with another input dimension and
another name than the default, so the HEALTHCHECK must read this model's own metadata.
"""

from __future__ import annotations

import math
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from gp_serve.handler import gp_artifact
from gp_serve.serving.archive import build_archive
from tests.docker.conftest import HOME, ROOT, Container, assert_close, healthy_container, predict

pytestmark = pytest.mark.docker

INPUTS = ["temperature", "pressure", "flow"]


@pytest.fixture(scope="module")
def user_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tmp/store/mygp.mar: a 3-input, 1-output GP exported and archived as a user would."""
    work = tmp_path_factory.mktemp("user-model")
    rng = random.Random(7)
    rows = ["temperature,pressure,flow,yield"]
    for _ in range(30):
        t, p, f = rng.uniform(300, 400), rng.uniform(1, 5), rng.uniform(0.1, 2.0)
        rows.append(f"{t!r},{p!r},{f!r},{math.sin(t / 20) + p * f + rng.gauss(0, 0.05)!r}")
    (work / "data.csv").write_text("\n".join(rows) + "\n")
    subprocess.run(
        [sys.executable, "-m", "export", "--data", str(work / "data.csv"),
         "--inputs", ",".join(INPUTS), "--outputs", "yield", "--out", str(work / "model")],
        cwd=ROOT, check=True, timeout=600,
    )  # fmt: skip
    store = work / "store"
    store.mkdir()
    build_archive(work / "model", store, "mygp", version="2.0")
    # The container's user (uid 1000) must be able to read the mounted folder.
    store.chmod(0o755)
    (store / "mygp.mar").chmod(0o644)
    return store


@pytest.fixture(scope="module")
def container(image: str, user_store: Path):
    with healthy_container(
        image, "mounted-store container", "-v", f"{user_store}:{HOME}/model-store:ro"
    ) as c:
        yield c


def test_health_probed_the_mounted_model(container: Container) -> None:
    health = container.state()["Health"]
    assert health["Status"] == "healthy"
    assert health["Log"][-1]["Output"].strip() == "healthy: mygp answered a prediction"


def test_mounted_model_is_served(container: Container, user_store: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(user_store / "mygp.mar") as mar:
        mar.extract(gp_artifact.POSTERIOR_FILE, tmp_path)
    module = torch.jit.load(str(tmp_path / gp_artifact.POSTERIOR_FILE))
    points = [[310.0, 2.0, 0.5], [395.5, 4.5, 1.9]]
    response = predict(container, "mygp", json={"inputs": points, "covariance": "diag"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "mygp" and body["outputs"] == ["yield"]
    mean, var = module.mean_var(torch.tensor(points, dtype=torch.float64))
    assert_close(body["mean"], mean)
    assert_close(body["variance"], var)
    # Named inputs work too, and the image's own model is not loaded from the mount.
    named = predict(container, "mygp", json={"inputs": [dict(zip(INPUTS, points[0], strict=True))]})
    assert named.status_code == 200, named.text
    assert_close(named.json()["mean"], mean[:1])
    assert predict(container, "gp", json={"inputs": [[0.1, 0.2]]}).status_code == 404


def test_docker_stop_is_quick(container: Container) -> None:
    seconds = container.stop()
    state = container.state()
    assert seconds < 10, seconds
    assert state["ExitCode"] in (0, 143), state
