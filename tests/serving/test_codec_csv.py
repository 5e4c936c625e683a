"""Unit tests of the CSV codec (``handler/codecs/csv_codec.py``), without a server."""

from __future__ import annotations

import numpy as np
import pytest

from gp_serve.handler.codecs.bounded_json import MAX_NUMBER_CHARS
from gp_serve.handler.codecs.budget import RequestError
from gp_serve.handler.codecs.csv_codec import csv_header, csv_rows, is_csv, parse_csv
from tests.serving.cases import BAD_CSV

NAMES = ["x1", "x2"]


def test_long_numbers_parse_like_python_up_to_the_limit() -> None:
    digits = "0." + "3" * (MAX_NUMBER_CHARS - 2)
    assert parse_csv(f"{digits},1\n", NAMES).points == [[float(digits), 1.0]]


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
    assert parse_csv('"x1","x2"\n"0.1", 0.2\n0.3,"4e-1"', NAMES).points == [[0.1, 0.2], [0.3, 0.4]]


@pytest.mark.parametrize(
    "content_type, expected",
    [
        ("text/csv", True),
        ("text/csv; charset=utf-8", True),
        ("Text/CSV", True),
        ("application/json", False),
        (None, False),
        ("text/plain", False),
    ],
)
def test_is_csv(content_type: str | None, expected: bool) -> None:
    assert is_csv(content_type) is expected


def test_csv_answer() -> None:
    assert csv_header(["a", "b"]) == b"mean_a,std_a,mean_b,std_b\n"
    assert csv_rows([[0.1 + 0.2, 1e-300], [2.0, -0.0]]) == (
        b"0.30000000000000004,1e-300\n2.0,-0.0\n"
    )


def test_answers_encode_numpy_arrays_exactly() -> None:
    """The handler passes numpy arrays; every float64 comes back bit for bit."""
    values = np.array([[0.1 + 0.2, -1e-300, 5e-324], [1.7976931348623157e308, 1e16, -0.0]])
    lines = csv_rows(values).decode().splitlines()
    assert np.array_equal(np.array([[float(c) for c in line.split(",")] for line in lines]), values)
