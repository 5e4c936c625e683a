"""Unit tests of the request budget (``codecs.budget.Budget``): every request's cost is bounded
and checked before the work is done. No server (the abuse tier, ``test_abuse.py``, sends the
same bodies to a real TorchServe)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from gp_serve.handler.codecs import bounded_json, decode_request, v2
from gp_serve.handler.codecs.budget import Budget, RequestError
from gp_serve.handler.codecs.csv_codec import csv_header, csv_rows, parse_csv
from gp_serve.handler.codecs.v1 import PredictRequest, parse_json, render_error, render_json
from gp_serve.serving.archive import MODEL_CONFIG
from gp_serve.serving.properties import DEFAULT_CONFIG, read_properties

NAMES = ["x1", "x2"]
OUTPUTS = ["branin", "currin"]
# The number orjson writes longest (24 characters): the answers' worst case.
LONGEST = -2.2250738585072014e-308


def budget(**limits) -> Budget:
    return Budget(NAMES, OUTPUTS, **limits)


def refused(call, *args) -> RequestError:
    with pytest.raises(RequestError) as info:
        call(*args)
    return info.value


def test_default_limits_are_the_servers() -> None:
    """model-config.yaml's answer limit is TorchServe's own (config.properties)."""
    handler = yaml.safe_load(MODEL_CONFIG.read_text())["handler"]
    properties = read_properties(DEFAULT_CONFIG)
    assert handler["max_response_bytes"] == int(properties["max_response_size"])
    defaults = Budget(NAMES, OUTPUTS)
    limits = [name for name in vars(defaults) if name.startswith("max_")]
    assert {name: handler[name] for name in limits} == {
        name: getattr(defaults, name) for name in limits
    }


def test_points_are_bounded_in_every_envelope() -> None:
    small = budget(max_points=3)
    points = [[0.1, 0.2]] * 4
    for body in (
        {"inputs": points, "covariance": "diag"},
        {"instances": [{"x1": 0.1, "x2": 0.2}] * 4, "covariance": "none"},
        points,
    ):
        error = refused(decode_request, {"body": json.dumps(body).encode()}, {}, small)
        assert error.status == 413
        assert str(error) == (
            "a request is limited to 3 points, got 4: split the points into "
            "several requests (client.score_csv does for CSV: --chunk-rows)"
        )
    error = refused(
        decode_request, {"body": b"x1,x2\n" + b"0.1,0.2\n" * 4}, {"Content-Type": "text/csv"}, small
    )
    assert (error.status, str(error)) == (
        413,
        (
            "a CSV body (line 5) is limited to 3 points, got at least 4: split the points into "
            "several requests (client.score_csv does for CSV: --chunk-rows)"
        ),
    )
    tensor = {
        "name": "X",
        "shape": [4, 2],
        "datatype": "FP64",
        "parameters": {"binary_data_size": 64},
    }
    header = json.dumps({"inputs": [tensor]}).encode()
    error = refused(
        v2.parse_request,
        header + bytes(64),
        {"Inference-Header-Content-Length": str(len(header))},
        small,
    )
    assert (error.status, str(error)) == (
        413,
        (
            "inputs[0].shape: a request is limited to 3 points, got 4: split the points into "
            "several requests (client.score_csv does for CSV: --chunk-rows)"
        ),
    )


def test_a_huge_json_body_is_refused_before_it_is_decoded(monkeypatch) -> None:
    """Counted from its commas: no float (nor list) of it is built."""

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded")

    monkeypatch.setattr(bounded_json.json, "loads", no_decoding)
    body = json.dumps({"inputs": [[0.0, 0.0]] * 1000, "covariance": "diag"}).encode()
    v2_body = body.replace(b'"inputs"', b'"datatype": 1, "inputs"')  # (one more comma)
    for values, call, args in (
        (2001, parse_json, (body, NAMES, budget(max_points=100))),
        (2002, v2.parse_request, (v2_body, {}, budget(max_points=100))),
    ):
        error = refused(call, *args)
        assert (error.status, str(error)) == (
            413,
            (
                f"the body holds up to {values} JSON values, more than 100 points of 2 inputs "
                "need: a request is limited to 100 points; split the points into several requests"
            ),
        )


def test_full_covariance_counts_rows_not_points() -> None:
    """``q*m`` rows: 10 outputs at 400 points is already a 4000 x 4000 matrix."""
    ten = Budget(NAMES, [f"y{t}" for t in range(10)])
    assert ten.max_full_points == 400
    error = refused(
        decode_request, {"body": json.dumps({"inputs": [[0.1, 0.2]] * 401}).encode()}, {}, ten
    )
    assert (error.status, str(error)) == (
        413,
        (
            'a full covariance is limited to 400 points, got 401; send "covariance": "diag" (or '
            '"none") for more points (a 4010 x 4010 covariance; at most 4000 rows for 10 outputs)'
        ),
    )
    assert (
        len(
            decode_request(
                {"body": json.dumps({"inputs": [[0.1, 0.2]] * 401, "covariance": "diag"}).encode()},
                {},
                ten,
            ).points
        )
        == 401
    )
    saas = Budget(NAMES, ["y"], mixture_samples=16)  # 16 matrices of q x q
    assert saas.max_full_points == 1000
    assert budget().max_full_points == 2000


def test_the_answer_is_bounded_before_any_work() -> None:
    correlated = budget()  # 2000 points: 4000 x 4000 numbers of up to 25 bytes, over 300 MiB
    error = refused(
        decode_request,
        {"body": json.dumps({"inputs": [[0.1, 0.2]] * 2000}).encode()},
        {},
        correlated,
    )
    assert error.status == 413
    assert str(error) == (
        "the answer to 2000 points with covariance 'full' could take 400250224 bytes, over the "
        'limit of 314572800 bytes (max_response_size): ask for "diag" (no covariance), send '
        "fewer points or score a CSV in chunks (client.score_csv --chunk-rows)"
    )
    independent = budget(correlated_outputs=False)  # zero off-diagonal blocks: "0.0,"
    assert (
        len(
            decode_request(
                {"body": json.dumps({"inputs": [[0.1, 0.2]] * 2000}).encode()}, {}, independent
            ).points
        )
        == 2000
    )
    small = budget(max_response_bytes=100_000)
    csv_body = b"0.1,0.2\n" * 1000
    assert (
        refused(decode_request, {"body": csv_body}, {"Content-Type": "text/csv"}, small).status
        == 413
    )
    assert (
        len(
            decode_request(
                {"body": csv_body[: 8 * 800]}, {"Content-Type": "text/csv"}, small
            ).points
        )
        == 800
    )


@pytest.mark.parametrize("correlated", [True, False])
@pytest.mark.parametrize("envelope", ["inputs", "instances", "csv"])
def test_the_bound_holds_for_the_longest_numbers(correlated: bool, envelope: str) -> None:
    """The answer rendered with the longest float64 text everywhere fits the bound."""
    q, m = 37, len(OUTPUTS)
    b = budget(correlated_outputs=correlated)
    mean = np.full((q, m), LONGEST)
    if envelope == "csv":
        size = len(csv_header(OUTPUTS) + csv_rows(np.full((q, 2 * m), LONGEST)))
        bound = b.answer_bytes(q, False)
    else:
        covariance = np.full((q * m, q * m), LONGEST)
        if not correlated:
            for t in range(m):
                for u in range(m):
                    if t != u:
                        covariance[t * q : (t + 1) * q, u * q : (u + 1) * q] = -0.0
        request = PredictRequest([[0.0, 0.0]] * q, "full", True, envelope)
        size = len(
            render_json(
                request,
                model="m" * 200,
                version="v" * 50,
                output_names=OUTPUTS,
                covariance_layout="output-major",
                mean=mean,
                variance=mean,
                covariance=covariance,
                extrapolation=list(range(q)),
            )
        )
        instances = envelope == "instances"
        bound = b.answer_bytes(
            q, True, per_point_numbers=4 if instances else 2, extra_bytes=48 if instances else 8
        )
    assert size <= bound < 1.25 * size + 4096


@pytest.mark.parametrize("binary", [False, True])
def test_the_v2_bound_holds_for_the_longest_numbers(binary: bool) -> None:
    q, m = 23, len(OUTPUTS)
    b = budget()
    tensor = {"name": "X", "shape": [q, 2], "datatype": "FP64", "data": [0.5] * (2 * q)}
    body = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": binary}})
    request = v2.parse_request(body.encode(), {}, b)
    tensors = {
        "mean": np.full((q, m), LONGEST),
        "variance": np.full((q, m), LONGEST),
        "covariance": np.full((q * m, q * m), LONGEST),
    }
    answer, _ = v2.render(
        request,
        tensors,
        model="m" * 200,
        version="v" * 50,
        parameters={
            "outputs": OUTPUTS,
            "covariance_layout": "output-major",
            "observation_noise": False,
            "extrapolation": list(range(q)),
        },
    )
    small = budget(max_response_bytes=len(answer) - 1)
    assert refused(v2.parse_request, body.encode(), {}, small).status == 413


def test_error_messages_quote_client_input_truncated() -> None:
    key = "k" * 3_000_000
    error = refused(parse_json, json.dumps({"inputs": [[0.1, 0.2]], key: 1}).encode(), NAMES)
    assert str(error) == (
        'unknown keys ["kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk... (3000000 '
        "characters)\"]: expected only 'inputs' and ['covariance', "
        "'observation_noise', 'samples', 'base_samples', 'quantiles', 'acquisition', 'gradients']"
    )
    header = refused(parse_csv, ("h" * 1_000_000 + ",x2\n0.1,0.2\n").encode(), NAMES)
    assert len(str(header)) < 300
    many = {f"{i:0>5000}": 1 for i in range(30)}
    point = refused(parse_json, json.dumps({"inputs": [many]}).encode(), NAMES)
    assert len(str(point)) < 1000
    assert len(render_error("x" * 10_000, 400)) < 1024
    assert len(v2.render_error("x" * 10_000)) < 1024
    v2_key = refused(
        v2.parse_request,
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "X",
                        "shape": [1, 2],
                        "datatype": "FP64",
                        "data": [0, 0],
                        "z" * 100_000: 0,
                    }
                ]
            }
        ).encode(),
        {},
        budget(),
    )
    assert len(str(v2_key)) < 300 and "(100000 characters)" in str(v2_key)
