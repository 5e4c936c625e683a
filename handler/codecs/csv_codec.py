"""The CSV codec of ``POST /predictions/<model>`` (``Content-Type: text/csv``): one point per
row in, ``mean_<output>,std_<output>`` rows out, errors in the JSON codec's form.

See docs/serving.md (step 5, "Limits").
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import re
from decimal import Decimal
from typing import Any

import numpy as np

from gp_serve.handler.codecs import products
from gp_serve.handler.codecs.base import Answer, Codec, Posterior, ServedModel
from gp_serve.handler.codecs.bounded_json import MAX_NUMBER_CHARS, body_text, dumps, load_json
from gp_serve.handler.codecs.budget import Budget, RequestError, clip
from gp_serve.handler.codecs.v1 import JsonCodec, PredictRequest

CSV_TYPES = ("text/csv", "application/csv")
CSV_TYPE = "text/csv; charset=utf-8"
# The request headers that ask a CSV answer for products, each holding the JSON value of the
# JSON envelope's key (`products.KEYS`); samples are not rows, so they are refused.
HEADER_PREFIX = "gp-"
PRODUCT_HEADERS = ("quantiles", "acquisition", "gradients")
# A CSV number. Unambiguous (each digit can belong to one place only), so a failed match costs
# linear time, with no backtracking.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def is_csv(content_type: str | None) -> bool:
    """Whether a Content-Type header names CSV (``text/csv``, any parameters)."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() in CSV_TYPES


def _is_number(text: str) -> bool:
    """Whether a stripped CSV cell is a number (linear time: bounded length, no backtracking)."""
    return len(text) <= MAX_NUMBER_CHARS and _NUMBER.fullmatch(text) is not None


def _csv_number(cell: str, line: int, name: str) -> float:
    text = cell.strip()
    if len(text) > MAX_NUMBER_CHARS:
        raise RequestError(
            f"CSV line {line}, column {name}: a cell of {len(text)} characters: expected a "
            f"number of at most {MAX_NUMBER_CHARS} characters, got {clip(text)!r}"
        )
    number = float(text) if _NUMBER.fullmatch(text) else math.nan
    if not math.isfinite(number):  # not a number, or one that overflows (1e999)
        shown = cell if len(cell) <= 40 else cell[:37] + "..."
        raise RequestError(
            f"CSV line {line}, column {name}: expected a finite number, got {shown!r}"
        )
    return number


def _csv_header(cells: list[str], input_names: list[str]) -> list[int]:
    names = [cell.strip() for cell in cells]
    if sorted(names) != sorted(input_names):
        raise RequestError(
            f"CSV header: expected the input names {input_names} (in any order), "
            f"got {[clip(name) for name in names[:10]]}"
        )
    return [names.index(name) for name in input_names]


def _csv_row_length(cells: list[str], line: int, input_names: list[str]) -> None:
    d = len(input_names)
    if len(cells) == d:
        return
    hint = ""
    if len(cells) > d and not any(cell.strip() for cell in cells[d:]):
        hint = " (empty cells after the last value: a trailing separator?)"
    elif len(cells) == 1 and any(sep in cells[0] for sep in (";", "\t", "|")):
        hint = " (the separator must be a comma)"
    raise RequestError(
        f"CSV line {line}: expected {d} values ({','.join(input_names)}), got {len(cells)}{hint}"
    )


def parse_csv(
    body: bytes | bytearray | str, input_names: list[str], budget: Budget | None = None
) -> PredictRequest:
    """Parse a CSV body: one point per row, with an optional header of input names.

    A first row without any number is a header: it may list the inputs in any order;
    columns are reordered to ``input_names``. Blank lines are skipped; a UTF-8 byte-order mark,
    CRLF line ends and quoted cells are accepted. Line numbers in errors are the body's
    physical lines, counting from 1.

    Args:
        body: The raw CSV text or bytes.
        input_names: The model's ``d`` input names, in order.
        budget: If given, a data row past its `Budget.max_points` is refused (413) before
            it is converted.

    Returns:
        The validated request (``covariance="none"``, ``envelope="csv"``).

    Raises:
        RequestError: On an unknown header, a row of the wrong length or a cell
            that is not a finite number, naming the line.
    """
    order = list(range(len(input_names)))
    points: list[list[float]] = []
    first = True
    reader = csv.reader(io.StringIO(body_text(body), newline=""), strict=True)
    try:
        for cells in reader:
            if all(not cell.strip() for cell in cells):
                continue
            line = reader.line_num
            if first and not any(_is_number(cell.strip()) for cell in cells):
                first = False
                _csv_row_length(cells, line, input_names)
                order = _csv_header(cells, input_names)
                continue
            first = False
            _csv_row_length(cells, line, input_names)
            if budget is not None and len(points) == budget.max_points:
                budget.check_points(len(points) + 1, f"a CSV body (line {line})", True)
            points.append(
                [_csv_number(cells[k], line, input_names[j]) for j, k in enumerate(order)]
            )
    except csv.Error as e:
        if "field larger than field limit" in str(e):
            raise RequestError(
                f"CSV line {reader.line_num}: a cell of more than {csv.field_size_limit()} "
                f"characters: expected numbers of at most {MAX_NUMBER_CHARS} characters"
            ) from e
        raise RequestError(
            f"CSV line {reader.line_num}: unparsable ({e}): expected comma-separated cells "
            "with every quote closed"
        ) from e
    if not points:
        raise RequestError("CSV: expected at least one data row, got none")
    return PredictRequest(points, "none", False, "csv")


