"""Samples, quantiles and acquisition values through a real TorchServe (JSON, v2, CSV), equal
to eager BoTorch's: ``posterior.rsample_from_base_samples``, the posterior's quantiles and
BoTorch's own analytic acquisition functions on the fitted model (docs/serving.md, step 11)."""

from __future__ import annotations

import csv
import io
import json

import pytest
import requests
import torch

from gp_serve.export.families import family_of
from gp_serve.handler import sampling
from gp_serve.handler.codecs.csv_codec import quantile_label
from tests.serving.conftest import Exported
from tests.serving.test_server import points

pytestmark = pytest.mark.server

TOLERANCE = 1e-8
# The served models whose eager draws use a Cholesky factor of the served covariance (the
# Kronecker family's use Matheron's rule: `test_kronecker_products_follow_its_exact_posterior`).
CHOLESKY_MODELS = ("gp", "gplist", "gpmultitask")
LEVELS = [0.05, 0.5, 0.95]


def exported_model(request: pytest.FixtureRequest, name: str) -> Exported:
    if name == "gp":
        return request.getfixturevalue("exported")
    return request.getfixturevalue("family_exports")[name]


def post(server, name: str, body: dict, headers: dict | None = None) -> requests.Response:
    return requests.post(
        f"{server.inference_url}/predictions/{name}",
        json=body,
        timeout=120,
        headers={**server.headers(), **(headers or {})},
    )


def relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return ((actual - expected).abs().max() / expected.abs().max()).item()


def eager_draws(model, X: torch.Tensor, base: torch.Tensor, noisy: bool) -> torch.Tensor:
    """BoTorch's draws from ``base`` (`n x q x m`), reshaped to its base sample shape."""
    with torch.no_grad():
        posterior = model.posterior(X, observation_noise=noisy)
        shaped = base.reshape(base.size(0), *posterior.base_sample_shape)
        draws = posterior.rsample_from_base_samples(torch.Size([base.size(0)]), shaped)
    return draws.reshape(base.shape)


