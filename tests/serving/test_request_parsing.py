"""Unit tests of request parsing (``handler/gp_request.py``), without a server."""

from __future__ import annotations

import pytest

from gp_request import RequestError, is_csv, parse_csv, parse_json
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


@pytest.mark.parametrize("name, body", BAD_JSON, ids=[case[0] for case in BAD_JSON])
def test_bad_json_is_a_request_error(name: str, body: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_json(body.encode(), NAMES)
    assert info.value.status == 400
    assert "expected" in str(info.value)


def test_pre_decoded_nan_is_refused() -> None:
    with pytest.raises(RequestError, match="finite"):
        parse_json({"inputs": [[float("nan"), 0.2]]}, NAMES)


def test_invalid_utf8() -> None:
    with pytest.raises(RequestError, match="UTF-8"):
        parse_json(b'\xff{"inputs": [[0.1, 0.2]]}', NAMES)


def test_csv_header_reorders_columns() -> None:
    request = parse_csv(b"\xef\xbb\xbfx2, x1\r\n0.2,0.1\r\n\r\n 0.4 , 0.3\n", NAMES)
    assert request.points == [[0.1, 0.2], [0.3, 0.4]]
    assert (request.covariance, request.envelope) == ("none", "csv")


def test_csv_without_header() -> None:
    assert parse_csv("1e-3,-2\n.5,3.\n", NAMES).points == [[1e-3, -2.0], [0.5, 3.0]]


@pytest.mark.parametrize("name, body", BAD_CSV, ids=[case[0] for case in BAD_CSV])
def test_bad_csv_is_a_request_error(name: str, body: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_csv(body, NAMES)
    assert info.value.status == 400
    assert "expected" in str(info.value)


def test_csv_error_names_the_line() -> None:
    with pytest.raises(RequestError, match="line 3"):
        parse_csv("x1,x2\n0.1,0.2\n0.3,x\n", NAMES)


@pytest.mark.parametrize(
    "content_type, expected",
    [("text/csv", True), ("text/csv; charset=utf-8", True), ("Text/CSV", True),
     ("application/json", False), (None, False), ("text/plain", False)],
)
def test_is_csv(content_type: str | None, expected: bool) -> None:
    assert is_csv(content_type) is expected
