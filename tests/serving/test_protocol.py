"""Unit tests of the protocol module (``handler/gp_protocol.py``), without a server."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gp_serve.handler.gp_protocol import (
    MAX_JSON_DEPTH,
    MAX_NUMBER_CHARS,
    Budget,
    PredictRequest,
    RequestError,
    csv_header,
    csv_rows,
    dumps,
    is_csv,
    json_depth,
    parse_csv,
    parse_json,
    parse_request,
    render_error,
    render_json,
)
from tests.serving.cases import BAD_CSV, BAD_JSON

NAMES = ["x1", "x2"]


def test_inputs_with_defaults() -> None:
    request = parse_json(b'{"inputs": [[0.1, 2], [-3e-5, 0.5]]}', NAMES)
    assert request.points == [[0.1, 2.0], [-3e-5, 0.5]]
    assert (request.covariance, request.observation_noise, request.envelope) == (
        "full", False, "inputs")


def test_options_and_envelopes() -> None:
    request = parse_json('{"instances": [[0.1, 0.2]], "covariance": "diag", '
                         '"observation_noise": true}', NAMES)
    assert (request.covariance, request.observation_noise, request.envelope) == (
        "diag", True, "instances")
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
    with pytest.raises(RequestError, match=r"^inputs\[0\]\[0\] \(x1\): expected a finite "
                       r"number, got nan$"):
        parse_json({"inputs": [[float("nan"), 0.2]]}, NAMES)


def test_invalid_utf8() -> None:
    with pytest.raises(RequestError, match=r"^expected a UTF-8 encoded body, got invalid "
                       r"bytes: 'utf-8' codec can't decode byte 0xff in position 0"):
        parse_json(b'\xff{"inputs": [[0.1, 0.2]]}', NAMES)


def test_lone_surrogate_bytes_are_not_utf8() -> None:
    with pytest.raises(RequestError, match=r"^expected a UTF-8 encoded body, got invalid "
                       r"bytes: 'utf-8' codec can't decode byte 0xed in position 11"):
        parse_json(b'{"inputs": \xed\xa0\x80}', NAMES)


@pytest.mark.parametrize(
    "text, depth",
    [("1", 0), ("[]", 1), ('{"a": [[1, 2]]}', 3), ('["[[[", "\\\\", {"b": "]]"}]', 2),
     ('["\\"[[["]', 1), ("[" * 50, 50), ("]]][", 0)],
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
    assert parse_csv(f"{digits},1\n", NAMES).points == [[float(digits), 1.0]]
    with pytest.raises(RequestError, match=rf"^a JSON number of {MAX_NUMBER_CHARS + 1} "
                       rf"characters: expected at most {MAX_NUMBER_CHARS} characters$"):
        parse_json(f"[[{digits}3, 1]]", NAMES)


def test_csv_header_reorders_columns() -> None:
    request = parse_csv(b"\xef\xbb\xbfx2, x1\r\n0.2,0.1\r\n\r\n 0.4 , 0.3\n", NAMES)
    assert request.points == [[0.1, 0.2], [0.3, 0.4]]
    assert (request.covariance, request.envelope) == ("none", "csv")


def test_csv_without_header() -> None:
    assert parse_csv("1e-3,-2\n.5,3.\n", NAMES).points == [[1e-3, -2.0], [0.5, 3.0]]


@pytest.mark.parametrize("name, body, error", BAD_CSV, ids=[case[0] for case in BAD_CSV])
def test_bad_csv_is_a_request_error(name: str, body: str, error: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_csv(body, NAMES)
    assert info.value.status == 400
    assert str(info.value) == error


def test_csv_error_names_the_physical_line() -> None:
    with pytest.raises(RequestError, match=r"^CSV line 5, column x2: expected a finite number"):
        parse_csv("x1,x2\r\n\r\n0.1,0.2\n\n0.3,x\n", NAMES)


def test_csv_quoted_cells_and_no_final_newline() -> None:
    assert parse_csv('"x1","x2"\n"0.1", 0.2\n0.3,"4e-1"', NAMES).points == [[0.1, 0.2],
                                                                               [0.3, 0.4]]


@pytest.mark.parametrize(
    "content_type, expected",
    [("text/csv", True), ("text/csv; charset=utf-8", True), ("Text/CSV", True),
     ("application/json", False), (None, False), ("text/plain", False)],
)
def test_is_csv(content_type: str | None, expected: bool) -> None:
    assert is_csv(content_type) is expected


def _request(row: dict, headers: dict) -> PredictRequest:
    """Parse for a model of inputs `NAMES` and 2 outputs, a full covariance of at most 3
    points."""
    return parse_request(row, headers, Budget(NAMES, ["a", "b"], max_covariance_rows=6))


def test_parse_request_by_content_type() -> None:
    csv_body = b"x1,x2\n0.1,0.2\n"
    assert _request({"body": csv_body}, {"Content-Type": "text/csv"}).envelope == "csv"
    assert _request({"body": csv_body}, {"content-type": "application/csv"}).envelope == "csv"
    json_body = b'{"inputs": [[0.1, 0.2]]}'
    assert _request({"body": json_body}, {}).envelope == "inputs"
    assert _request({"data": json_body}, {"Content-Type": "text/plain"}).envelope == "inputs"
    # a multipart part's own content type wins over the request's
    part = {"file": {"content-type": "text/csv"}, "Content-Type": "multipart/form-data"}
    assert _request({"file": csv_body}, part).envelope == "csv"


def test_parse_request_refuses_forms() -> None:
    with pytest.raises(RequestError, match=r"^expected a JSON body \(Content-Type: "
                       r"application/json\) or CSV \(Content-Type: text/csv\), got a form or "
                       r"multipart body with 2 parts \['a', 'b'\]"):
        _request({"a": b"1", "b": b"2"}, {})


def test_full_covariance_limit_is_413() -> None:
    body = json.dumps({"inputs": [[0.1, 0.2]] * 4}).encode()
    with pytest.raises(RequestError) as info:
        _request({"body": body}, {})
    assert info.value.status == 413
    assert str(info.value).startswith("a full covariance is limited to 3 points, got 4;")
    diag = json.dumps({"inputs": [[0.1, 0.2]] * 4, "covariance": "diag"}).encode()
    assert len(_request({"body": diag}, {}).points) == 4


def test_render_json_round_trips_floats() -> None:
    request = PredictRequest([[0.1, 0.2]], "full", False, "instances")
    mean, variance = [[0.1 + 0.2, -1e-300]], [[5e-324, 1.7976931348623157e308]]
    text = render_json(request, model="gp", version="1.0", output_names=["a", "b"],
                       covariance_layout="output-major", mean=mean, variance=variance,
                       covariance=[[1.0, 0.0], [0.0, 2.0]], extrapolation=[0])
    answer = json.loads(text)
    assert answer == {
        "model": "gp", "version": "1.0", "outputs": ["a", "b"], "observation_noise": False,
        "mean": mean, "variance": variance, "covariance_layout": "output-major",
        "extrapolation": [0], "covariance": [[1.0, 0.0], [0.0, 2.0]],
        "predictions": [{"mean": mean[0], "variance": variance[0]}],
    }
    assert b" " not in text


def test_render_json_without_covariance() -> None:
    request = PredictRequest([[0.1, 0.2]], "diag", True, "inputs")
    answer = json.loads(render_json(
        request, model="m", version="", output_names=["a"], covariance_layout="output-major",
        mean=[[1.0]], variance=[[2.0]], covariance=None, extrapolation=[]))
    assert "covariance" not in answer and "predictions" not in answer
    assert answer["observation_noise"] is True


def test_render_error_and_csv() -> None:
    assert render_error('bad "x"', 400) == b'{"error":"bad \\"x\\"","code":400}'
    assert csv_header(["a", "b"]) == b"mean_a,std_a,mean_b,std_b\n"
    assert csv_rows([[0.1 + 0.2, 1e-300], [2.0, -0.0]]) == (
        b"0.30000000000000004,1e-300\n2.0,-0.0\n")


def test_answers_encode_numpy_arrays_exactly() -> None:
    """The handler passes numpy arrays; every float64 comes back bit for bit."""
    values = np.array([[0.1 + 0.2, -1e-300, 5e-324], [1.7976931348623157e308, 1e16, -0.0]])
    assert np.array_equal(np.array(json.loads(dumps({"v": values}))["v"]), values)
    lines = csv_rows(values).decode().splitlines()
    assert np.array_equal(np.array([[float(c) for c in line.split(",")] for line in lines]),
                          values)
