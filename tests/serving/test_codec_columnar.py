"""Unit tests of the columnar codecs (``handler/codecs/columnar.py``: CSV read by pyarrow,
Parquet and Arrow IPC stream bodies), without a server."""

from __future__ import annotations

import io
import json

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.ipc as pa_ipc
import pyarrow.parquet as pq
import pytest

from gp_serve.handler import codecs
from gp_serve.handler.codecs import columnar, csv_codec
from gp_serve.handler.codecs.base import Posterior, ServedModel
from gp_serve.handler.codecs.bounded_json import MAX_NUMBER_CHARS
from gp_serve.handler.codecs.budget import Budget, RequestError
from gp_serve.handler.codecs.columnar import ARROW_TYPE, PARQUET_TYPE, read_csv_fast
from tests.serving.cases import BAD_CSV

NAMES = ["x1", "x2"]
BUDGET = Budget(NAMES, ["a", "b"])
MODEL = ServedModel("gp", "1.0", ["a", "b"], "output-major", NAMES)


def decode(body: bytes | str, content_type: str, budget: Budget = BUDGET, **headers: str):
    return codecs.decode_request({"body": body}, {"Content-Type": content_type, **headers}, budget)


def refused(body: bytes | str, content_type: str, budget: Budget = BUDGET) -> RequestError:
    with pytest.raises(RequestError) as info:
        decode(body, content_type, budget)
    return info.value


def parquet(table: pa.Table, **options) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)
    return sink.getvalue()


def stream(table: pa.Table, max_chunksize: int | None = None, **options) -> bytes:
    sink = io.BytesIO()
    with pa_ipc.new_stream(sink, table.schema, options=pa_ipc.IpcWriteOptions(**options)) as w:
        w.write_table(table, max_chunksize=max_chunksize)
    return sink.getvalue()