def header_products(headers: dict, q: int, budget: Budget) -> products.Products:
    """The products a CSV request asks for in its ``GP-Quantiles``, ``GP-Acquisition`` and
    ``GP-Gradients`` headers (any case; each a JSON value, as the JSON envelope's key holds
    it).

    Raises:
        RequestError: If a header is not valid JSON, its product is invalid, or it asks for
            samples (a CSV answer is one row per point).
    """
    values = {}
    for name, value in headers.items():
        key = name.lower() if isinstance(name, str) else ""
        if not key.startswith(HEADER_PREFIX):
            continue
        key = key[len(HEADER_PREFIX) :].replace("-", "_")
        if key in ("samples", "base_samples"):
            raise RequestError(
                f"header GP-{key}: a CSV answer is one row per point, and samples are not: "
                "ask for them in JSON or v2"
            )
        if key in PRODUCT_HEADERS:
            try:
                values[key] = load_json(value if isinstance(value, (str, bytes)) else str(value))
            except RequestError as e:
                raise RequestError(f"header GP-{key}: {e}") from e
    return products.parse(values, q, budget, "header GP-")


def check_cost(request: PredictRequest, budget: Budget) -> None:
    """Refuse a CSV request whose answer (mean and std per output, no brackets, and its
    products' columns) is over ``budget`` (413)."""
    q = len(request.points)
    size = budget.answer_bytes(q, False)
    size += request.products.answer_bytes(q, len(budget.output_names))
    budget.check_answer(size, q, request.covariance)


def quantile_label(level: float) -> str:
    """A quantile level as a column's percent: ``05`` for 0.05, ``50``, ``02.5`` for 0.025
    (the level's shortest decimal text times 100, at least two integer digits)."""
    text = format((Decimal(repr(level)) * 100).normalize(), "f")
    whole, _, fraction = text.partition(".")
    return whole.zfill(2) + (f".{fraction}" if fraction else "")


def csv_header(
    output_names: list[str],
    asked: products.Products = products.NONE,
    input_names: list[str] | None = None,
) -> bytes:
    """The first line of a CSV answer: ``mean_<output>,std_<output>`` per output, then per
    quantile level ``q<percent>_<output>`` (`quantile_label`), ``acq``, and the gradients
    ``dmean_<output>_<input>`` then ``dvar_<output>_<input>``, as asked."""
    names = [f"mean_{name},std_{name}" for name in output_names]
    for level in asked.quantiles:
        names += [f"q{quantile_label(level)}_{name}" for name in output_names]
    if asked.acquisition is not None:
        names.append("acq")
    if asked.gradients:
        for moment in ("dmean", "dvar"):
            names += [f"{moment}_{t}_{j}" for t in output_names for j in input_names or []]
    return (",".join(names) + "\n").encode()


def csv_rows(rows: Any) -> bytes:
    """CSV lines of a `rows x columns` float array (shortest round-trip form, as in JSON).

    Args:
        rows: Nested lists or a C-contiguous 2-D numpy array, at least one row.
    """
    encoded = dumps(rows)  # [[a,b],[c,d]]: the numbers exactly as JSON has them
    return encoded[2:-2].replace(b"],[", b"\n") + b"\n"


def answer_rows(posterior: Posterior) -> np.ndarray:
    """A CSV answer's numbers, `q x columns` (C-contiguous float64), in `csv_header`'s
    column order: each output's mean and standard deviation, then the products' columns."""
    q = len(posterior.mean)
    columns = [np.stack([posterior.mean, posterior.std], -1).reshape(q, -1)]
    if "quantiles" in posterior.products:  # (levels x q x m: a point's row, level-major)
        columns.append(posterior.products["quantiles"].transpose(1, 0, 2).reshape(q, -1))
    if "acquisition" in posterior.products:
        columns.append(posterior.products["acquisition"].reshape(q, 1))
    for name in products.GRADIENTS:  # (q x m x d: output-major, then input)
        if name in posterior.products:
            columns.append(posterior.products[name].reshape(q, -1))
    return np.ascontiguousarray(np.concatenate(columns, axis=1))


class CsvCodec(Codec):
    """CSV requests and answers; errors in the JSON codec's form."""

    name = "csv"
    chunked = True  # (a CSV may be a whole file's rows: predicted chunk_rows at a time)

    def decode(self, body: Any, headers: dict, budget: Budget) -> PredictRequest:
        """`parse_csv` then `check_cost` (``headers`` are not read: `select` read them).

        Raises:
            RequestError: If anything is invalid (400) or too large (413).
        """
        request = parse_csv(body, budget.input_names, budget)
        asked = header_products(headers, len(request.points), budget)
        request = dataclasses.replace(request, products=asked)
        check_cost(request, budget)
        return request

    def encode(self, request: PredictRequest, posterior: Posterior, model: ServedModel) -> Answer:
        """`csv_header` and one row per point: each output's mean and standard deviation,
        then its products' columns."""
        header = csv_header(model.output_names, request.products, model.input_names)
        return Answer(header + csv_rows(answer_rows(posterior)), CSV_TYPE)

    error = JsonCodec.error


CSV = CsvCodec()
