"""Every export family through a real TorchServe: the same REST contract, eager's numbers.

The served models (`conftest.FAMILY_MODELS`) are fitted on the default data (with missing
outputs where the family allows them); each answer is compared with eager BoTorch's posterior of the fitted model
(output-major covariance, <= 1e-9 relative) and with the in-process TorchScript module.

Two SAAS models are served: ``gpsaas`` (conftest's, exported by BoTorch 0.12.0 in
``.venv-botorch012``: a cross-version artifact, checked against its own module) and
``gpsaaspinned``, fitted (NUTS in JAX/NumPyro) and exported by this venv's BoTorch 0.18.1 with
its fully Bayesian extra (requirements-saas.txt), registered on the same server here and
checked against eager BoTorch.
"""

from __future__ import annotations

import pytest
import requests
import torch

from gp_serve.handler import gp_artifact
from gp_serve.export.families import eager_moments
from tests.serving.conftest import FAMILY_MODELS, Exported
from tests.serving.test_server import TOLERANCE, points, relative_error

# The SAAS model exported by this venv's BoTorch (see the module docstring).
PINNED_SAAS = "gpsaaspinned"
SERVED = [*FAMILY_MODELS, PINNED_SAAS]
CORRELATED = {"gplist": False, "gpmultitask": True, "gpkronecker": True, "gpsaas": False,
              PINNED_SAAS: False}
CLASSES = {"gplist": "ModelListGP", "gpmultitask": "MultiTaskGP",
           "gpkronecker": "KroneckerMultiTaskGP", "gpsaas": "SaasFullyBayesianSingleTaskGP",
           PINNED_SAAS: "SaasFullyBayesianSingleTaskGP"}


@pytest.fixture(scope="module")
def pinned_saas(server, tmp_path_factory: pytest.TempPathFactory):
    """The default data's first output as a SAAS GP, fitted (`fit_model`: NUTS) and exported
    by this venv's BoTorch, archived into the session server's store and registered there
    (one worker) for this module; unregistered after it."""
    from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP

    from gp_serve.export import export_model
    from gp_serve.export.data import default_data, validate
    from gp_serve.export.fit import fit_model
    from gp_serve.serving.archive import build_archive
    from tests.conftest import write_model_config

    try:
        SaasFullyBayesianSingleTaskGP(torch.rand(3, 1).double(), torch.rand(3, 1).double())
    except ImportError:
        pytest.skip("this BoTorch needs its fully Bayesian extra (JAX, NumPyro) to build the "
                    "SAAS model: pip install -r requirements-saas.txt")
    complete = default_data()
    data = validate(complete.X, complete.Y[:, :1], None, complete.input_names,
                    complete.output_names[:1])
    model = fit_model(data, "saas")
    directory = tmp_path_factory.mktemp(PINNED_SAAS) / "model"
    export_model(model, directory, input_names=data.input_names, output_names=data.output_names)
    config = write_model_config(directory.parent / "model-config.yaml", minWorkers=1,
                                maxWorkers=1)
    build_archive(directory, server.model_store, PINNED_SAAS, config)
    url = f"{server.management_url}/models"
    headers = server.headers("management")
    response = requests.post(url, params={"url": f"{PINNED_SAAS}.mar", "model_name": PINNED_SAAS,
                                          "initial_workers": 1, "synchronous": "true"},
                             headers=headers, timeout=300)
    assert response.status_code == 200, response.text
    try:
        server.wait_ready(model=PINNED_SAAS)
        yield Exported(model, directory, data.input_names, data.output_names)
    finally:
        response = requests.delete(f"{url}/{PINNED_SAAS}", headers=headers, timeout=120)
        assert response.status_code == 200, response.text


def served_export(request: pytest.FixtureRequest, name: str) -> Exported:
    """The export served as ``name``: conftest's `family_exports`, or `pinned_saas`."""
    if name == PINNED_SAAS:
        return request.getfixturevalue("pinned_saas")
    return request.getfixturevalue("family_exports")[name]


@pytest.mark.parametrize("noise", [False, True])
@pytest.mark.parametrize("name", SERVED)
def test_family_served_equals_eager(server, request: pytest.FixtureRequest, name: str,
                                    noise: bool) -> None:
    exported = served_export(request, name)
    X = points(6, seed=21)
    response = requests.post(f"{server.inference_url}/predictions/{name}", timeout=60,
                             json={"inputs": X.tolist(), "observation_noise": noise},
                             headers=server.headers())
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["outputs"] == exported.output_names and answer["model"] == name
    assert answer["covariance_layout"] == gp_artifact.COVARIANCE_LAYOUT
    mean, variance, covariance = (torch.tensor(answer[key], dtype=torch.float64)
                                  for key in ("mean", "variance", "covariance"))
    module = torch.jit.load(str(exported.directory / gp_artifact.POSTERIOR_FILE))
    expected = dict(zip(("mean", "covariance"), (module.forward_noisy if noise else module)(X)))
    expected["variance"] = (module.mean_var_noisy if noise else module.mean_var)(X)[1]
    if exported.model is not None:  # (else exported by BoTorch 0.12, its gate checked eager)
        expected = eager_moments(exported.model, X, noise)
    for key, served in (("mean", mean), ("variance", variance), ("covariance", covariance)):
        assert relative_error(served, expected[key]) <= TOLERANCE, key
    if len(exported.output_names) > 1:  # output 0 at every point vs output 1 at every point
        assert bool((covariance[:6, 6:] != 0).any()) is CORRELATED[name]


@pytest.mark.parametrize("name", SERVED)
def test_family_csv_and_describe(server, request: pytest.FixtureRequest, name: str) -> None:
    exported = served_export(request, name)
    module = torch.jit.load(str(exported.directory / gp_artifact.POSTERIOR_FILE))
    X = points(40, seed=22)
    body = "x1,x2\n" + "".join(f"{a!r},{b!r}\n" for a, b in X.tolist())
    response = requests.post(f"{server.inference_url}/predictions/{name}", data=body,
                             headers={"Content-Type": "text/csv", **server.headers()}, timeout=60)
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
