"""The image as gp-serve's KServe ServingRuntime runs it, on the layout `make kserve-layout` writes.

No Kubernetes here: the container gets what the runtime gives it (deploy/kserve/
servingruntime.yaml: its args, env and user; the layout mounted read-only at /mnt/models)
and must pass the v1 and v2 contracts. Only the listeners differ: free loopback ports
through TorchServe's TS_* overrides (as in every Docker test), instead of the pod's 8080.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import requests
import torch
import tritonclient.http as triton
import yaml

from serving.kserve_layout import MOUNT, write_layout
from tests.docker.conftest import ROOT, Container, assert_close

pytestmark = pytest.mark.docker

RUNTIME = ROOT / "deploy" / "kserve" / "servingruntime.yaml"
SERVICE = ROOT / "deploy" / "kserve" / "inferenceservice.yaml"


def runtime_container() -> dict:
    return yaml.safe_load(RUNTIME.read_text())["spec"]["containers"][0]


@pytest.fixture(scope="module")
def layout(baked_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = write_layout(baked_archive, tmp_path_factory.mktemp("kserve") / "layout")
    for path in [out, *out.rglob("*")]:  # readable by the container's uid 1000
        path.chmod(0o755 if path.is_dir() else 0o644)
    return out


@pytest.fixture(scope="module")
def container(image: str, layout: Path):
    spec = runtime_container()
    user = spec["securityContext"]["runAsUser"]
    env = [arg for item in spec["env"] for arg in ("-e", f"{item['name']}={item['value']}")]
    c = Container(image, "--user", f"{user}:{user}", "-v", f"{layout}:{MOUNT}:ro", *env,
                  command=tuple(spec["args"]))
    try:
        print(f"[docker] KServe-layout container healthy after {c.wait_healthy():.1f}s")
        yield c
    finally:
        c.remove()


def test_manifests_agree_with_the_layout() -> None:
    spec = runtime_container()
    assert spec["args"] == [f"--model-store={MOUNT}/model-store",
                            f"--ts-config={MOUNT}/config/config.properties"]
    assert [p["containerPort"] for p in spec["ports"]] == [8080]
    service = yaml.safe_load(SERVICE.read_text())["spec"]["predictor"]
    model = service["model"]
    assert (model["modelFormat"]["name"], model["protocolVersion"]) == ("pytorch", "v2")
    assert model["runtime"] == yaml.safe_load(RUNTIME.read_text())["metadata"]["name"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert model[probe]["httpGet"]["port"] == 8080


def test_layout_config_is_the_pod_config(layout: Path) -> None:
    config = (layout / "config" / "config.properties").read_text()
    assert "inference_address=http://0.0.0.0:8080\n" in config
    assert f"model_store={MOUNT}/model-store\n" in config and "load_models=all\n" in config
    assert "ts_open_inference_protocol=true\n" in config
    assert sorted(p.name for p in (layout / "model-store").iterdir()) == ["gp.mar"]


def test_v1_contract(container: Container, baked_model: dict) -> None:
    X = torch.tensor([[0.2, 0.4], [0.9, 0.1]], dtype=torch.float64)
    response = requests.post(f"{container.url}/v1/models/gp:predict", timeout=60,
                             json={"instances": X.tolist(), "covariance": "diag"})
    assert response.status_code == 200, response.text
    answer = response.json()
    mean, variance = baked_model["module"].mean_var(X)
    assert_close(answer["mean"], mean)
    assert_close([p["variance"] for p in answer["predictions"]], variance)
    bad = requests.post(f"{container.url}/v1/models/gp:predict", timeout=60,
                        json={"instances": [[0.2]]})
    assert bad.status_code == 400
    assert bad.json()["error"] == "instances[0]: expected 2 numbers (inputs ['x1', 'x2']), got 1"


def test_v2_contract_with_tritonclient(container: Container, baked_model: dict) -> None:
    client = triton.InferenceServerClient(container.url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        X = np.array([[0.2, 0.4], [0.9, 0.1], [0.5, 0.5]])
        tensor = triton.InferInput("X", [3, 2], "FP64")
        tensor.set_data_from_numpy(X, binary_data=True)
        result = client.infer("gp", [tensor])
        mean, covariance = baked_model["module"](torch.from_numpy(X))
        assert np.array_equal(result.as_numpy("mean"), mean.numpy())
        assert np.array_equal(result.as_numpy("covariance"), covariance.numpy())
    finally:
        client.close()
