"""Unit tests of the choice of codec per request (``handler/codecs/__init__.py``) and of what
every codec offers, without a server."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

from gp_serve.handler import codecs
from gp_serve.handler.codecs import v1, v2
from gp_serve.handler.codecs.base import Answer, Codec, Posterior, ServedModel
from gp_serve.handler.codecs.budget import Budget, RequestError

NAMES = ["x1", "x2"]
BUDGET = Budget(NAMES, ["a", "b"], max_covariance_rows=6)  # a full covariance: 3 points
V1_BODY = b'{"inputs": [[0.1, 0.2]]}'
CSV_BODY = b"x1,x2\n0.1,0.2\n"
V2_BODY = json.dumps(
    {"inputs": [{"name": "X", "shape": [1, 2], "datatype": "FP64", "data": [0.1, 0.2]}]}
).encode()


def _request(row: dict, headers: dict) -> v1.PredictRequest:
    """Decode as the handler does, for a model of inputs `NAMES` and 2 outputs, a full
    covariance of at most 3 points."""
    return codecs.decode_request(row, headers, BUDGET)


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
    with pytest.raises(
        RequestError,
        match=r"^expected a JSON body \(Content-Type: "
        r"application/json\) or CSV \(Content-Type: text/csv\), got a form or "
        r"multipart body with 2 parts \['a', 'b'\]",
    ):
        _request({"a": b"1", "b": b"2"}, {})


def test_full_covariance_limit_is_413() -> None:
    body = json.dumps({"inputs": [[0.1, 0.2]] * 4}).encode()
    with pytest.raises(RequestError) as info:
        _request({"body": body}, {})
    assert info.value.status == 413
    assert str(info.value).startswith("a full covariance is limited to 3 points, got 4;")
    diag = json.dumps({"inputs": [[0.1, 0.2]] * 4, "covariance": "diag"}).encode()
    assert len(_request({"body": diag}, {}).points) == 4


def select(body: bytes, headers: dict, part: str = "body") -> Codec:
    return codecs.select({part: body}, headers, BUDGET)


@pytest.mark.parametrize(
    "body, headers",
    [
        (V2_BODY, {"Inference-Header-Content-Length": str(len(V2_BODY))}),
        (V1_BODY, {"inference-header-content-length": "3"}),  # the header decides, not the body
        (CSV_BODY, {"Inference-Header-Content-Length": "x", "Content-Type": "text/csv"}),
    ],
)
def test_the_v2_header_selects_v2(body: bytes, headers: dict) -> None:
    codec = select(body, headers)
    assert isinstance(codec, v2.V2Codec) and codec.parts is None  # (decode splits the body)


@pytest.mark.parametrize("content_type", [None, "application/json", "text/csv"])
def test_a_v2_shaped_body_selects_v2(content_type: str | None) -> None:
    """A body whose inputs are tensor objects is v2 whatever its Content-Type, decoded once."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    codec = select(V2_BODY, headers)
    assert isinstance(codec, v2.V2Codec) and codec.parts == (json.loads(V2_BODY), b"")
    request = codec.decode(V2_BODY, headers, BUDGET)
    assert np.array_equal(request.points, [[0.1, 0.2]]) and request.covariance == "full"


@pytest.mark.parametrize(
    "headers, part",
    [
        ({"Content-Type": "text/csv"}, "body"),
        ({"content-type": "application/csv; charset=utf-8"}, "data"),
        ({"file": {"content-type": "text/csv"}, "Content-Type": "multipart/form-data"}, "file"),
    ],
)
def test_a_csv_content_type_selects_csv(headers: dict, part: str) -> None:
    assert select(CSV_BODY, headers, part) is codecs.CSV and codecs.CSV.name == "csv"


@pytest.mark.parametrize(
    "body, headers",
    [
        (V1_BODY, {}),
        (V1_BODY, {"Content-Type": "application/json"}),
        (V1_BODY, {"Content-Type": "text/plain"}),
        (CSV_BODY, {}),  # (then refused as JSON)
        (b'{"inputs": [{"datatype": 1, "x2": 2}, [1, 2]]}', {}),  # names datatype, not v2
        (b'{"inputs": [{"datatype": 1}', {}),  # malformed: the JSON codec reports it
    ],
)
def test_anything_else_selects_json(body: bytes, headers: dict) -> None:
    assert select(body, headers) is codecs.JSON and codecs.JSON.name == "json"


def test_refusals_before_a_codec_is_selected() -> None:
    """A form, and a body naming "datatype" of more values than the budget's points hold
    (counted before it is decoded): ``select`` raises, and the handler answers in JSON."""
    with pytest.raises(
        RequestError,
        match=r"^expected a JSON body .* got a form or "
        r"multipart body with 2 parts \['a', 'b'\]",
    ):
        codecs.select({"a": b"1", "b": b"2"}, {"Inference-Header-Content-Length": "1"}, BUDGET)
    small = Budget(NAMES, ["a"], max_points=2)
    body = b'{"datatype": 1, "inputs": [' + b",".join([b"[0.5, 0.5]"] * 40) + b"]}"
    with pytest.raises(RequestError) as info:
        codecs.select({"body": body}, {}, small)
    assert (info.value.status, str(info.value)) == (
        413,
        (
            "the body holds up to 81 JSON values, more than 2 points of 2 inputs need: a request "
            "is limited to 2 points; split the points into several requests"
        ),
    )


