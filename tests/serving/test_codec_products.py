"""Unit tests of the products a request may ask for (``codecs.products``): samples, base
samples, quantiles and an acquisition's spec, in JSON, v2 and CSV, each rule's message and
the answer's bound. No server, no torch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gp_serve.handler.codecs import decode_request, products
from gp_serve.handler.codecs.budget import Budget, RequestError
from gp_serve.handler.codecs.csv_codec import CSV, csv_header, quantile_label
from gp_serve.handler.codecs.products import MAX_QUANTILES, Products
from gp_serve.handler.codecs.v1 import JSON, PredictRequest
from gp_serve.handler.codecs.v2 import V2Codec

NAMES = ["x1", "x2"]
OUTPUTS = ["branin", "currin"]
LONGEST = -2.2250738585072014e-308
POINTS = [[0.1, 0.2], [0.3, 0.4]]
BUDGET = Budget(NAMES, OUTPUTS, max_covariance_rows=8, max_samples=50)  # 4 joint points


def decoded(body: dict, budget: Budget = BUDGET) -> PredictRequest:
    return JSON.decode(json.dumps({"inputs": POINTS, **body}).encode(), {}, budget)


def refusal(body: dict, budget: Budget = BUDGET) -> RequestError:
    with pytest.raises(RequestError) as info:
        decoded(body, budget)
    return info.value


def test_json_reads_every_product() -> None:
    acquisition = {"name": "ExpectedImprovement", "best_f": 0.5, "output": "currin"}
    request = decoded(
        {"samples": {"n": 3, "seed": 11}, "quantiles": [0.05, 0.95], "acquisition": acquisition}
    )
    assert request.products == Products(3, 11, None, (0.05, 0.95), acquisition)
    assert request.products.asked == ("samples", "quantiles", "acquisition")
    assert decoded({"samples": {"n": 2}}).products.seed == 0
    base = [[[0.5, -1.0], [2.0, 0.0]]]
    assert decoded({"base_samples": base}).products.draws == 1
    assert decoded({}).products is products.NONE


REFUSALS = {
    "samples not an object": (
        {"samples": 5},
        'samples: expected an object {"n": <samples>, "seed": <integer>}, got a number (5)',
    ),
    "unknown sample key": (
        {"samples": {"n": 2, "seeds": 1}},
        "samples: expected the keys ['n', 'seed'] (n required), got [\"n\", \"seeds\"]",
    ),
    "no n": (
        {"samples": {"seed": 1}},
        "samples: expected the keys ['n', 'seed'] (n required), got [\"seed\"]",
    ),
    "zero samples": (
        {"samples": {"n": 0}},
        "samples.n: expected an integer from 1 to 50, got a number (0)",
    ),
    "too many samples": (
        {"samples": {"n": 51}},
        "samples.n: expected an integer from 1 to 50, got a number (51)",
    ),
    "negative seed": (
        {"samples": {"n": 2, "seed": -1}},
        f"samples.seed: expected an integer from 0 to {2**63 - 1}, got a number (-1)",
    ),
    "boolean seed": (
        {"samples": {"n": 2, "seed": True}},
        f"samples.seed: expected an integer from 0 to {2**63 - 1}, got a boolean (true)",
    ),
    "both kinds of samples": (
        {"samples": {"n": 2}, "base_samples": [[[0.0, 0.0], [0.0, 0.0]]]},
        "samples and base_samples: expected one of them (base samples say how many samples "
        "they make)",
    ),
    "base samples of another q": (
        {"base_samples": [[[0.0, 0.0]]]},
        "base_samples[0]: expected 2 points of 2 numbers (n x 2 x 2 (samples x points x "
        "outputs)), got a list of 1 items",
    ),
    "base samples of another m": (
        {"base_samples": [[[0.0], [0.0]]]},
        "base_samples[0][0]: expected 2 numbers, one per output ['branin', 'currin'], got a "
        "list of 1 items",
    ),
    "base samples not numbers": (
        {"base_samples": [[[0.0, "a"], [0.0, 0.0]]]},
        'base_samples[0][0][1]: expected a finite number, got a string ("a")',
    ),
    "no base samples": (
        {"base_samples": []},
        "base_samples: expected a non-empty list, n x 2 x 2 (samples x points x outputs), got "
        "a list of 0 items",
    ),
    "no quantiles": (
        {"quantiles": []},
        f"quantiles: expected a list of 1 to {MAX_QUANTILES} levels in (0, 1), got a list of "
        "0 items",
    ),
    "quantile 1": ({"quantiles": [0.5, 1]}, "quantiles[1]: expected a level in (0, 1), got 1.0"),
    "quantile 0": ({"quantiles": [0.0]}, "quantiles[0]: expected a level in (0, 1), got 0.0"),
    "quantile text": (
        {"quantiles": ["0.5"]},
        'quantiles[0]: expected a finite number, got a string ("0.5")',
    ),
    "acquisition not an object": (
        {"acquisition": "EI"},
        'acquisition: expected an object like {"name": "ExpectedImprovement", "best_f": 0.5}, '
        'got a string ("EI")',
    ),
}


@pytest.mark.parametrize("body, message", REFUSALS.values(), ids=list(REFUSALS))
def test_each_bad_product_names_its_rule(body: dict, message: str) -> None:
    error = refusal(body)
    assert (error.status, str(error)) == (400, message)


def test_samples_are_bounded_by_the_joint_covariance() -> None:
    error = refusal({"samples": {"n": 1}}, Budget(NAMES, OUTPUTS, max_covariance_rows=2))
    assert error.status == 413
    assert str(error) == (
        "samples: samples are drawn from the joint covariance, limited to 1 points, got 2: "
        "ask for samples at fewer points per request"
    )


def test_a_mixture_serves_no_products() -> None:
    mixture = Budget(NAMES, OUTPUTS, mixture_samples=16)
    assert str(refusal({"quantiles": [0.5]}, mixture)) == (
        "quantiles: the served posterior is a mixture over 16 MCMC samples (SAAS), served by "
        "its moments only: samples, quantiles and acquisition values are served for Gaussian "
        "posteriors"
    )


def test_the_answer_bound_counts_the_products() -> None:
    """Samples at the response limit are refused before any work (413), and the rendered
    answer of the longest numbers fits the bound."""
    small = Budget(NAMES, OUTPUTS, max_response_bytes=8_000)
    assert refusal({"samples": {"n": 50}}, small).status == 413
    request = decoded({"samples": {"n": 7}, "quantiles": [0.1, 0.9], "acquisition": {}}, small)
    q, m = len(POINTS), len(OUTPUTS)
    longest = np.full((q, m), LONGEST)
    extras = {
        "samples": np.full((7, q, m), LONGEST),
        "quantiles": np.full((2, q, m), LONGEST),
        "acquisition": np.full(q, LONGEST),
    }
    from gp_serve.handler.codecs.base import Posterior, ServedModel

    posterior = Posterior(longest, longest, longest, np.full((q * m,) * 2, LONGEST), [0, 1], extras)
    model = ServedModel("gp", "1.0", OUTPUTS, "output-major")
    body = JSON.encode(request, posterior, model).body
    size = small.answer_bytes(q, True) + request.products.answer_bytes(q, m)
    assert len(body) <= size
    answer = json.loads(body)
    assert np.array(answer["samples"]).shape == (7, q, m)
    assert np.array(answer["quantiles"]).shape == (2, q, m)
    assert len(answer["acquisition"]) == q


def v2_body(parameters: dict, outputs: list | None = None) -> bytes:
    body: dict = {
        "inputs": [
            {"name": "X", "shape": [2, 2], "datatype": "FP64", "data": [0.1, 0.2, 0.3, 0.4]}
        ],
        "parameters": parameters,
    }
    if outputs is not None:
        body["outputs"] = [{"name": name} for name in outputs]
    return json.dumps(body).encode()


def test_v2_answers_the_products_as_outputs() -> None:
    request = decode_request(
        {"body": v2_body({"samples": {"n": 4, "seed": 2}, "quantiles": [0.5]})}, {}, BUDGET
    )
    assert request.outputs == ("mean", "variance", "covariance", "samples", "quantiles")
    chosen = V2Codec().decode(
        v2_body({"acquisition": {"name": "PosteriorMean"}}, ["acquisition"]), {}, BUDGET
    )
    assert chosen.outputs == ("acquisition",)
    with pytest.raises(RequestError) as info:
        V2Codec().decode(v2_body({}, ["mean", "samples"]), {}, BUDGET)
    assert str(info.value) == (
        'outputs: "samples" asked for without parameters.samples or parameters.base_samples: '
        "expected the parameter that says how to compute it"
    )
    with pytest.raises(RequestError) as info:
        V2Codec().decode(v2_body({"quantiles": [2]}), {}, BUDGET)
    assert str(info.value) == "parameters.quantiles[0]: expected a level in (0, 1), got 2.0"


def test_csv_reads_products_from_headers() -> None:
    headers = {
        "Content-Type": "text/csv",
        "GP-Quantiles": "[0.025, 0.5]",
        "gp-acquisition": '{"name": "UpperConfidenceBound", "beta": 2, "output": "branin"}',
    }
    request = CSV.decode(b"0.1,0.2\n0.3,0.4\n", headers, BUDGET)
    assert request.products.quantiles == (0.025, 0.5)
    assert request.products.acquisition == {
        "name": "UpperConfidenceBound",
        "beta": 2,
        "output": "branin",
    }
    assert csv_header(OUTPUTS, request.products) == (
        b"mean_branin,std_branin,mean_currin,std_currin,q02.5_branin,q02.5_currin,"
        b"q50_branin,q50_currin,acq\n"
    )
    with pytest.raises(RequestError) as info:
        CSV.decode(b"0.1,0.2\n", {"GP-Samples": '{"n": 2}'}, BUDGET)
    assert str(info.value) == (
        "header GP-samples: a CSV answer is one row per point, and samples are not: ask for "
        "them in JSON or v2"
    )
    with pytest.raises(RequestError) as info:
        CSV.decode(b"0.1,0.2\n", {"GP-Quantiles": "0.5,"}, BUDGET)
    assert str(info.value).startswith("header GP-quantiles: malformed JSON: Extra data")
    with pytest.raises(RequestError) as info:
        CSV.decode(b"0.1,0.2\n", {"GP-Quantiles": "[1.5]"}, BUDGET)
    assert str(info.value) == "header GP-quantiles[0]: expected a level in (0, 1), got 1.5"


def test_csv_columns_follow_the_header() -> None:
    from gp_serve.handler.codecs.base import Posterior, ServedModel

    request = CSV.decode(
        b"0.1,0.2\n0.3,0.4\n", {"GP-Quantiles": "[0.1]", "GP-Acquisition": "{}"}, BUDGET
    )
    mean = np.array([[1.0, 2.0], [3.0, 4.0]])
    extras = {
        "quantiles": np.array([[[5.0, 6.0], [7.0, 8.0]]]),
        "acquisition": np.array([9.0, 10.0]),
    }
    posterior = Posterior(mean, mean, mean / 10, None, [], extras)
    body = CSV.encode(request, posterior, ServedModel("gp", "1", OUTPUTS, "output-major")).body
    assert body.decode().splitlines() == [
        "mean_branin,std_branin,mean_currin,std_currin,q10_branin,q10_currin,acq",
        "1.0,0.1,2.0,0.2,5.0,6.0,9.0",
        "3.0,0.3,4.0,0.4,7.0,8.0,10.0",
    ]


@pytest.mark.parametrize(
    "level, label",
    [(0.05, "05"), (0.5, "50"), (0.95, "95"), (0.025, "02.5"), (1e-6, "00.0001"), (0.07, "07")],
)
def test_quantile_labels(level: float, label: str) -> None:
    assert quantile_label(level) == label


def test_gradients_are_a_flag_counted_in_the_answer() -> None:
    request = decoded({"gradients": True})
    assert request.products.gradients == len(NAMES)
    assert request.products.asked == ("mean_gradient", "variance_gradient")
    assert request.products.numbers(2, 2) == 2 * 2 * 2 * 2
    assert str(refusal({"gradients": 1})) == "gradients: expected true or false, got a number (1)"
    assert decoded({"gradients": False}).products is products.NONE
    mixture = Budget(NAMES, OUTPUTS, mixture_samples=16)  # (the moments' gradients are served)
    assert decoded({"gradients": True}, mixture).products.gradients == 2
    chosen = V2Codec().decode(v2_body({"gradients": True}, ["mean_gradient"]), {}, BUDGET)
    assert chosen.outputs == ("mean_gradient",)
    with pytest.raises(RequestError) as info:
        V2Codec().decode(v2_body({}, ["variance_gradient"]), {}, BUDGET)
    assert str(info.value) == (
        'outputs: "variance_gradient" asked for without parameters.gradients: expected the '
        "parameter that says how to compute it"
    )
    request = CSV.decode(b"0.1,0.2\n", {"GP-Gradients": "true"}, BUDGET)
    assert csv_header(OUTPUTS, request.products, NAMES) == (
        b"mean_branin,std_branin,mean_currin,std_currin,dmean_branin_x1,dmean_branin_x2,"
        b"dmean_currin_x1,dmean_currin_x2,dvar_branin_x1,dvar_branin_x2,dvar_currin_x1,"
        b"dvar_currin_x2\n"
    )


def test_the_gradients_bound_holds_for_more_outputs_than_inputs() -> None:
    """`q x m x d` gradients with d < m: every nested list's brackets are counted."""
    from gp_serve.handler.codecs.base import Posterior, ServedModel

    outputs = ["a", "b", "c", "e"]
    budget = Budget(["x"], outputs)
    q, m = 40, len(outputs)
    request = JSON.decode(
        json.dumps({"inputs": [[0.5]] * q, "covariance": "diag", "gradients": True}).encode(),
        {},
        budget,
    )
    longest = np.full((q, m), LONGEST)
    gradients = {name: np.full((q, m, 1), LONGEST) for name in products.GRADIENTS}
    posterior = Posterior(longest, longest, longest, None, [], gradients)
    body = JSON.encode(request, posterior, ServedModel("gp", "1.0", outputs, "output-major")).body
    bound = budget.answer_bytes(q, False) + request.products.answer_bytes(q, m)
    assert len(body) <= bound
