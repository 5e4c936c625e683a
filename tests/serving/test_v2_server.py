"""The Open Inference Protocol (KServe v2) through a real TorchServe, with ``tritonclient``.

Answers must equal the in-process module's bit for bit (JSON floats are written in
shortest round-trip form; binary tensors are the float64s themselves).
"""

from __future__ import annotations

import numpy as np
import pytest
import requests
import torch
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from gp_serve.export.gate import variance_of
from gp_serve.handler import gp_artifact
from tests.serving.conftest import Exported

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def client(server) -> triton.InferenceServerClient:
    client = triton.InferenceServerClient(server.inference_url.removeprefix("http://"))
    client.gp_headers = server.headers()  # (the inference key, on every call)
    yield client
    client.close()


@pytest.fixture(scope="module")
def module(exported: Exported):
    return torch.jit.load(str(exported.directory / gp_artifact.POSTERIOR_FILE))


def infer(client, X: np.ndarray, binary: bool, outputs: list[str] | None = None, **parameters):
    tensor = triton.InferInput("X", list(X.shape), "FP64")
    tensor.set_data_from_numpy(X, binary_data=binary)
    requested = (
        None
        if outputs is None
        else [triton.InferRequestedOutput(name, binary_data=binary) for name in outputs]
    )
    return client.infer(
        "gp",
        [tensor],
        outputs=requested,
        parameters=parameters or None,
        headers=dict(client.gp_headers),
    )  # (tritonclient writes into it)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("noisy", [False, True])
def test_tritonclient_full_answer_is_the_module(
    client, module, exported: Exported, binary: bool, noisy: bool
) -> None:
    X = np.random.default_rng(7).uniform(-0.1, 1.1, size=(5, 2))
    result = infer(client, X, binary, ["mean", "variance", "covariance"], observation_noise=noisy)
    mean, covariance = (module.forward_noisy if noisy else module.forward)(torch.from_numpy(X))
    assert np.array_equal(result.as_numpy("mean"), mean.numpy())
    assert np.array_equal(result.as_numpy("covariance"), covariance.numpy())
    assert np.array_equal(result.as_numpy("variance"), variance_of(covariance, 5).numpy())
    answer = result.get_response()
    assert answer["model_name"] == "gp" and answer["model_version"] == "1.0"
    bounds = np.array(gp_artifact.load_metadata(exported.directory).input_bounds)
    outside = ((X < bounds[:, 0]) | (X > bounds[:, 1])).any(axis=1).nonzero()[0].tolist()
    assert outside  # (some points are outside: the answer says which)
    assert answer["parameters"] == {
        "outputs": ["branin", "currin"],
        "covariance_layout": "output-major",
        "observation_noise": noisy,
        "extrapolation": outside,
    }
    assert [o["name"] for o in answer["outputs"]] == ["mean", "variance", "covariance"]


def test_tritonclient_defaults_and_selection(client, module) -> None:
    X = np.random.default_rng(8).uniform(0, 1, size=(300, 2))
    everything = infer(client, X, True)  # tritonclient's default: every output, binary
    assert everything.as_numpy("covariance").shape == (600, 600)
    mean, variance = module.mean_var(torch.from_numpy(X))
    diag = infer(client, X, False, ["variance", "mean"])
    assert [o["name"] for o in diag.get_response()["outputs"]] == ["variance", "mean"]
    assert np.array_equal(diag.as_numpy("mean"), mean.numpy())
    assert np.array_equal(diag.as_numpy("variance"), variance.numpy())
    assert diag.as_numpy("covariance") is None
    by_parameter = infer(client, X, True, None, covariance="diag")
    assert np.array_equal(by_parameter.as_numpy("variance"), variance.numpy())


def test_tritonclient_errors_are_4xx_with_the_rule(client) -> None:
    with pytest.raises(InferenceServerException) as info:
        infer(client, np.zeros((2, 3)), False)
    assert info.value.status() == "400"
    assert info.value.message() == (
        "inputs[0].shape: expected [q, 2] with q >= 1 (inputs ['x1', 'x2']), got [2, 3]"
    )
    with pytest.raises(InferenceServerException) as info:
        infer(client, np.zeros((2, 2)), True, ["std"])
    assert info.value.message() == (
        "outputs[0].name: expected one of ['mean', 'variance', "
        "'covariance', 'samples', 'quantiles', 'acquisition', 'mean_gradient', "
        "'variance_gradient'], each once, got a string (\"std\")"
    )


def test_health_routes(server, client) -> None:
    """TorchServe answers the server's health itself (``ts_open_inference_protocol``);
    it does not route the per-model metadata and readiness paths (documented)."""
    assert client.is_server_live(headers=dict(client.gp_headers))
    assert client.is_server_ready(headers=dict(client.gp_headers))
    base, key = server.inference_url, server.headers()
    assert requests.get(f"{base}/v2/health/live", headers=key, timeout=10).json() == {"live": True}
    assert requests.get(f"{base}/v2/health/ready", headers=key, timeout=10).json() == {
        "ready": True
    }
    assert requests.get(f"{base}/v2/models/gp/ready", headers=key, timeout=10).status_code == 404
    assert requests.get(f"{base}/v2/models/gp", headers=key, timeout=10).status_code in (404, 405)


def test_v1_contract_unchanged(server) -> None:
    answer = requests.post(
        f"{server.inference_url}/v1/models/gp:predict",
        timeout=30,
        headers=server.headers(),
        json={"instances": [[0.5, 0.5]], "covariance": "diag"},
    ).json()
    assert answer["outputs"] == ["branin", "currin"] and len(answer["predictions"]) == 1
