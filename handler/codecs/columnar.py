"""Columnar bodies of ``POST /predictions/<model>``: CSV read by pyarrow, and Parquet
(``application/vnd.apache.parquet``) and Arrow IPC stream (``application/vnd.apache.arrow.stream``)
bodies in and out, with the CSV answer's columns (``mean_<output>,std_<output>``, then the
products'). Errors are the JSON codec's.

A CSV body is read by pyarrow's CSV reader when it can be read exactly as `csv_codec.parse_csv`
reads it; every other body (quoted cells, blank cells, non-finite values, a header that is not
the input names, ...) goes to `csv_codec.parse_csv`, whose verdict and message are the answer.
CSV answers keep `csv_codec.csv_rows` (orjson's shortest round-trip text: Arrow's writer is
round-trip exact too, but writes other notations, ``1.4209820223119162e+13`` for
``14209820223119.162``, and is slower).

See docs/serving.md (step 5, "Limits").
"""

from __future__ import annotations

import csv
import struct
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.csv as pa_csv  # type: ignore[import-untyped]
import pyarrow.ipc as pa_ipc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from gp_serve.handler.codecs import csv_codec, products
from gp_serve.handler.codecs.base import Answer, Codec, CovarianceMode, Posterior, ServedModel
from gp_serve.handler.codecs.bounded_json import MAX_NUMBER_CHARS
from gp_serve.handler.codecs.budget import BINARY_BYTES, Budget, RequestError, clip
from gp_serve.handler.codecs.csv_codec import CSV_TYPE, CSV_TYPES
from gp_serve.handler.codecs.v1 import JsonCodec, PredictRequest

PARQUET_TYPE = "application/vnd.apache.parquet"
ARROW_TYPE = "application/vnd.apache.arrow.stream"
# Each format's name and the media types that name it (request Content-Type, Accept).
MEDIA_TYPES: dict[str, tuple[str, ...]] = {
    "csv": CSV_TYPES,
    "parquet": (PARQUET_TYPE, "application/x-parquet"),
    "arrow": (ARROW_TYPE,),
}
# Each format's answer Content-Type.
ANSWER_TYPES = {"csv": CSV_TYPE, "parquet": PARQUET_TYPE, "arrow": ARROW_TYPE}
# The ways CSV bodies may be read (model-config.yaml's ``handler.csv_reader``): pyarrow with the
# Python parser for what it does not read exactly, or the Python parser alone (as before 0.18).
CSV_READERS = ("arrow", "python")
# What a Parquet column chunk may take uncompressed per row (a float64, its levels and page
# headers, generously) and besides its rows: more is refused before anything is decompressed.
PARQUET_BYTES_PER_ROW = 16
PARQUET_CHUNK_SLACK_BYTES = 1 << 16
_BOM = b"\xef\xbb\xbf"
_SEPARATORS = np.frombuffer(b",\n\r", np.uint8)


def media_format(content_type: str | None) -> str | None:
    """The columnar format (``csv``, ``parquet``, ``arrow``) a media type names, any
    parameters and case; None for any other."""
    if not content_type:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    return next((name for name, types in MEDIA_TYPES.items() if media in types), None)


def accepted_format(headers: dict) -> str | None:
    """The first columnar format an ``Accept`` header lists (any case; quality values are
    not weighed), or None (no header, ``*/*``, only other types)."""
    for name, value in headers.items():
        if isinstance(name, str) and name.lower() == "accept" and isinstance(value, str):
            for media in value.split(","):
                found = media_format(media)
                if found is not None:
                    return found
    return None


@dataclass(frozen=True)
class TableRequest:
    """A validated columnar request (CSV, Parquet or Arrow): moments only, no covariance.

    Attributes:
        points: `q x d` float64 inputs (C-contiguous numpy), columns in input-name order.
        covariance: Always ``"none"`` (rows have no covariance).
        observation_noise: Always False (as CSV).
        products: The quantiles, acquisition values and gradients asked for in the ``GP-*``
            request headers (`csv_codec.header_products`).
        envelope: The body's format: ``csv``, ``parquet`` or ``arrow``.
    """

    points: np.ndarray
    covariance: CovarianceMode = "none"
    observation_noise: bool = False
    products: products.Products = products.NONE
    envelope: str = "csv"


# --- reading --------------------------------------------------------------------------------