def test_a_v2_request_is_refused_in_v2_form() -> None:
    """Once the v2 header or body is recognised, errors are ``{"error": ...}``, no code."""
    headers = {"Inference-Header-Content-Length": "9999"}
    codec = select(V2_BODY, headers)
    with pytest.raises(RequestError) as info:
        codec.decode(V2_BODY, headers, BUDGET)
    message = (
        "Inference-Header-Content-Length: expected a JSON header length between 1 and "
        f"the body's {len(V2_BODY)} bytes, got 9999"
    )
    assert str(info.value) == message
    assert codec.error(str(info.value), info.value.status) == (
        json.dumps({"error": message}, separators=(",", ":")).encode(),
        "application/json",
    )
    float32 = V2_BODY.replace(b'"FP64"', b'"FP32"')
    sniffed = select(float32, {})
    with pytest.raises(RequestError) as info:
        sniffed.decode(float32, {}, BUDGET)
    assert str(info.value) == (
        "inputs[0].datatype: expected 'FP64' (float64), got a string (\"FP32\")"
    )
    assert (
        sniffed.error(str(info.value), 400)[0]
        == json.dumps({"error": str(info.value)}, separators=(",", ":")).encode()
    )


@pytest.mark.parametrize("codec", [codecs.JSON, codecs.CSV])
def test_json_and_csv_are_refused_in_json_form(codec: Codec) -> None:
    assert codec.error("bad", 413) == (b'{"error":"bad","code":413}', "application/json")


def test_every_codec_decodes_encodes_and_renders_errors() -> None:
    """The three operations, with the signatures of `Codec`'s, on every codec."""
    assert {cls.name for cls in codecs.CODECS} == {"json", "csv", "v2", "parquet", "arrow"}
    for cls in codecs.CODECS:
        assert issubclass(cls, Codec) and not inspect.isabstract(cls), cls
        for operation in ("decode", "encode", "error"):
            method = getattr(cls, operation)
            assert callable(method), (cls, operation)
            assert list(inspect.signature(method).parameters) == list(
                inspect.signature(getattr(Codec, operation)).parameters
            ), (cls, operation)


POSTERIOR = Posterior(
    mean=np.array([[1.5, -2.0]]),
    variance=np.array([[4.0, 0.25]]),
    std=np.array([[2.0, 0.5]]),
    covariance=np.array([[4.0, 0.0], [0.0, 0.25]]),
    extrapolation=[0],
)
MODEL = ServedModel("gp", "1.0", ["a", "b"], "output-major")


@pytest.mark.parametrize(
    "codec, body, headers, content_type",
    [
        (codecs.JSON, V1_BODY, {}, "application/json"),
        (codecs.CSV, CSV_BODY, {"Content-Type": "text/csv"}, "text/csv; charset=utf-8"),
        (v2.V2Codec(), V2_BODY, {}, "application/json"),
    ],
)
def test_every_codec_round_trips_a_request(
    codec: Codec, body: bytes, headers: dict, content_type: str
) -> None:
    request = codec.decode(body, headers, BUDGET)
    assert request.observation_noise is False
    answer = codec.encode(request, POSTERIOR, MODEL)
    assert isinstance(answer, Answer) and answer.content_type == content_type
    assert answer.headers == {}
    if codec is codecs.CSV:
        assert answer.body == b"mean_a,std_a,mean_b,std_b\n1.5,2.0,-2.0,0.5\n"
    elif codec is codecs.JSON:
        assert json.loads(answer.body) == {
            "model": "gp",
            "version": "1.0",
            "outputs": ["a", "b"],
            "observation_noise": False,
            "mean": [[1.5, -2.0]],
            "variance": [[4.0, 0.25]],
            "covariance_layout": "output-major",
            "extrapolation": [0],
            "covariance": [[4.0, 0.0], [0.0, 0.25]],
        }
    else:
        assert [output["data"] for output in json.loads(answer.body)["outputs"]] == [
            [1.5, -2.0],
            [4.0, 0.25],
            [4.0, 0.0, 0.0, 0.25],
        ]


def test_v2_binary_outputs_carry_the_header_length() -> None:
    body = json.dumps(
        {
            "inputs": [{"name": "X", "shape": [1, 2], "datatype": "FP64", "data": [0.1, 0.2]}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    codec = v2.V2Codec()
    answer = codec.encode(codec.decode(body, {}, BUDGET), POSTERIOR, MODEL)
    length = int(answer.headers[v2.HEADER_LENGTH])
    assert answer.content_type == v2.BINARY_TYPE == "application/octet-stream"
    assert np.array_equal(
        np.frombuffer(answer.body[length:], "<f8"), [1.5, -2.0, 4.0, 0.25, 4.0, 0.0, 0.0, 0.25]
    )
