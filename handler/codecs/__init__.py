"""The wire formats of the GP handler, one codec each, and the choice of one per request (`select`).

No torch: every rule is unit-tested without a server. See docs/serving.md ("Where things are").
"""

from __future__ import annotations

from typing import Any

from gp_serve.handler.codecs import columnar, csv_codec, v1, v2
from gp_serve.handler.codecs.base import Codec, Request
from gp_serve.handler.codecs.budget import Budget, RequestError, clip
from gp_serve.handler.codecs.columnar import ARROW as ARROW
from gp_serve.handler.codecs.columnar import CSV as CSV
from gp_serve.handler.codecs.columnar import CSV_READERS as CSV_READERS
from gp_serve.handler.codecs.columnar import PARQUET as PARQUET
from gp_serve.handler.codecs.v1 import JSON

# Every codec's class (the v2 codec is made per request: it may carry the decoded body; a
# columnar one when its answer is in another format than its body).
CODECS: tuple[type[Codec], ...] = (
    v1.JsonCodec,
    csv_codec.CsvCodec,
    v2.V2Codec,
    columnar.ArrowCsvCodec,
    columnar.ParquetCodec,
    columnar.ArrowStreamCodec,
)


def request_body(row: dict) -> tuple[str, Any]:
    """The body of one TorchServe request and the name of the part it came in.

    TorchServe (``decode_input_request=false``) passes a raw body as ``body`` or
    ``data``; a form or multipart body arrives as one entry per part.

    Raises:
        RequestError: For a form or multipart body with several parts.
    """
    for name in ("body", "data"):
        if row.get(name) is not None:
            return name, row[name]
    if len(row) == 1:
        return next(iter(row.items()))
    raise RequestError(
        "expected a JSON body (Content-Type: application/json) or CSV (Content-Type: "
        f"text/csv), got a form or multipart body with {len(row)} parts "
        f"{[clip(name) for name in sorted(map(str, row))[:10]]} "
        "(curl -d sends a form: add -H 'Content-Type: application/json')"
    )


def content_type(headers: dict, part: str) -> str | None:
    """The Content-Type of a request: its body part's own, else the request's."""
    part_headers = headers.get(part)
    if isinstance(part_headers, dict) and isinstance(part_headers.get("content-type"), str):
        return part_headers["content-type"]
    for name, value in headers.items():
        if isinstance(name, str) and name.lower() == "content-type" and isinstance(value, str):
            return value
    return None


def select(row: dict, headers: dict, budget: Budget, csv_reader: str = "arrow") -> Codec:
    """The codec of one TorchServe request, by the first rule that holds:

    1. the ``Inference-Header-Content-Length`` header (`v2.HEADER_LENGTH`, any case): v2,
       whatever the body;
    2. a Parquet or Arrow IPC stream Content-Type (`columnar.MEDIA_TYPES`, the body part's
       own or the request's): that format's codec (a binary body is never sniffed as JSON);
    3. a JSON body whose ``inputs`` are tensor objects declaring a ``datatype``, whatever its
       Content-Type: v2 (decoded here, once: the codec carries it);
    4. a CSV Content-Type (`csv_codec.CSV_TYPES`): CSV (read by pyarrow, `columnar.CSV`, or
       with ``csv_reader`` ``"python"`` by the Python parser alone, `csv_codec.CSV`);
    5. anything else: JSON.

    A columnar body (rules 2 and 4) is answered in the first of CSV, Parquet and Arrow that
    the ``Accept`` header names, else in its own format (`columnar.codec_for`).

    Args:
        row: TorchServe's dict for the request (its body).
        headers: The request's headers (``context.get_all_request_header(idx)``).
        budget: The model's inputs, outputs and limits.
        csv_reader: One of `columnar.CSV_READERS` (``handler.csv_reader``).

    Raises:
        RequestError: For a form or multipart body of several parts, or a body naming
            ``"datatype"`` of more JSON values than the budget's points hold (413); answered
            by `JSON`.
    """
    part, body = request_body(row)
    if v2.has_header(headers):
        return v2.V2Codec()
    body_format = columnar.media_format(content_type(headers, part))
    if body_format in ("parquet", "arrow"):
        return columnar.codec_for(body_format, headers, csv_reader)
    parts = v2.split(body, headers, budget)
    if parts is not None:
        return v2.V2Codec(parts)
    if body_format == "csv":
        return columnar.codec_for(body_format, headers, csv_reader)
    return JSON


def decode_request(row: dict, headers: dict, budget: Budget) -> Request:
    """One TorchServe request decoded as the handler decodes it: `select`, then its codec's
    ``decode`` (the in-process verdict the server's answer must match).

    Returns:
        The validated request (`v1.PredictRequest` or `v2.InferRequest`).

    Raises:
        RequestError: If anything is invalid (400) or too large (413).
    """
    return select(row, headers, budget).decode(request_body(row)[1], headers, budget)