@pytest.mark.parametrize("noisy", [False, True])
@pytest.mark.parametrize("name", CHOLESKY_MODELS)
def test_samples_and_quantiles_equal_botorchs(
    server, request: pytest.FixtureRequest, name: str, noisy: bool
) -> None:
    exported = exported_model(request, name)
    X = points(9, seed=31)
    body = {
        "inputs": X.tolist(),
        "covariance": "diag",
        "observation_noise": noisy,
        "samples": {"n": 5, "seed": 17},
        "quantiles": LEVELS,
    }
    response = post(server, name, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert "covariance" not in answer
    m = len(exported.output_names)
    samples = torch.tensor(answer["samples"], dtype=torch.float64)
    base = sampling.standard_normal(5, 17, 9, m)
    assert relative(samples, eager_draws(exported.model, X, base, noisy)) <= TOLERANCE
    with torch.no_grad():
        posterior = exported.model.posterior(X, observation_noise=noisy)
        normal = torch.distributions.Normal(posterior.mean, posterior.variance.sqrt())
        expected = normal.icdf(torch.tensor(LEVELS, dtype=torch.float64).view(-1, 1, 1))
    quantiles = torch.tensor(answer["quantiles"], dtype=torch.float64)
    assert relative(quantiles, expected) <= TOLERANCE
    # The client's own base samples (common random numbers) give the same draws.
    del body["samples"]
    body["base_samples"] = base.tolist()
    again = post(server, name, body).json()
    assert torch.equal(torch.tensor(again["samples"], dtype=torch.float64), samples)


def test_samples_are_the_same_on_every_worker_and_call(server) -> None:
    body = {"inputs": points(6, seed=2).tolist(), "samples": {"n": 3, "seed": 5}}
    answers = {post(server, "gp", body).content for _ in range(6)}  # (gp has two workers)
    assert len(answers) == 1


def test_kronecker_products_follow_its_exact_posterior(server, request) -> None:
    """BoTorch's Kronecker draws are Matheron's rule on more base samples than `q x m`, and
    its posterior takes no posterior transform: the served draws, quantiles and acquisition
    values are those of the exact posterior (the gate's reference, `kronecker.eager_moments`),
    its joint covariance point-major, the acquisition BoTorch's own class on it."""
    from tests.serving.test_acquisition import ExactKronecker

    exported = exported_model(request, "gpkronecker")
    family = family_of(exported.model)
    assert family.sample_order == "point-major"
    X = points(5, seed=8)
    spec = {"name": "UpperConfidenceBound", "beta": 2.0, "weights": {"branin": 0.5, "currin": 1}}
    body = {"inputs": X.tolist(), "samples": {"n": 3}, "quantiles": LEVELS, "acquisition": spec}
    response = post(server, "gpkronecker", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    exact = family.eager_moments(exported.model, X, False)
    base = sampling.standard_normal(3, 0, 5, len(exported.output_names))
    expected = sampling.draw(exact["mean"], exact["covariance"], base, "point-major")
    assert relative(torch.tensor(answer["samples"], dtype=torch.float64), expected) <= TOLERANCE
    normal = torch.distributions.Normal(exact["mean"], exact["variance"].sqrt())
    levels = torch.tensor(LEVELS, dtype=torch.float64).view(-1, 1, 1)
    quantiles = torch.tensor(answer["quantiles"], dtype=torch.float64)
    assert relative(quantiles, normal.icdf(levels)) <= TOLERANCE
    reference = botorch_acquisition(ExactKronecker(exported.model), spec, exported.output_names)
    with torch.no_grad():
        ucb = reference(X.unsqueeze(-2))
    assert relative(torch.tensor(answer["acquisition"], dtype=torch.float64), ucb) <= TOLERANCE


def botorch_acquisition(model, spec: dict, output_names: list[str]):
    """BoTorch's own acquisition function for a served spec."""
    from botorch.acquisition import analytic
    from botorch.acquisition.objective import ScalarizedPosteriorTransform

    kwargs: dict = {"maximize": spec.get("maximize", True)}
    name = spec["name"]
    if name == "LogConstrainedExpectedImprovement":
        constraints = {output_names.index(k): tuple(v) for k, v in spec["constraints"].items()}
        return analytic.LogConstrainedExpectedImprovement(
            model,
            best_f=spec["best_f"],
            objective_index=output_names.index(spec["objective"]),
            constraints=constraints,
            **kwargs,
        )
    if "weights" in spec or "output" in spec:
        weights = torch.zeros(len(output_names), dtype=torch.float64)
        if "weights" in spec:
            for key, value in spec["weights"].items():
                weights[output_names.index(key)] = value
        else:
            weights[output_names.index(spec["output"])] = 1.0
        kwargs["posterior_transform"] = ScalarizedPosteriorTransform(
            weights, spec.get("offset", 0.0)
        )
    for key in ("beta", "best_f"):
        if key in spec:
            kwargs[key] = spec[key]
    return getattr(analytic, name)(model, **kwargs)


ACQUISITIONS = {
    "gp": [
        {"name": "ExpectedImprovement", "best_f": -10.0, "output": "currin"},
        {"name": "LogExpectedImprovement", "best_f": 30.0, "output": "branin"},
        {"name": "UpperConfidenceBound", "beta": 0.25, "weights": {"branin": 0.1, "currin": 1}},
        {"name": "LogProbabilityOfImprovement", "best_f": -8.0, "output": "currin"},
        {
            "name": "LogConstrainedExpectedImprovement",
            "best_f": -9.0,
            "objective": "currin",
            "constraints": {"branin": [-60.0, None]},
        },
    ],
    "gplist": [
        {"name": "ProbabilityOfImprovement", "best_f": -9.0, "output": "currin", "maximize": False}
    ],
    "gpmultitask": [
        {"name": "PosteriorMean", "weights": {"branin": 0.3, "currin": -2.0}, "offset": 1.5},
        {"name": "PosteriorStandardDeviation", "weights": {"branin": 0.3, "currin": -2.0}},
    ],
}
# (BoTorch's Kronecker posterior takes no posterior transform: tests/serving/test_acquisition.py
# checks that family against BoTorch's acquisition classes on its exact posterior. Numbers are
# exact in float32, where BoTorch keeps best_f and beta.)
CASES = [(name, spec) for name, specs in ACQUISITIONS.items() for spec in specs]


@pytest.mark.parametrize(
    "name, spec", CASES, ids=[f"{name}-{spec['name']}-{k}" for k, (name, spec) in enumerate(CASES)]
)
def test_acquisition_values_equal_botorchs(
    server, request: pytest.FixtureRequest, name: str, spec: dict
) -> None:
    exported = exported_model(request, name)
    X = points(40, seed=12, low=-0.05, high=1.05)
    response = post(server, name, {"inputs": X.tolist(), "covariance": "none", "acquisition": spec})
    assert response.status_code == 200, response.text
    served = torch.tensor(response.json()["acquisition"], dtype=torch.float64)
    with torch.no_grad():
        expected = botorch_acquisition(exported.model, spec, exported.output_names)(X.unsqueeze(-2))
    if spec["name"].startswith("Log"):  # (log-values: compared absolutely where large)
        assert ((served - expected).abs() / expected.abs().clamp_min(1.0)).max() <= TOLERANCE
    else:
        assert relative(served, expected) <= TOLERANCE


def test_csv_answers_quantile_and_acquisition_columns(server, request) -> None:
    exported = exported_model(request, "gp")
    X = points(30, seed=4)
    spec = {"name": "UpperConfidenceBound", "beta": 0.25, "output": "branin"}
    response = requests.post(
        f"{server.inference_url}/predictions/gp",
        data="x1,x2\n" + "".join(f"{a!r},{b!r}\n" for a, b in X.tolist()),
        timeout=60,
        headers={
            **server.headers(),
            "Content-Type": "text/csv",
            "GP-Quantiles": json.dumps(LEVELS),
            "GP-Acquisition": json.dumps(spec),
        },
    )
    assert response.status_code == 200, response.text
    rows = list(csv.DictReader(io.StringIO(response.text)))
    with torch.no_grad():
        posterior = exported.model.posterior(X)
        ucb = botorch_acquisition(exported.model, spec, exported.output_names)(X.unsqueeze(-2))
    normal = torch.distributions.Normal(posterior.mean, posterior.variance.sqrt())
    for level in LEVELS:
        for t, output in enumerate(exported.output_names):
            column = torch.tensor(
                [float(row[f"q{quantile_label(level)}_{output}"]) for row in rows],
                dtype=torch.float64,
            )
            expected = normal.icdf(torch.tensor(level, dtype=torch.float64))[:, t]
            assert relative(column, expected) <= TOLERANCE
    acq = torch.tensor([float(row["acq"]) for row in rows], dtype=torch.float64)
    assert relative(acq, ucb) <= TOLERANCE


def test_v2_answers_products_as_binary_outputs(server, request) -> None:
    import numpy as np
    import tritonclient.http as triton

    exported = exported_model(request, "gp")
    client = triton.InferenceServerClient(server.inference_url.removeprefix("http://"))
    X = points(7, seed=9)
    x = triton.InferInput("X", list(X.shape), "FP64")
    x.set_data_from_numpy(X.numpy())
    outputs = [triton.InferRequestedOutput(name) for name in ("samples", "quantiles")]
    result = client.infer(
        "gp",
        [x],
        outputs=outputs,
        parameters={"samples": {"n": 4, "seed": 1}, "quantiles": LEVELS},
        headers=server.headers(),
    )
    samples = torch.from_numpy(np.array(result.as_numpy("samples")))
    assert samples.shape == (4, 7, 2)
    base = sampling.standard_normal(4, 1, 7, 2)
    assert relative(samples, eager_draws(exported.model, X, base, False)) <= TOLERANCE
    with torch.no_grad():
        posterior = exported.model.posterior(X)
    normal = torch.distributions.Normal(posterior.mean, posterior.variance.sqrt())
    expected = normal.icdf(torch.tensor(LEVELS, dtype=torch.float64).view(-1, 1, 1))
    assert relative(torch.from_numpy(np.array(result.as_numpy("quantiles"))), expected) <= (
        TOLERANCE
    )
    assert result.get_response()["parameters"]["quantiles"] == LEVELS


def test_products_are_refused_for_the_saas_mixture(server, request) -> None:
    from gp_serve.handler import gp_artifact

    directory = exported_model(request, "gpsaas").directory
    samples = gp_artifact.load_metadata(directory).mixture_samples
    response = post(server, "gpsaas", {"inputs": [[0.2, 0.4]], "quantiles": [0.5]})
    assert response.status_code == 400
    assert response.json()["error"] == (
        f"quantiles: the served posterior is a mixture over {samples} MCMC samples (SAAS), "
        "served by its moments only: samples, quantiles and acquisition values are served for "
        "Gaussian posteriors"
    )


@pytest.mark.parametrize("name", ["gppt2", "gponnx"])
def test_compiled_formats_draw_botorchs_samples(server, portable_artifact, name: str) -> None:
    """The same request to the AOTInductor and ONNX posteriors: BoTorch's draws (<= 1e-8)."""
    generator = torch.Generator().manual_seed(3)
    X = torch.rand(6, 3, generator=generator, dtype=torch.float64)
    body = {"inputs": X.tolist(), "samples": {"n": 4, "seed": 9}, "observation_noise": True}
    response = post(server, name, body)
    assert response.status_code == 200, response.text
    base = sampling.standard_normal(4, 9, 6, 2)
    expected = eager_draws(portable_artifact.model, X, base, True)
    assert relative(torch.tensor(response.json()["samples"], dtype=torch.float64), expected) <= (
        TOLERANCE
    )


def test_acquisition_with_observation_noise_is_refused(server) -> None:
    spec = {"name": "PosteriorMean", "output": "branin"}
    body = {"inputs": [[0.2, 0.4]], "observation_noise": True, "acquisition": spec}
    response = post(server, "gp", body)
    assert response.status_code == 400
    assert response.json()["error"] == (
        "acquisition: BoTorch's analytic acquisition functions use the noiseless posterior: "
        "expected observation_noise false with an acquisition"
    )


@pytest.mark.parametrize("noisy", [False, True])
def test_gradients_equal_eager_autograd(server, request, noisy: bool) -> None:
    from tests.serving.test_gradients import eager_gradients

    exported = exported_model(request, "gp")
    X = points(8, seed=5)
    body = {
        "inputs": X.tolist(),
        "covariance": "diag",
        "gradients": True,
        "observation_noise": noisy,
    }
    response = post(server, "gp", body)
    assert response.status_code == 200, response.text
    answer = response.json()
    expected_mean, expected_variance = eager_gradients(exported.model, X, noisy)
    for key, expected in (
        ("mean_gradient", expected_mean),
        ("variance_gradient", expected_variance),
    ):
        assert relative(torch.tensor(answer[key], dtype=torch.float64), expected) <= TOLERANCE
    csv_response = requests.post(
        f"{server.inference_url}/predictions/gp",
        data="x1,x2\n" + "".join(f"{a!r},{b!r}\n" for a, b in X.tolist()),
        timeout=60,
        headers={**server.headers(), "Content-Type": "text/csv", "GP-Gradients": "true"},
    )
    if not noisy:  # (CSV answers the noiseless posterior)
        rows = list(csv.DictReader(io.StringIO(csv_response.text)))
        column = torch.tensor([float(row["dvar_currin_x2"]) for row in rows], dtype=torch.float64)
        assert relative(column, expected_variance[:, 1, 1]) <= TOLERANCE


def test_gradients_are_refused_by_a_compiled_format(server) -> None:
    response = post(server, "gppt2", {"inputs": [[0.2, 0.4, 0.1]], "gradients": True})
    assert response.status_code == 400
    assert response.json()["error"] == (
        "gradients: the served format 'pt2' carries no autograd graph: expected a model "
        "served as ['torchscript']"
    )