def _first_line(data: bytes) -> tuple[bytes, int, int] | None:
    """The first line of ``data`` with anything but ASCII whitespace, its start and the start
    of the line after it; None if there is none."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        if data[start:end].strip():
            return data[start:end], start, end + 1
        start = end + 1
    return None


def _header_order(line: bytes, input_names: list[str]) -> list[int] | None:
    """The file column of each input if ``line`` is a header of the input names (in any
    order); None if it is not a header or not one the fast path reads (the Python parser
    then decides).

    Raises:
        ValueError: If the line is not one CSV row of UTF-8 text (the Python parser decides).
    """
    text = line.decode("utf-8")
    if "\r" in text.removesuffix("\r"):
        raise ValueError("a lone carriage return")
    cells = [cell.strip() for cell in next(csv.reader([text], strict=True), [])]
    if not any(cells) or any(csv_codec._is_number(cell) for cell in cells):
        return None
    if len(cells) != len(input_names) or sorted(cells) != sorted(input_names):
        raise ValueError("not the input names")
    return [cells.index(name) for name in input_names]


def _longest_cell(data: bytes) -> int:
    """The most bytes between two separators (comma, CR, LF) of ``data``: a bound of its
    longest cell."""
    codes = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(np.isin(codes, _SEPARATORS))
    if not len(ends):
        return len(codes)
    return int(max(ends[0], len(codes) - 1 - ends[-1], np.diff(ends).max(initial=1) - 1))


def read_csv_fast(body: bytes | bytearray | str, budget: Budget) -> np.ndarray | None:
    """The `q x d` points of a CSV body read by pyarrow, or None when pyarrow cannot read it
    exactly as `csv_codec.parse_csv` would (then that parser must decide).

    Read here: an optional first row of the input names (any order; whitespace around them
    and quotes are allowed), then rows of ``d`` unquoted finite numbers of at most
    `MAX_NUMBER_CHARS` characters, commas between them, LF or CRLF line ends, empty lines
    anywhere, at most `Budget.max_points` rows. Numbers are parsed correctly rounded, as
    Python's ``float``.

    Args:
        body: The raw CSV bytes (a str is encoded as UTF-8).
        budget: The model's inputs and limits.
    """
    try:  # (a str is the text itself: the Python parser keeps its byte-order mark too)
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body).removeprefix(_BOM)
    except UnicodeEncodeError:
        return None
    first = _first_line(data)
    d = len(budget.input_names)
    if first is None:
        return None
    line, start, after = first
    try:
        order = _header_order(line, budget.input_names)
    except (ValueError, csv.Error):
        return None
    rows = data[after:] if order is not None else data[start:]
    if (
        b'"' in rows  # (pyarrow reads "1"2 as 12; Python's csv module refuses it)
        or rows.count(b"\n") + 1 > budget.max_points  # (counted before any conversion)
        or _longest_cell(rows) > MAX_NUMBER_CHARS
    ):
        return None
    names = [f"c{k}" for k in range(d)]
    try:
        table = pa_csv.read_csv(
            pa.py_buffer(rows),
            read_options=pa_csv.ReadOptions(column_names=names, use_threads=False),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.float64()), quoted_strings_can_be_null=False
            ),
        )
    except (pa.ArrowException, ValueError):
        return None
    if table.num_rows == 0 or any(column.null_count for column in table.columns):
        return None
    columns = [table.column(k).to_numpy() for k in (order or range(d))]
    points = np.ascontiguousarray(np.stack(columns, axis=1), dtype=np.float64)
    return points if np.isfinite(points).all() else None


def _column_names(what: str, names: list[str], input_names: list[str]) -> list[int]:
    """The column of each input; ``names`` must be the input names, in any order.

    Raises:
        RequestError: Naming the columns found, otherwise.
    """
    if sorted(names) != sorted(input_names):
        raise RequestError(
            f"{what} columns: expected the input names {input_names} (in any order), "
            f"got {[clip(name) for name in names[:10]]}"
            + (f" (of {len(names)})" if len(names) > 10 else "")
        )
    return [names.index(name) for name in input_names]


def _check_schema(what: str, schema: pa.Schema, input_names: list[str]) -> list[int]:
    """The column of each input in ``schema``, whose columns must be the input names, each
    float64.

    Raises:
        RequestError: For other columns or another type.
    """
    order = _column_names(what, list(schema.names), input_names)
    for field in schema:
        if field.type != pa.float64():
            raise RequestError(
                f"{what} column {clip(field.name)!r} is {clip(str(field.type))}: expected "
                "float64 (double) columns only"
            )
    return order


def _points(what: str, columns: list[pa.ChunkedArray | pa.Array], names: list[str]) -> np.ndarray:
    """`q x d` float64 points from float64 columns (in input order), every value checked.

    Raises:
        RequestError: For no rows, a null or a value that is not finite.
    """
    if not len(columns[0]):
        raise RequestError(f"{what}: expected at least one data row, got none")
    for column, name in zip(columns, names, strict=True):
        if column.null_count:
            first = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            nulls = f"{column.null_count} null" + ("s" if column.null_count > 1 else "")
            raise RequestError(
                f"{what} column {name!r}: {nulls} (the first at row {first}, counting from 0): "
                "expected a finite number in every row"
            )
    points = np.ascontiguousarray(
        np.stack([np.asarray(column) for column in columns], axis=1), dtype=np.float64
    )
    bad = ~np.isfinite(points)
    if bad.any():
        row, col = (int(i[0]) for i in np.nonzero(bad))
        raise RequestError(
            f"{what} column {names[col]!r}, row {row} (counting from 0): expected a finite "
            f"number, got {float(points[row, col])!r}"
        )
    return points


def _unreadable(what: str, error: Exception, expected: str) -> RequestError:
    message = " ".join(str(error).split())
    return RequestError(
        f"{what}: unreadable ({type(error).__name__}: {clip(message, 160)}): {expected}"
    )


def read_parquet(body: bytes | bytearray, budget: Budget) -> np.ndarray:
    """The `q x d` points of a Parquet body: one float64 column per input, named by it (any
    order), no nulls, finite values.

    Rows are counted (and refused past `Budget.max_points`) from the file's metadata, and
    the columns' uncompressed sizes bounded, before anything is decompressed.

    Raises:
        RequestError: If the body is not a Parquet file, its columns or values break the
            rules (400), or it has too many rows (413).
    """
    what = "Parquet body"
    expected = "expected a Parquet file (pyarrow.parquet.write_table)"
    try:
        parquet = pq.ParquetFile(pa.BufferReader(pa.py_buffer(bytes(body))))
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as e:
        raise _unreadable(what, e, expected) from e
    order = _check_schema(what, schema, budget.input_names)
    metadata = parquet.metadata
    budget.check_points(metadata.num_rows, f"a {what}")
    for group in range(metadata.num_row_groups):
        chunk = metadata.row_group(group)
        for k in order:
            size = chunk.column(k).total_uncompressed_size
            if size > PARQUET_BYTES_PER_ROW * chunk.num_rows + PARQUET_CHUNK_SLACK_BYTES:
                raise RequestError(
                    f"{what}: row group {group}, column {schema.names[k]!r}: "
                    f"{size} bytes uncompressed for {chunk.num_rows} rows: expected at most "
                    f"{PARQUET_BYTES_PER_ROW} bytes a row (plain float64 values)"
                )
    try:
        table = parquet.read(use_threads=False)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise _unreadable(what, e, expected) from e
    if table.num_rows != metadata.num_rows:
        raise RequestError(
            f"{what}: {table.num_rows} rows read, the metadata says {metadata.num_rows}: {expected}"
        )
    return _points(what, [table.column(k) for k in order], budget.input_names)


def _table_field(data: bytes, table: int, index: int) -> int | None:
    """Where field ``index`` of the flatbuffer table at ``table`` is, or None if absent."""
    vtable = table - struct.unpack_from("<i", data, table)[0]
    slot = 4 + 2 * index
    if slot >= struct.unpack_from("<H", data, vtable)[0]:
        return None
    offset = struct.unpack_from("<H", data, vtable + slot)[0]
    return table + offset if offset else None


def batch_facts(metadata: bytes) -> tuple[int, bool]:
    """A record batch message's rows and whether its buffers are compressed, read from its
    flatbuffer metadata (``Message.header`` -> ``RecordBatch.length``, ``.compression``:
    Arrow's Message.fbs) before its body is touched.

    Raises:
        ValueError: If the metadata is not such a flatbuffer.
    """
    try:
        root = struct.unpack_from("<I", metadata, 0)[0]
        header = _table_field(metadata, root, 2)
        if header is None:
            raise ValueError("a message without a header")
        batch = header + struct.unpack_from("<I", metadata, header)[0]
        length = _table_field(metadata, batch, 0)
        rows = struct.unpack_from("<q", metadata, length)[0] if length is not None else 0
        return rows, _table_field(metadata, batch, 3) is not None
    except struct.error as e:
        raise ValueError(f"a truncated message header ({e})") from e


def read_arrow_stream(body: bytes | bytearray, budget: Budget) -> np.ndarray:
    """The `q x d` points of an Arrow IPC stream body: its schema one float64 column per
    input, named by it (any order), then record batches without nulls or non-finite values.

    Each batch's rows are read from its message's metadata and counted against
    `Budget.max_points` before the batch is read; compressed batches are refused (their
    size is not bounded by the body's: send Parquet to compress). The batches' values are
    the body's own bytes, not copies, until the points are assembled.

    Raises:
        RequestError: If the body is not an IPC stream (an IPC file, corrupt bytes), its
            columns or values break the rules, a batch is compressed (400), or it has too
            many rows (413).
    """
    what = "Arrow IPC stream body"
    expected = "expected an Arrow IPC stream (pyarrow.ipc.new_stream)"
    data = bytes(body)
    if data.startswith(b"ARROW1"):
        raise RequestError(
            f"{what}: got the Arrow IPC file format (it starts with ARROW1): expected the "
            f"stream format ({ARROW_TYPE}; pyarrow.ipc.new_stream, not new_file)"
        )
    batches: list[pa.RecordBatch] = []
    rows = 0
    try:
        reader = pa_ipc.MessageReader.open_stream(pa.py_buffer(data))
        message = reader.read_next_message()
        if message.type != "schema":
            raise RequestError(f"{what}: the first message is a {message.type}: {expected}")
        schema = pa_ipc.read_schema(message)
        order = _check_schema(what, schema, budget.input_names)
        for message in reader:
            if message.type != "record batch":
                raise RequestError(f"{what}: a {message.type} message: {expected}")
            count, compressed = batch_facts(message.metadata.to_pybytes())
            if compressed:
                raise RequestError(
                    f"{what}: batch {len(batches)} is compressed: expected uncompressed "
                    "record batches (send Parquet for a compressed body)"
                )
            rows += count
            budget.check_points(rows, f"an {what}", True)
            batch = pa_ipc.read_record_batch(message, schema)
            batch.validate(full=True)
            batches.append(batch)
    except (StopIteration, EOFError) as e:
        raise RequestError(f"{what}: no schema message: {expected}") from e
    except (pa.ArrowException, OSError, ValueError) as e:
        if isinstance(e, RequestError):
            raise
        raise _unreadable(what, e, expected) from e
    if not batches:
        raise RequestError(f"{what}: expected at least one data row, got none")
    table = pa.Table.from_batches(batches, schema)
    return _points(what, [table.column(k) for k in order], budget.input_names)


# --- writing --------------------------------------------------------------------------------


def answer_names(request: Any, model: ServedModel) -> list[str]:
    """The answer's column names: the CSV answer's header (`csv_codec.csv_header`)."""
    header = csv_codec.csv_header(model.output_names, request.products, model.input_names)
    return header.decode().rstrip("\n").split(",")


def answer_table(request: Any, posterior: Posterior, model: ServedModel) -> pa.Table:
    """The answer as an Arrow table: `answer_names`' columns, one row per point, float64."""
    columns = np.ascontiguousarray(csv_codec.answer_rows(posterior).T)  # (rows of columns)
    names = answer_names(request, model)
    return pa.Table.from_arrays([pa.array(column) for column in columns], names=names)


def write_parquet(table: pa.Table) -> bytes:
    """``table`` as a Parquet file (plain float64 pages, Snappy, one row group)."""
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        row_group_size=max(1, table.num_rows),
        use_dictionary=False,
        compression="snappy",
    )
    return sink.getvalue().to_pybytes()


def write_arrow_stream(table: pa.Table) -> bytes:
    """``table`` as an Arrow IPC stream (one uncompressed record batch)."""
    sink = pa.BufferOutputStream()
    with pa_ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


# --- the codecs -----------------------------------------------------------------------------


class ColumnarCodec(Codec):
    """A columnar body in, a columnar answer out (`answer`: the body's format unless the
    request's ``Accept`` names another); errors in the JSON codec's form.

    Attributes:
        answer: The answer's format (``csv``, ``parquet`` or ``arrow``).
    """

    name: ClassVar[str]
    chunked = True  # (a body may be a whole file's rows: predicted chunk_rows at a time)

    def __init__(self, answer: str | None = None) -> None:
        """
        Args:
            answer: The answer's format (default: the codec's own, `name`).
        """
        self.answer = answer or self.name

    def read(self, body: Any, budget: Budget) -> np.ndarray:
        """The body's `q x d` points, validated and within ``budget``'s points.

        Raises:
            RequestError: If anything is invalid (400) or too many (413).
        """
        raise NotImplementedError

    def decode(self, body: Any, headers: dict, budget: Budget) -> TableRequest:
        """`read`, the ``GP-*`` headers' products, then the answer's cost.

        Raises:
            RequestError: If anything is invalid (400) or too large (413).
        """
        points = self.read(body, budget)
        asked = csv_codec.header_products(headers, len(points), budget)
        request = TableRequest(points, products=asked, envelope=self.name)
        q = len(points)
        if self.answer == "csv":
            csv_codec.check_cost(request, budget)  # type: ignore[arg-type]
        else:
            columns = 2 * len(budget.output_names) + asked.numbers(1, len(budget.output_names))
            size = budget.overhead_bytes(q) + BINARY_BYTES * q * columns
            budget.check_answer(size, q, request.covariance)
        return request

    def encode(self, request: TableRequest, posterior: Posterior, model: ServedModel) -> Answer:
        """The answer's columns (`answer_names`) in the `answer` format: CSV as
        `csv_codec.CsvCodec` writes it, or a Parquet file or an Arrow IPC stream of float64
        columns holding the posterior's values bit for bit."""
        if self.answer == "csv":
            header = csv_codec.csv_header(model.output_names, request.products, model.input_names)
            rows = csv_codec.answer_rows(posterior)
            return Answer(header + csv_codec.csv_rows(rows), CSV_TYPE)
        table = answer_table(request, posterior, model)
        writer = write_parquet if self.answer == "parquet" else write_arrow_stream
        return Answer(writer(table), ANSWER_TYPES[self.answer])

    error = JsonCodec.error


class ArrowCsvCodec(ColumnarCodec):
    """CSV bodies read by pyarrow (`read_csv_fast`), the others by `csv_codec.parse_csv`."""

    name = "csv"

    def read(self, body: Any, budget: Budget) -> np.ndarray:
        """`read_csv_fast`, else `csv_codec.parse_csv` (its verdict and message)."""
        points = read_csv_fast(body, budget) if isinstance(body, (bytes, bytearray, str)) else None
        if points is not None:
            return points
        request: PredictRequest = csv_codec.parse_csv(body, budget.input_names, budget)
        return np.asarray(request.points, dtype=np.float64).reshape(-1, len(budget.input_names))


class ParquetCodec(ColumnarCodec):
    """Parquet bodies (`read_parquet`)."""

    name = "parquet"

    def read(self, body: Any, budget: Budget) -> np.ndarray:
        """`read_parquet`.

        Raises:
            RequestError: If the body is not bytes, or as `read_parquet`.
        """
        return read_parquet(_binary(body, "Parquet body"), budget)


class ArrowStreamCodec(ColumnarCodec):
    """Arrow IPC stream bodies (`read_arrow_stream`)."""

    name = "arrow"

    def read(self, body: Any, budget: Budget) -> np.ndarray:
        """`read_arrow_stream`.

        Raises:
            RequestError: If the body is not bytes, or as `read_arrow_stream`.
        """
        return read_arrow_stream(_binary(body, "Arrow IPC stream body"), budget)


def _binary(body: Any, what: str) -> bytes | bytearray:
    if isinstance(body, (bytes, bytearray)) and body:
        return body
    raise RequestError(f"{what}: expected the file's bytes, got an empty or decoded body")


# The codec of each body format.
CODEC_CLASSES: dict[str, type[ColumnarCodec]] = {
    "csv": ArrowCsvCodec,
    "parquet": ParquetCodec,
    "arrow": ArrowStreamCodec,
}
CSV = ArrowCsvCodec()
PARQUET = ParquetCodec()
ARROW = ArrowStreamCodec()
_DEFAULTS = {"csv": CSV, "parquet": PARQUET, "arrow": ARROW}


def codec_for(body_format: str, headers: dict, csv_reader: str = "arrow") -> Codec:
    """The codec of a columnar body: its format's, answering in the format ``Accept`` names
    (`accepted_format`), else its own; with ``csv_reader`` ``"python"``, a CSV body asking
    for a CSV answer gets `csv_codec.CSV` (the Python parser alone).

    Args:
        body_format: ``csv``, ``parquet`` or ``arrow`` (`media_format` of its Content-Type).
        headers: The request's headers.
        csv_reader: One of `CSV_READERS`.
    """
    answer = accepted_format(headers) or body_format
    if body_format == answer == "csv" and csv_reader == "python":
        return csv_codec.CSV
    if answer == body_format:
        return _DEFAULTS[body_format]
    return CODEC_CLASSES[body_format](answer)
