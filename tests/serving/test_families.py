"""Every export family through a real TorchServe: the same REST contract, eager's numbers.

The served models (`conftest.FAMILY_MODELS`: list, multitask, Kronecker and SAAS, the last
fitted with NUTS in JAX/NumPyro) are fitted on the default data (with missing outputs where
the family allows them); each answer equals eager BoTorch's posterior of the fitted model
(output-major covariance, <= 1e-9 relative) and the in-process TorchScript module.
"""

from __future__ import annotations

import pytest
import requests
import torch

from gp_serve.export.families import eager_moments
from gp_serve.handler import gp_artifact
from tests.serving.conftest import FAMILY_MODELS
from tests.serving.test_server import TOLERANCE, points, relative_error

pytestmark = pytest.mark.server

SERVED = list(FAMILY_MODELS)
CORRELATED = {"gplist": False, "gpmultitask": True, "gpkronecker": True, "gpsaas": False}
CLASSES = {
    "gplist": "ModelListGP",
    "gpmultitask": "MultiTaskGP",
    "gpkronecker": "KroneckerMultiTaskGP",
    "gpsaas": "SaasFullyBayesianSingleTaskGP",
}


@pytest.mark.parametrize("noise", [False, True])
@pytest.mark.parametrize("name", SERVED)
def test_family_served_equals_eager(
    server, request: pytest.FixtureRequest, name: str, noise: bool
) -> None:
    exported = request.getfixturevalue("family_exports")[name]
    X = points(6, seed=21)
    response = requests.post(
        f"{server.inference_url}/predictions/{name}",
        timeout=60,
        json={"inputs": X.tolist(), "observation_noise": noise},
        headers=server.headers(),
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["outputs"] == exported.output_names and answer["model"] == name
    assert answer["covariance_layout"] == gp_artifact.COVARIANCE_LAYOUT
    mean, variance, covariance = (
        torch.tensor(answer[key], dtype=torch.float64) for key in ("mean", "variance", "covariance")
    )
    module = torch.jit.load(str(exported.directory / gp_artifact.POSTERIOR_FILE))
    traced = dict(
        zip(("mean", "covariance"), (module.forward_noisy if noise else module)(X), strict=True)
    )
    traced["variance"] = (module.mean_var_noisy if noise else module.mean_var)(X)[1]
    eager = eager_moments(exported.model, X, noise)
    for key, served in (("mean", mean), ("variance", variance), ("covariance", covariance)):
        assert relative_error(served, traced[key]) <= TOLERANCE, key
    for key, served in (("mean", mean), ("variance", variance), ("covariance", covariance)):
        assert relative_error(served, eager[key]) <= TOLERANCE, key
    if len(exported.output_names) > 1:  # output 0 at every point vs output 1 at every point
        assert bool((covariance[:6, 6:] != 0).any()) is CORRELATED[name]


@pytest.mark.parametrize("name", SERVED)
def test_family_csv_and_describe(server, request: pytest.FixtureRequest, name: str) -> None:
    exported = request.getfixturevalue("family_exports")[name]
    module = torch.jit.load(str(exported.directory / gp_artifact.POSTERIOR_FILE))
    X = points(40, seed=22)
    body = "x1,x2\n" + "".join(f"{a!r},{b!r}\n" for a, b in X.tolist())
    response = requests.post(
        f"{server.inference_url}/predictions/{name}",
        data=body,
        headers={"Content-Type": "text/csv", **server.headers()},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    rows = [[float(v) for v in line.split(",")] for line in response.text.splitlines()[1:]]
    scores = torch.tensor(rows, dtype=torch.float64)
    mean, variance = module.mean_var(X)
    m = len(exported.output_names)
    assert relative_error(scores[:, 0::2], mean) <= TOLERANCE and scores.size(1) == 2 * m
    assert relative_error(scores[:, 1::2], variance.sqrt()) <= TOLERANCE
    described = server.metadata(name).document
    assert described["model_class"] == CLASSES[name]
    assert described["correlated_outputs"] is CORRELATED[name]
