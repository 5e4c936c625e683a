"""Unit tests of the Open Inference Protocol codec (``handler/codecs/v2.py``), no server."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gp_serve.handler.codecs import v2
from gp_serve.handler.codecs.budget import Budget, RequestError

NAMES = ["x1", "x2"]


def body(**request) -> bytes:
    tensor = {"name": "X", "shape": [2, 2], "datatype": "FP64", "data": [0.1, 0.2, 0.3, 0.4]}
    request.setdefault("inputs", [tensor])
    return json.dumps(request).encode()


def parse(
    raw: bytes, headers: dict | None = None, max_full: int = 2000, **limits
) -> v2.InferRequest:
    """Parse for a model of inputs `NAMES` and 2 outputs (a full covariance limited to
    ``max_full`` points)."""
    budget = Budget(NAMES, ["f", "g"], max_covariance_rows=2 * max_full, **limits)
    return v2.parse_request(raw, headers or {}, budget)


def test_json_request_defaults() -> None:
    request = parse(body(id="r1"))
    assert np.array_equal(request.points, [[0.1, 0.2], [0.3, 0.4]])
    assert request.outputs == ("mean", "variance", "covariance")
    assert request.binary == frozenset() and request.id == "r1"
    assert request.covariance == "full" and request.observation_noise is False


def test_nested_data_and_output_selection() -> None:
    tensor = {"name": "X", "shape": [2, 2], "datatype": "FP64", "data": [[1, 2], [3, 4.5]]}
    request = parse(
        body(
            inputs=[tensor],
            outputs=[{"name": "variance"}, {"name": "mean"}],
            parameters={"observation_noise": True},
        )
    )
    assert np.array_equal(request.points, [[1.0, 2.0], [3.0, 4.5]])
    assert request.outputs == ("variance", "mean") and request.covariance == "diag"
    assert request.observation_noise is True
    assert parse(body(parameters={"covariance": "diag"})).outputs == ("mean", "variance")


def test_binary_request_and_binary_outputs() -> None:
    X = np.array([[0.1 + 0.2, -1e-300], [5e-324, 3.0]])
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "X",
                    "shape": [2, 2],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": 32},
                }
            ],
            "outputs": [
                {"name": "mean", "parameters": {"binary_data": True}},
                {"name": "covariance"},
            ],
        }
    ).encode()
    request = parse(
        header + X.astype("<f8").tobytes(), {"inference-header-content-length": str(len(header))}
    )
    assert np.array_equal(request.points, X)  # bit for bit
    assert request.outputs == ("mean", "covariance") and request.binary == {"mean"}
    tritons_default = parse(body(parameters={"binary_data_output": True}))
    assert tritons_default.binary == {"mean", "variance", "covariance"}


def test_render_json_and_binary() -> None:
    request = parse(
        body(
            outputs=[{"name": "mean"}, {"name": "covariance", "parameters": {"binary_data": True}}]
        )
    )
    covariance = np.arange(16.0).reshape(4, 4) / 3
    tensors = {"mean": np.array([[0.1 + 0.2, 1e-300], [2.0, -0.0]]), "covariance": covariance}
    raw, length = v2.render(
        request, tensors, model="gp", version="1.0", parameters={"outputs": ["a", "b"]}
    )
    header = json.loads(raw[:length])
    assert header == {
        "model_name": "gp",
        "model_version": "1.0",
        "parameters": {"outputs": ["a", "b"]},
        "outputs": [
            {
                "name": "mean",
                "datatype": "FP64",
                "shape": [2, 2],
                "data": [0.30000000000000004, 1e-300, 2.0, -0.0],
            },
            {
                "name": "covariance",
                "datatype": "FP64",
                "shape": [4, 4],
                "parameters": {"binary_data_size": 128},
            },
        ],
    }
    assert np.array_equal(np.frombuffer(raw[length:], "<f8").reshape(4, 4), covariance)
    plain = parse(body(outputs=[{"name": "mean"}]))
    raw, length = v2.render(plain, tensors, model="gp", version="", parameters={})
    assert length is None and json.loads(raw)["outputs"][0]["data"][0] == 0.30000000000000004


def test_which_requests_are_v2() -> None:
    assert v2.split(body(), {}) is not None
    assert v2.has_header({"Inference-Header-Content-Length": "3"})
    assert v2.split(b"{}xyz", {"inference-header-content-length": "2"}) == ({}, b"xyz")
    assert v2.split(b'{"inputs": [[0.1, 0.2]]}', {}) is None
    assert v2.split(b"x1,x2\n0.1,0.2\n", {"Content-Type": "text/csv"}) is None
    # the word alone is not enough (hypothesis found a bare JSON string "datatype")
    assert v2.split(b'"datatype"', {}) is None
    assert v2.split(b'{"inputs": [{"datatype": 1, "x2": 2}, [1, 2]]}', {}) is None
    assert v2.split(b'{"inputs": [{"datatype": 1}', {}) is None  # malformed: v1 reports it
    assert v2.split(b'{"inputs": [{"datatype": 1}]}', {}) == ({"inputs": [{"datatype": 1}]}, b"")


TENSOR = {"name": "X", "shape": [2, 2], "datatype": "FP64", "data": [0.1, 0.2, 0.3, 0.4]}
BAD = {
    "not an object": (
        b"[1, 2]",
        'expected a v2 inference request object {"inputs": [...]}, got a list of 2 items',
    ),
    "unknown key": (
        body(model="gp"),
        'request: unknown keys ["model"]: expected only '
        "['id', 'inputs', 'outputs', 'parameters']",
    ),
    "two inputs": (
        body(inputs=[TENSOR, TENSOR]),
        'inputs: expected one tensor {"name": "X", '
        '"shape": [q, 2], "datatype": "FP64", ...}, got a list of 2 items',
    ),
    "wrong name": (
        body(inputs=[{**TENSOR, "name": "input0"}]),
        "inputs[0].name: expected 'X', got a string (\"input0\")",
    ),
    "float32": (
        body(inputs=[{**TENSOR, "datatype": "FP32"}]),
        "inputs[0].datatype: expected 'FP64' (float64), got a string (\"FP32\")",
    ),
    "wrong width": (
        body(inputs=[{**TENSOR, "shape": [1, 4]}]),
        "inputs[0].shape: expected [q, 2] with q >= 1 (inputs ['x1', 'x2']), got [1, 4]",
    ),
    "no points": (
        body(inputs=[{**TENSOR, "shape": [0, 2], "data": []}]),
        "inputs[0].shape: expected [q, 2] with q >= 1 (inputs ['x1', 'x2']), got [0, 2]",
    ),
    "too few numbers": (
        body(inputs=[{**TENSOR, "data": [0.1, 0.2, 0.3]}]),
        "inputs[0].data: expected 4 numbers (2 x 2, the shape), got 3",
    ),
    "text number": (
        body(inputs=[{**TENSOR, "data": [0.1, "0.2", 0.3, 0.4]}]),
        'inputs[0].data[1]: expected a finite number, got a string ("0.2")',
    ),
    "unknown parameter": (
        body(parameters={"priority": 1}),
        "parameters: unknown keys "
        "[\"priority\"]: expected only ['covariance', 'observation_noise', "
        "'binary_data_output', 'samples', 'base_samples', 'quantiles', 'acquisition', 'gradients']",
    ),
    "bad noise flag": (
        body(parameters={"observation_noise": "yes"}),
        'parameters.observation_noise: expected true or false, got a string ("yes")',
    ),
    "unknown output": (
        body(outputs=[{"name": "std"}]),
        "outputs[0].name: expected one of "
        "['mean', 'variance', 'covariance', 'samples', 'quantiles', 'acquisition', "
        "'mean_gradient', 'variance_gradient'], each once, got a string (\"std\")",
    ),
    "covariance vs diag": (
        body(outputs=[{"name": "covariance"}], parameters={"covariance": "diag"}),
        'outputs: "covariance" asked for with parameters.covariance '
        "'diag': expected \"full\" or no such parameter",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_name_the_rule(case: str) -> None:
    raw, message = BAD[case]
    with pytest.raises(RequestError) as info:
        parse(raw)
    assert str(info.value) == message and info.value.status == 400


def test_bad_binary_requests() -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "X",
                    "shape": [1, 2],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": 16},
                }
            ]
        }
    ).encode()
    length = {"Inference-Header-Content-Length": str(len(header))}
    with pytest.raises(RequestError) as info:
        parse(header + b"\0" * 8, length)
    assert str(info.value) == (
        "inputs[0]: expected 16 bytes of binary data (1 x 2 float64), "
        "got binary_data_size 16 and 8 bytes after the JSON header"
    )
    with pytest.raises(RequestError) as info:
        parse(header + np.array([0.5, np.nan]).tobytes(), length)
    assert str(info.value) == (
        "inputs[0] binary data: point 0, input 1 (x2): expected a finite number, got nan"
    )
    with pytest.raises(RequestError) as info:
        parse(header, {"Inference-Header-Content-Length": "9999"})
    assert str(info.value) == (
        "Inference-Header-Content-Length: expected a JSON header length "
        f"between 1 and the body's {len(header)} bytes, got 9999"
    )


def test_full_covariance_is_bounded() -> None:
    with pytest.raises(RequestError) as info:
        parse(body(), max_full=1)
    assert info.value.status == 413
    assert str(info.value).startswith("a full covariance is limited to 1 points, got 2;")