def random_values(count: int, seed: int = 0) -> np.ndarray:
    """Float64 of every magnitude, signs, subnormals and the extremes."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(count) * 10.0 ** rng.integers(-300, 300, count)
    extremes = [5e-324, -5e-324, 1.7976931348623157e308, 2.2250738585072014e-308, -0.0, 0.0]
    return np.concatenate([values, extremes, [0.1 + 0.2, 1e16, 1e22, 123456789012345680.0]])


# --- CSV: the fast path reads what the Python parser reads, bit for bit ----------------------


@pytest.mark.parametrize(
    "body",
    [
        "x1,x2\n0.1,0.2\n0.3,0.4\n",
        "x2,x1\n0.2,0.1\n0.4,0.3\n",  # header in another order: reordered
        "\ufeff x2 ,\tx1\r\n0.2,0.1\r\n\r\n 0.4 , 0.3\n",  # BOM, CRLF, blank line, spaces
        '"x2","x1"\n0.2,0.1\n0.4,0.3',  # quoted header, no final newline
        "\n\n0.1,0.2\n+3.,-.5\n1e5,1E-05\n",  # no header, blank lines first
        "0.1,0.2\n\n\n",
    ],
)
def test_fast_csv_equals_the_python_parser(body: str) -> None:
    fast = read_csv_fast(body.encode(), BUDGET)
    assert fast is not None
    python = np.array(csv_codec.parse_csv(body.encode(), NAMES).points)
    assert fast.dtype == np.float64 and fast.flags.c_contiguous
    assert np.array_equal(fast.view(np.int64), python.view(np.int64))
    request = decode(body.encode(), "text/csv")
    assert np.array_equal(request.points, python) and request.envelope == "csv"


def test_fast_csv_parses_every_float64_text_like_python() -> None:
    """Shortest round-trip text, long digit strings up to the limit, both correctly rounded."""
    values = random_values(20_000).reshape(-1, 2)
    rows = [",".join(map(repr, row)) for row in values.tolist()]
    rng = np.random.default_rng(1)
    long = ["0." + "".join(rng.choice(list("0123456789"), MAX_NUMBER_CHARS - 2)) for _ in range(50)]
    rows += [f"{text},-{text[:-4]}e-3" for text in long]
    body = ("x1,x2\n" + "\n".join(rows) + "\n").encode()
    fast = read_csv_fast(body, BUDGET)
    assert fast is not None
    expected = np.array(csv_codec.parse_csv(body, NAMES).points)
    assert np.array_equal(fast.view(np.int64), expected.view(np.int64))


@pytest.mark.parametrize(
    "body",
    [
        '0.1,"0.2"\n',  # quoted data cells: the Python parser reads them
        '"1"2,3\n',  # (pyarrow would read 12)
        "0.1,0.2\n , \n",  # a row of blank cells: skipped by the Python parser
        "0.1,0.2\r0.3,0.4\r",  # bare CR line ends
        "x1,x2\n" + "1" * (MAX_NUMBER_CHARS + 1) + ",2\n",  # too long for a number
        "0.1,nan\n",
        "1e400,0.2\n",
        "x1,x3\n0.1,0.2\n",
    ],
)
def test_fast_csv_leaves_other_bodies_to_the_python_parser(body: str) -> None:
    assert read_csv_fast(body.encode(), BUDGET) is None


def test_quoted_csv_is_read_by_the_python_parser() -> None:
    assert decode(b'"x1","x2"\n"0.1", 0.2\n0.3,"4e-1"', "text/csv").points.tolist() == [
        [0.1, 0.2],
        [0.3, 0.4],
    ]


@pytest.mark.parametrize("name, body, error", BAD_CSV, ids=[case[0] for case in BAD_CSV])
def test_bad_csv_gets_the_python_parsers_message(name: str, body: str, error: str) -> None:
    refusal = refused(body.encode() if isinstance(body, str) else body, "text/csv")
    assert (refusal.status, str(refusal)) == (400, error)


def test_csv_budget_is_the_python_parsers() -> None:
    small = Budget(NAMES, ["a", "b"], max_points=3)
    refusal = refused(b"x1,x2\n" + b"0.1,0.2\n" * 4, "text/csv", small)
    assert (refusal.status, str(refusal)) == (
        413,
        "a CSV body (line 5) is limited to 3 points, got at least 4: split the points into "
        "several requests (client.score_csv does for CSV: --chunk-rows)",
    )
    # blank lines do not count: the Python parser decides
    assert len(decode(b"x1,x2\n" + b"0.1,0.2\n\n\n" * 3, "text/csv", small).points) == 3


def test_csv_reader_python_is_the_python_codec() -> None:
    headers = {"Content-Type": "text/csv"}
    assert codecs.select({"body": b"0.1,0.2\n"}, headers, BUDGET, "python") is csv_codec.CSV
    assert codecs.select({"body": b"0.1,0.2\n"}, headers, BUDGET) is codecs.CSV is columnar.CSV


def test_arrow_writes_round_trip_floats_in_other_notations() -> None:
    """Why CSV answers keep orjson's text: Arrow's is exact but not JSON's (nor repr's)."""
    values = random_values(2000)
    sink = io.BytesIO()
    pa_csv.write_csv(pa.table({"v": values}), sink, pa_csv.WriteOptions(include_header=False))
    texts = sink.getvalue().decode().splitlines()
    assert all(float(text) == value for text, value in zip(texts, values, strict=True))
    assert [text for text in texts if "e+" in text and "e+" not in repr(float(text))]
    ours = csv_codec.csv_rows(values.reshape(-1, 1)).splitlines()
    assert ours == [orjson.dumps(float(value)) for value in values]


# --- Parquet and Arrow bodies -----------------------------------------------------------------


TABLE = pa.table({"x2": [0.2, 0.4, 5e-324], "x1": [0.1, -0.0, 1e308]})
POINTS = [[0.1, 0.2], [-0.0, 0.4], [1e308, 5e-324]]


@pytest.mark.parametrize(
    "body, content_type",
    [
        (parquet(TABLE), PARQUET_TYPE),
        (parquet(TABLE, compression="zstd", row_group_size=2), PARQUET_TYPE),
        (stream(TABLE), ARROW_TYPE),
        (stream(TABLE, max_chunksize=1), ARROW_TYPE),
    ],
)
def test_binary_bodies_are_read_exactly_and_reordered(body: bytes, content_type: str) -> None:
    request = decode(body, content_type + "; charset=binary")
    assert request.points.dtype == np.float64
    assert np.array_equal(request.points.view(np.int64), np.array(POINTS).view(np.int64))
    assert request.envelope == columnar.media_format(content_type)


BAD_TABLES = [
    (
        "unknown column",
        pa.table({"x1": [0.1], "x3": [0.2]}),
        "{what} columns: expected the input names ['x1', 'x2'] (in any order), got ['x1', 'x3']",
    ),
    (
        "extra column",
        pa.table({"x1": [0.1], "x2": [0.2], "x3": [0.3]}),
        "{what} columns: expected the input names ['x1', 'x2'] (in any order), got "
        "['x1', 'x2', 'x3']",
    ),
    (
        "integers",
        pa.table({"x1": [0.1], "x2": pa.array([1], pa.int64())}),
        "{what} column 'x2' is int64: expected float64 (double) columns only",
    ),
    (
        "float32",
        pa.table({"x1": [0.1], "x2": pa.array([1], pa.float32())}),
        "{what} column 'x2' is float: expected float64 (double) columns only",
    ),
    (
        "strings",
        pa.table({"x1": [0.1], "x2": ["0.2"]}),
        "{what} column 'x2' is string: expected float64 (double) columns only",
    ),
    (
        "nulls",
        pa.table({"x1": [0.1, 0.2, 0.3], "x2": [0.2, None, None]}),
        "{what} column 'x2': 2 nulls (the first at row 1, counting from 0): expected a finite "
        "number in every row",
    ),
    (
        "nan",
        pa.table({"x1": [0.1, float("nan")], "x2": [0.2, 0.3]}),
        "{what} column 'x1', row 1 (counting from 0): expected a finite number, got nan",
    ),
    (
        "inf",
        pa.table({"x1": [0.1, 0.2], "x2": [0.2, float("-inf")]}),
        "{what} column 'x2', row 1 (counting from 0): expected a finite number, got -inf",
    ),
    (
        "no rows",
        pa.table({"x1": pa.array([], pa.float64()), "x2": pa.array([], pa.float64())}),
        "{what}: expected at least one data row, got none",
    ),
]


@pytest.mark.parametrize("name, table, error", BAD_TABLES, ids=[case[0] for case in BAD_TABLES])
@pytest.mark.parametrize("content_type", [PARQUET_TYPE, ARROW_TYPE])
def test_bad_tables_are_refused_naming_the_rule(
    name: str, table: pa.Table, error: str, content_type: str
) -> None:
    body, what = (
        (parquet(table), "Parquet body")
        if content_type == PARQUET_TYPE
        else (stream(table), "Arrow IPC stream body")
    )
    refusal = refused(body, content_type)
    assert (refusal.status, str(refusal)) == (400, error.format(what=what))


@pytest.mark.parametrize("content_type", [PARQUET_TYPE, ARROW_TYPE])
@pytest.mark.parametrize(
    "body",
    [b"x1,x2\n0.1,0.2\n", b"PAR1" + b"\0" * 40 + b"PAR1", b"\xff" * 64, b"{}"],
    ids=["csv", "parquet-magic", "noise", "json"],
)
def test_corrupt_binary_bodies_are_400(content_type: str, body: bytes) -> None:
    refusal = refused(body, content_type)
    assert refusal.status == 400
    what = "Parquet body" if content_type == PARQUET_TYPE else "Arrow IPC stream body"
    assert str(refusal).startswith(f"{what}: ")


def test_truncated_binary_bodies_are_400() -> None:
    table = pa.table({"x1": np.arange(100.0), "x2": np.arange(100.0)})
    for content_type, body in ((PARQUET_TYPE, parquet(table)), (ARROW_TYPE, stream(table))):
        for cut in (len(body) // 3, len(body) - 9):
            refusal = refused(body[:cut], content_type)
            assert refusal.status == 400 and "unreadable" in str(refusal), str(refusal)
    assert str(refused(b"", PARQUET_TYPE)) == (
        "Parquet body: expected the file's bytes, got an empty or decoded body"
    )


def test_arrow_file_format_and_compressed_batches_are_refused() -> None:
    sink = io.BytesIO()
    with pa_ipc.new_file(sink, TABLE.schema) as writer:
        writer.write_table(TABLE)
    assert str(refused(sink.getvalue(), ARROW_TYPE)) == (
        "Arrow IPC stream body: got the Arrow IPC file format (it starts with ARROW1): expected "
        "the stream format (application/vnd.apache.arrow.stream; pyarrow.ipc.new_stream, not "
        "new_file)"
    )
    assert str(refused(stream(TABLE, compression="zstd"), ARROW_TYPE)) == (
        "Arrow IPC stream body: batch 0 is compressed: expected uncompressed record batches "
        "(send Parquet for a compressed body)"
    )


def test_batch_facts_reads_the_rows_from_the_message() -> None:
    table = pa.table({"x1": np.arange(10.0), "x2": np.arange(10.0)})
    for options, compressed in (({}, False), ({"compression": "lz4"}, True)):
        reader = pa_ipc.MessageReader.open_stream(pa.py_buffer(stream(table, 4, **options)))
        assert reader.read_next_message().type == "schema"
        facts = [columnar.batch_facts(message.metadata.to_pybytes()) for message in reader]
        assert facts == [(4, compressed), (4, compressed), (2, compressed)]


def test_binary_budgets_are_checked_before_reading() -> None:
    small = Budget(NAMES, ["a", "b"], max_points=3)
    table = pa.table({"x1": np.arange(5.0), "x2": np.arange(5.0)})
    refusal = refused(parquet(table), PARQUET_TYPE, small)
    assert (refusal.status, str(refusal)) == (
        413,
        "a Parquet body is limited to 3 points, got 5: split the points into several requests "
        "(client.score_csv does for CSV: --chunk-rows)",
    )
    refusal = refused(stream(table, max_chunksize=2), ARROW_TYPE, small)
    assert (refusal.status, str(refusal)) == (
        413,
        "an Arrow IPC stream body is limited to 3 points, got at least 4: split the points "
        "into several requests (client.score_csv does for CSV: --chunk-rows)",
    )
    tiny_answers = Budget(NAMES, ["a", "b"], max_response_bytes=3000)
    refusal = refused(
        parquet(pa.table({"x1": [0.1] * 40, "x2": [0.2] * 40})), PARQUET_TYPE, tiny_answers
    )
    assert refusal.status == 413 and str(refusal).startswith("the answer to 40 points")


# --- answers ----------------------------------------------------------------------------------


POSTERIOR = Posterior(
    mean=np.array([[1.5, -2.0], [0.1 + 0.2, 1e-300]]),
    variance=np.array([[4.0, 0.25], [2.0, 3.0]]),
    std=np.sqrt(np.array([[4.0, 0.25], [2.0, 3.0]])),
    covariance=None,
    extrapolation=[],
)
CSV_ANSWER = csv_codec.CSV.encode(csv_codec.parse_csv("0,0\n0,0\n", NAMES), POSTERIOR, MODEL).body


def _read_answer(body: bytes, content_type: str) -> pa.Table:
    if content_type == PARQUET_TYPE:
        return pq.read_table(pa.py_buffer(body))
    return pa_ipc.open_stream(pa.py_buffer(body)).read_all()


@pytest.mark.parametrize("answer_type", [PARQUET_TYPE, ARROW_TYPE])
@pytest.mark.parametrize("body_type", ["text/csv", PARQUET_TYPE, ARROW_TYPE])
def test_binary_answers_hold_the_csv_columns_bit_for_bit(body_type: str, answer_type: str) -> None:
    body = {
        "text/csv": b"x1,x2\n0,0\n0,0\n",
        PARQUET_TYPE: parquet(pa.table({"x1": [0.0, 0.0], "x2": [0.0, 0.0]})),
        ARROW_TYPE: stream(pa.table({"x1": [0.0, 0.0], "x2": [0.0, 0.0]})),
    }[body_type]
    headers = {"Content-Type": body_type}
    if answer_type != body_type:
        headers["Accept"] = f"application/json;q=0.9, {answer_type}"
    codec = codecs.select({"body": body}, headers, BUDGET)
    answer = codec.encode(codec.decode(body, headers, BUDGET), POSTERIOR, MODEL)
    assert answer.content_type == answer_type
    table = _read_answer(answer.body, answer_type)
    assert table.column_names == ["mean_a", "std_a", "mean_b", "std_b"]
    assert all(field.type == pa.float64() for field in table.schema)
    got = np.stack([column.to_numpy() for column in table.columns], axis=1)
    expected = np.stack([POSTERIOR.mean, POSTERIOR.std], -1).reshape(2, -1)
    assert np.array_equal(got.view(np.int64), expected.view(np.int64))


@pytest.mark.parametrize("body_type", [PARQUET_TYPE, ARROW_TYPE])
def test_binary_bodies_answer_csv_when_accepted(body_type: str) -> None:
    table = pa.table({"x1": [0.0, 0.0], "x2": [0.0, 0.0]})
    body = parquet(table) if body_type == PARQUET_TYPE else stream(table)
    headers = {"Content-Type": body_type, "accept": "text/csv"}
    codec = codecs.select({"body": body}, headers, BUDGET)
    answer = codec.encode(codec.decode(body, headers, BUDGET), POSTERIOR, MODEL)
    assert (answer.body, answer.content_type) == (CSV_ANSWER, "text/csv; charset=utf-8")


def test_csv_answers_are_the_python_codecs() -> None:
    codec = codecs.select({"body": b"0,0\n0,0\n"}, {"Content-Type": "text/csv"}, BUDGET)
    answer = codec.encode(codec.decode(b"0,0\n0,0\n", {}, BUDGET), POSTERIOR, MODEL)
    assert answer.body == CSV_ANSWER
    assert (
        answer.body.splitlines()[2]
        == b"0.30000000000000004,1.4142135623730951,1e-300,1.7320508075688772"
    )


def test_products_columns_follow_the_csv_header() -> None:
    body = parquet(pa.table({"x1": [0.0, 0.0], "x2": [0.0, 0.0]}))
    headers = {"Content-Type": PARQUET_TYPE, "GP-Quantiles": "[0.5]"}
    request = codecs.decode_request({"body": body}, headers, BUDGET)
    assert request.products.quantiles == (0.5,)
    quantiles = np.array([[[1.0, 2.0], [3.0, 4.0]]])  # (levels x q x m)
    posterior = Posterior(**{**POSTERIOR.__dict__, "products": {"quantiles": quantiles}})
    answer = columnar.PARQUET.encode(request, posterior, MODEL)
    table = pq.read_table(pa.py_buffer(answer.body))
    assert table.column_names == ["mean_a", "std_a", "mean_b", "std_b", "q50_a", "q50_b"]
    assert table.column("q50_b").to_pylist() == [2.0, 4.0]


def test_errors_are_json() -> None:
    assert columnar.PARQUET.error("bad", 400) == (b'{"error":"bad","code":400}', "application/json")
    assert json.loads(columnar.ARROW.error("x", 413)[0]) == {"error": "x", "code": 413}


@pytest.mark.parametrize(
    "value, expected",
    [
        ("application/vnd.apache.parquet", "parquet"),
        ("Application/Vnd.Apache.Arrow.Stream; x=1", "arrow"),
        ("text/csv", "csv"),
        ("application/json", None),
        (None, None),
    ],
)
def test_media_format(value: str | None, expected: str | None) -> None:
    assert columnar.media_format(value) == expected
