"""Unit tests of the JSON codec (``handler/codecs/v1.py``) and the bounded JSON decoder it
reads bodies with (``handler/codecs/bounded_json.py``), without a server."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gp_serve.handler.codecs.bounded_json import MAX_JSON_DEPTH, MAX_NUMBER_CHARS, dumps, json_depth
from gp_serve.handler.codecs.budget import RequestError
from gp_serve.handler.codecs.v1 import PredictRequest, parse_json, render_error, render_json
from tests.serving.cases import BAD_JSON

NAMES = ["x1", "x2"]


def test_inputs_with_defaults() -> None:
    request = parse_json(b'{"inputs": [[0.1, 2], [-3e-5, 0.5]]}', NAMES)
    assert request.points == [[0.1, 2.0], [-3e-5, 0.5]]
    assert (request.covariance, request.observation_noise, request.envelope) == (
        "full",
        False,
        "inputs",
    )


def test_options_and_envelopes() -> None:
    request = parse_json(
        '{"instances": [[0.1, 0.2]], "covariance": "diag", "observation_noise": true}', NAMES
    )
    assert (request.covariance, request.observation_noise, request.envelope) == (
        "diag",
        True,
        "instances",
    )
    assert parse_json("[[0.1, 0.2]]", NAMES).envelope == "list"


def test_named_points_follow_input_order() -> None:
    request = parse_json({"inputs": [{"x2": 0.2, "x1": 0.1}, [0.3, 0.4]]}, NAMES)
    assert request.points == [[0.1, 0.2], [0.3, 0.4]]


def test_floats_parse_exactly() -> None:
    value = 0.1 + 0.2
    request = parse_json(f'{{"inputs": [[{value!r}, 5e-324]]}}', NAMES)
    assert request.points == [[value, 5e-324]]


@pytest.mark.parametrize("name, body, error", BAD_JSON, ids=[case[0] for case in BAD_JSON])
def test_bad_json_is_a_request_error(name: str, body: str, error: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_json(body.encode(), NAMES)
    assert info.value.status == 400
    assert str(info.value) == error


def test_pre_decoded_nan_is_refused() -> None:
    with pytest.raises(
        RequestError,
        match=r"^inputs\[0\]\[0\] \(x1\): expected a finite "
        r"number, got nan$",
    ):
        parse_json({"inputs": [[float("nan"), 0.2]]}, NAMES)


def test_invalid_utf8() -> None:
    with pytest.raises(
        RequestError,
        match=r"^expected a UTF-8 encoded body, got invalid "
        r"bytes: 'utf-8' codec can't decode byte 0xff in position 0",
    ):
        parse_json(b'\xff{"inputs": [[0.1, 0.2]]}', NAMES)


def test_lone_surrogate_bytes_are_not_utf8() -> None:
    with pytest.raises(
        RequestError,
        match=r"^expected a UTF-8 encoded body, got invalid "
        r"bytes: 'utf-8' codec can't decode byte 0xed in position 11",
    ):
        parse_json(b'{"inputs": \xed\xa0\x80}', NAMES)


@pytest.mark.parametrize(
    "text, depth",
    [
        ("1", 0),
        ("[]", 1),
        ('{"a": [[1, 2]]}', 3),
        ('["[[[", "\\\\", {"b": "]]"}]', 2),
        ('["\\"[[["]', 1),
        ("[" * 50, 50),
        ("]]][", 0),
    ],
)
def test_json_depth_ignores_strings(text: str, depth: int) -> None:
    assert json_depth(text) == depth


def test_depth_limit_is_inclusive() -> None:
    deepest = "[" * (MAX_JSON_DEPTH - 2) + "[[0.1, 0.2]]" + "]" * (MAX_JSON_DEPTH - 2)
    assert json_depth(deepest) == MAX_JSON_DEPTH
    with pytest.raises(RequestError, match=r"^body\[0\]\[0\]: expected a number"):
        parse_json(deepest, NAMES)  # decoded (then refused by the point rules)
    with pytest.raises(RequestError, match=f"^JSON nested {MAX_JSON_DEPTH + 1} levels deep"):
        parse_json("[" + deepest + "]", NAMES)


def test_long_floats_parse_like_python_up_to_the_limit() -> None:
    digits = "0." + "3" * (MAX_NUMBER_CHARS - 2)
    assert parse_json(f"[[{digits}, 1]]", NAMES).points == [[float(digits), 1.0]]
    with pytest.raises(
        RequestError,
        match=rf"^a JSON number of {MAX_NUMBER_CHARS + 1} "
        rf"characters: expected at most {MAX_NUMBER_CHARS} characters$",
    ):
        parse_json(f"[[{digits}3, 1]]", NAMES)


def test_render_json_round_trips_floats() -> None:
    request = PredictRequest([[0.1, 0.2]], "full", False, "instances")
    mean, variance = [[0.1 + 0.2, -1e-300]], [[5e-324, 1.7976931348623157e308]]
    text = render_json(
        request,
        model="gp",
        version="1.0",
        output_names=["a", "b"],
        covariance_layout="output-major",
        mean=mean,
        variance=variance,
        covariance=[[1.0, 0.0], [0.0, 2.0]],
        extrapolation=[0],
    )
    answer = json.loads(text)
    assert answer == {
        "model": "gp",
        "version": "1.0",
        "outputs": ["a", "b"],
        "observation_noise": False,
        "mean": mean,
        "variance": variance,
        "covariance_layout": "output-major",
        "extrapolation": [0],
        "covariance": [[1.0, 0.0], [0.0, 2.0]],
        "predictions": [{"mean": mean[0], "variance": variance[0]}],
    }
    assert b" " not in text


def test_render_json_without_covariance() -> None:
    request = PredictRequest([[0.1, 0.2]], "diag", True, "inputs")
    answer = json.loads(
        render_json(
            request,
            model="m",
            version="",
            output_names=["a"],
            covariance_layout="output-major",
            mean=[[1.0]],
            variance=[[2.0]],
            covariance=None,
            extrapolation=[],
        )
    )
    assert "covariance" not in answer and "predictions" not in answer
    assert answer["observation_noise"] is True


def test_render_error() -> None:
    assert render_error('bad "x"', 400) == b'{"error":"bad \\"x\\"","code":400}'


def test_answers_encode_numpy_arrays_exactly() -> None:
    """The handler passes numpy arrays; every float64 comes back bit for bit."""
    values = np.array([[0.1 + 0.2, -1e-300, 5e-324], [1.7976931348623157e308, 1e16, -0.0]])
    assert np.array_equal(np.array(json.loads(dumps({"v": values}))["v"]), values)
