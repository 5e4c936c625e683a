"""CSV (read by pyarrow), Parquet and Arrow IPC stream bodies through a real TorchServe, equal to
the in-process module's ``mean_var`` (docs/serving.md, step 5)."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.ipc as pa_ipc
import pyarrow.parquet as pq
import pytest
import requests
import torch

from gp_serve.handler.codecs.columnar import ARROW_TYPE, PARQUET_TYPE
from tests.serving.test_server import module, points  # noqa: F401 - (module: a fixture)

pytestmark = pytest.mark.server

TOLERANCE = 1e-8
COLUMNS = ["mean_branin", "std_branin", "mean_currin", "std_currin"]


def post(server, body: bytes, content_type: str, accept: str | None = None) -> requests.Response:
    headers = {"Content-Type": content_type, **server.headers()}
    if accept is not None:
        headers["Accept"] = accept
    return requests.post(server.predict_url, data=body, headers=headers, timeout=120)


def bodies(X: torch.Tensor) -> dict[str, bytes]:
    """The points as a CSV (columns reversed), a Parquet file and an Arrow IPC stream."""
    table = pa.table({"x2": X[:, 1].numpy(), "x1": X[:, 0].numpy()})
    parquet, stream = io.BytesIO(), io.BytesIO()
    pq.write_table(table, parquet)
    with pa_ipc.new_stream(stream, table.schema) as writer:
        writer.write_table(table, max_chunksize=7)
    text = "x2,x1\n" + "".join(f"{x2!r},{x1!r}\n" for x1, x2 in X.tolist())
    return {
        "text/csv": text.encode(),
        PARQUET_TYPE: parquet.getvalue(),
        ARROW_TYPE: stream.getvalue(),
    }


def numbers(response: requests.Response) -> tuple[list[str], np.ndarray]:
    """An answer's column names and `rows x columns` numbers, whatever its format."""
    kind = response.headers["Content-Type"].split(";")[0]
    if kind == "text/csv":
        lines = response.text.splitlines()
        return lines[0].split(","), np.array(
            [[float(c) for c in line.split(",")] for line in lines[1:]]
        )
    source = pa.py_buffer(response.content)
    table = pq.read_table(source) if kind == PARQUET_TYPE else pa_ipc.open_stream(source).read_all()
    assert all(field.type == pa.float64() for field in table.schema)
    return table.column_names, np.stack([c.to_numpy() for c in table.columns], axis=1)


@pytest.mark.parametrize("accept", [None, "text/csv", PARQUET_TYPE, ARROW_TYPE])
def test_columnar_bodies_answer_the_modules_moments(server, module, accept: str | None) -> None:  # noqa: F811
    """Every body format, answered in its own format or the accepted one: the CSV answer's
    columns, the module's mean and standard deviation (and the same numbers in every format)."""
    X = points(40, seed=12, low=-0.1, high=1.1)
    with torch.inference_mode():
        mean, variance = module.mean_var(X)
    expected = torch.stack([mean, variance.sqrt()], -1).flatten(1).numpy()
    answers = []
    for content_type, body in bodies(X).items():
        response = post(server, body, content_type, accept)
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith(accept or content_type)
        names, got = numbers(response)
        assert names == COLUMNS
        scale = np.abs(expected).max(axis=0)
        assert (np.abs(got - expected).max(axis=0) / scale).max() <= TOLERANCE
        answers.append(got)
    for got in answers[1:]:  # (the same computation: bit for bit)
        assert np.array_equal(got.view(np.int64), answers[0].view(np.int64))


@pytest.mark.parametrize(
    "content_type, body, error",
    [
        (
            PARQUET_TYPE,
            b"PAR1 not a parquet file PAR1",
            "Parquet body: unreadable (",
        ),
        (
            ARROW_TYPE,
            b"\xff" * 32,
            "Arrow IPC stream body: unreadable (",
        ),
        (
            "text/csv",
            b"x1,x2\n0.1,abc\n",
            "CSV line 2, column x2: expected a finite number, got 'abc'",
        ),
    ],
)
def test_bad_columnar_bodies_are_400_json(
    server, content_type: str, body: bytes, error: str
) -> None:
    response = post(server, body, content_type, PARQUET_TYPE)
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"].startswith(error), response.json()


def test_wrong_parquet_columns_are_400(server) -> None:
    sink = io.BytesIO()
    pq.write_table(pa.table({"x1": [0.1], "x2": pa.array([1], pa.int32())}), sink)
    response = post(server, sink.getvalue(), PARQUET_TYPE)
    assert (response.status_code, response.json()["error"]) == (
        400,
        "Parquet body column 'x2' is int32: expected float64 (double) columns only",
    )
