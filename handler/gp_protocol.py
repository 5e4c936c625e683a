"""The REST protocol of the GP handler: request bodies in, validated points out; answers rendered.

Shipped next to the handler in the model archive and imported by it as ``gp_protocol``.
No torch: every rule is unit-tested without a server. Answers are encoded by orjson, which
writes float64 in shortest round-trip form and numpy arrays without a detour through
Python lists (20x faster than ``json.dumps`` of ``tolist()`` for a 4000 x 4000
covariance). Every error is a
`RequestError` whose message names the rule broken, with what was expected and what
was received. Nothing a client sends can make the parser spend unbounded stack or time
per byte: nesting depth and integer length are bounded before or while decoding.

Requests (see the README for the full contract):

- JSON ``{"inputs": [[...], ...], "covariance": "full|diag|none", "observation_noise": bool}``,
  the KServe v1 envelope ``{"instances": [...], ...}`` or a bare list of points; a point
  is a list of ``d`` numbers or an object keyed by input name.
- CSV (``Content-Type: text/csv``): one point per row, an optional header of input names.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import orjson

COVARIANCE_MODES = ("full", "diag", "none")
ENVELOPE_KEYS = ("inputs", "instances")
OPTION_KEYS = ("covariance", "observation_noise")
CSV_TYPES = ("text/csv", "application/csv")
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv; charset=utf-8"
# The deepest valid body is {"instances": [{"x1": 0.1}]} (3); anything past this is refused
# before decoding, so that no body can make the decoder recurse thousands of levels deep.
MAX_JSON_DEPTH = 32
# A JSON integer longer than this is refused (Python's int() refuses > 4300 digits anyway).
MAX_INTEGER_DIGITS = 400
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_BRACKET_STEPS = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


class RequestError(ValueError):
    """A client error: the request cannot be answered as sent.

    Attributes:
        status: The HTTP status to answer with (400, or 413 for too large).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PredictRequest:
    """A validated prediction request.

    Attributes:
        points: `q x d` raw inputs as Python floats, columns in input-name order.
        covariance: One of `COVARIANCE_MODES` (``"none"`` for CSV).
        observation_noise: Whether to add observation noise to the posterior.
        envelope: ``"inputs"``, ``"instances"`` (KServe v1), ``"list"`` or ``"csv"``.
    """

    points: list[list[float]]
    covariance: str
    observation_noise: bool
    envelope: str


# --- reading a TorchServe request ---------------------------------------------------------


def is_csv(content_type: str | None) -> bool:
    """Whether a Content-Type header names CSV (``text/csv``, any parameters)."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() in CSV_TYPES


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
        f"{sorted(map(str, row))[:10]} (curl -d sends a form: add -H 'Content-Type: "
        "application/json')"
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


def parse_request(
    row: dict, headers: dict, input_names: list[str], max_full_points: int
) -> PredictRequest:
    """Parse one request of a TorchServe batch: JSON or CSV by its Content-Type.

    Args:
        row: TorchServe's dict for the request (its body).
        headers: The request's headers (``context.get_all_request_header(idx)``).
        input_names: The model's ``d`` input names, in order.
        max_full_points: The most points a full covariance may be asked for.

    Returns:
        The validated request.

    Raises:
        RequestError: If anything is invalid (400), or too large (413).
    """
    part, body = request_body(row)
    if is_csv(content_type(headers, part)):
        return parse_csv(body, input_names)
    request = parse_json(body, input_names)
    q = len(request.points)
    if request.covariance == "full" and q > max_full_points:
        raise RequestError(
            f"a full covariance is limited to {max_full_points} points, got {q}; "
            'send "covariance": "diag" (or "none") for more points',
            413,
        )
    return request


# --- JSON ---------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    """A short description of a JSON value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean (" + json.dumps(value) + ")"
    if isinstance(value, (int, float)):
        return "a number (" + repr(value) + ")"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return "a string (" + json.dumps(text) + ")"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    if isinstance(value, dict):
        return "an object with keys " + json.dumps(sorted(value)[:10])
    return type(value).__name__


def _reject_constant(name: str) -> float:
    raise RequestError(
        f"invalid JSON number {name}: expected finite numbers, got the literal {name}"
    )


def _integer(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INTEGER_DIGITS:
        raise RequestError(
            f"a JSON integer of {digits} digits: expected at most {MAX_INTEGER_DIGITS} digits"
        )
    return int(text)


def _text(body: bytes | bytearray | str) -> str:
    if isinstance(body, str):
        return body
    try:
        return bytes(body).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RequestError(f"expected a UTF-8 encoded body, got invalid bytes: {e}") from e


def json_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in JSON text, ignoring brackets inside strings.

    Linear in the text, iterative (no recursion) and without backtracking: escaped
    backslashes and quotes are dropped, then every other ``"`` toggles "inside a
    string". Text that is not valid JSON is measured as far as that reading goes (the
    decoder then reports it as malformed).
    """
    unescaped = text.replace("\\\\", "").replace('\\"', "")
    outside = "".join(unescaped.split('"')[::2])
    brackets = _NOT_BRACKETS.sub("", outside)
    # (After a closer with no opener the decoder stops, so a negative run needs no care.)
    return max(0, max(accumulate(map(_BRACKET_STEPS.__getitem__, map(ord, brackets))), default=0))


def load_json(body: Any) -> Any:
    """Decode a JSON body strictly and within bounds.

    ``NaN``/``Infinity`` literals, nesting deeper than `MAX_JSON_DEPTH` and integers
    longer than `MAX_INTEGER_DIGITS` are refused.

    Args:
        body: The raw body (bytes or str), or a value TorchServe already decoded.

    Returns:
        The decoded JSON value.

    Raises:
        RequestError: If the body is empty, not UTF-8, too deep or not valid JSON.
    """
    if not isinstance(body, (bytes, bytearray, str)):
        return body
    text = _text(body)
    if not text.strip():
        raise RequestError("expected a JSON body, got an empty body")
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise RequestError(
            f"JSON nested {depth} levels deep: expected at most {MAX_JSON_DEPTH} levels"
        )
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_int=_integer)
    except json.JSONDecodeError as e:
        raise RequestError(
            f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}; expected "
            'an object like {"inputs": [[...], ...]} or a list of points'
        ) from e


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{where}: expected a finite number, got {_describe(value)}")
    try:
        number = float(value)
    except OverflowError as e:
        raise RequestError(f"{where}: expected a finite number, got an integer that "
                           "overflows a float64") from e
    if math.isinf(number):
        raise RequestError(f"{where}: expected a finite number, got one beyond the float64 "
                           f"range ({number!r})")
    if math.isnan(number):
        raise RequestError(f"{where}: expected a finite number, got nan")
    return number


def _point(value: Any, where: str, input_names: list[str]) -> list[float]:
    d = len(input_names)
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(input_names))
        missing = [name for name in input_names if name not in value]
        if unknown or missing:
            raise RequestError(
                f"{where}: expected an object with exactly the inputs {input_names}, "
                f"got unknown {json.dumps(unknown[:10])} and missing {missing}"
            )
        return [_number(value[name], f"{where}.{name}") for name in input_names]
    if not isinstance(value, list):
        raise RequestError(
            f"{where}: expected a point (a list of {d} numbers or an object keyed by "
            f"{input_names}), got {_describe(value)}"
        )
    nested = next((j for j, v in enumerate(value) if isinstance(v, (list, dict))), None)
    if nested is not None:
        raise RequestError(
            f"{where}[{nested}]: expected a number (points nest one level deep: "
            f"[[{', '.join(input_names)}], ...]), got {_describe(value[nested])}"
        )
    if len(value) != d:
        raise RequestError(
            f"{where}: expected {d} numbers (inputs {input_names}), got {len(value)}"
        )
    return [_number(v, f"{where}[{j}] ({input_names[j]})") for j, v in enumerate(value)]


def parse_points(value: Any, key: str, input_names: list[str]) -> list[list[float]]:
    """Validate a list of points, each a list of ``d`` numbers or an object.

    Args:
        value: The decoded JSON value holding the points.
        key: Where the points came from, for error messages.
        input_names: The model's ``d`` input names, in order.

    Returns:
        `q x d` floats, columns in ``input_names`` order.

    Raises:
        RequestError: If ``value`` is not a non-empty list of valid points.
    """
    if not isinstance(value, list):
        raise RequestError(f"{key}: expected a list of points, got {_describe(value)}")
    if not value:
        raise RequestError(f"{key}: expected at least one point, got an empty list")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise RequestError(
            f"{key}: expected a list of points (a list of lists), got a flat list of "
            f"{len(value)} numbers; send one point as [[...]]"
        )
    return [_point(v, f"{key}[{i}]", input_names) for i, v in enumerate(value)]


def _options(body: dict) -> tuple[str, bool]:
    covariance = body.get("covariance", "full")
    if not isinstance(covariance, str) or covariance not in COVARIANCE_MODES:
        raise RequestError(
            f"covariance: expected one of {list(COVARIANCE_MODES)}, got "
            f"{_describe(covariance)}"
        )
    noise = body.get("observation_noise", False)
    if not isinstance(noise, bool):
        raise RequestError(
            f"observation_noise: expected true or false, got {_describe(noise)}"
        )
    return covariance, noise


def parse_json(body: Any, input_names: list[str]) -> PredictRequest:
    """Parse a JSON prediction request.

    Accepts ``{"inputs": [...], "covariance": ..., "observation_noise": ...}``,
    the KServe v1 envelope ``{"instances": [...], ...}`` and a bare list of points.

    Args:
        body: The raw body, or the value TorchServe already decoded.
        input_names: The model's ``d`` input names, in order.

    Returns:
        The validated request.

    Raises:
        RequestError: If anything in the request is invalid.
    """
    value = load_json(body)
    if isinstance(value, list):
        return PredictRequest(parse_points(value, "body", input_names), "full", False, "list")
    if not isinstance(value, dict):
        raise RequestError(
            'expected a JSON object like {"inputs": [[...], ...]} or a list of points, '
            f"got {_describe(value)}"
        )
    envelopes = [key for key in ENVELOPE_KEYS if key in value]
    if len(envelopes) != 1:
        raise RequestError(
            f"expected exactly one of the keys {list(ENVELOPE_KEYS)}, got "
            f"{json.dumps(sorted(value)[:10])}"
        )
    unknown = sorted(set(value) - set(ENVELOPE_KEYS) - set(OPTION_KEYS))
    if unknown:
        raise RequestError(
            f"unknown keys {json.dumps(unknown[:10])}: expected only {envelopes[0]!r} and "
            f"{list(OPTION_KEYS)}"
        )
    key = envelopes[0]
    covariance, noise = _options(value)
    return PredictRequest(parse_points(value[key], key, input_names), covariance, noise, key)


# --- CSV ----------------------------------------------------------------------------------


def _csv_number(cell: str, line: int, name: str) -> float:
    text = cell.strip()
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
            f"got {names[:10]}"
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
        f"CSV line {line}: expected {d} values ({','.join(input_names)}), "
        f"got {len(cells)}{hint}"
    )


def parse_csv(body: bytes | bytearray | str, input_names: list[str]) -> PredictRequest:
    """Parse a CSV body: one point per row, with an optional header of input names.

    A first row without any number is a header: it may list the inputs in any order;
    columns are reordered to ``input_names``. Blank lines are skipped; a UTF-8 byte-order mark, CRLF line
    ends and quoted cells are accepted. Line numbers in errors are the body's
    physical lines, counting from 1.

    Args:
        body: The raw CSV text or bytes.
        input_names: The model's ``d`` input names, in order.

    Returns:
        The validated request (``covariance="none"``, ``envelope="csv"``).

    Raises:
        RequestError: On an unknown header, a row of the wrong length or a cell
            that is not a finite number, naming the line.
    """
    order = list(range(len(input_names)))
    points: list[list[float]] = []
    first = True
    reader = csv.reader(io.StringIO(_text(body), newline=""), strict=True)
    try:
        for cells in reader:
            if all(not cell.strip() for cell in cells):
                continue
            line = reader.line_num
            if first and not any(_NUMBER.fullmatch(cell.strip()) for cell in cells):
                first = False
                _csv_row_length(cells, line, input_names)
                order = _csv_header(cells, input_names)
                continue
            first = False
            _csv_row_length(cells, line, input_names)
            points.append(
                [_csv_number(cells[k], line, input_names[j]) for j, k in enumerate(order)]
            )
    except csv.Error as e:
        raise RequestError(
            f"CSV line {reader.line_num}: unparsable ({e}): expected comma-separated cells "
            "with every quote closed"
        ) from e
    if not points:
        raise RequestError("CSV: expected at least one data row, got none")
    return PredictRequest(points, "none", False, "csv")


# --- answers ------------------------------------------------------------------------------


def dumps(payload: Any) -> bytes:
    """Compact JSON (UTF-8) of dicts, lists, strings, numbers and C-contiguous numpy arrays.

    Floats are written in shortest round-trip form, so they parse back to the same
    float64. Callers pass finite numbers only (orjson would write NaN as ``null``).
    """
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def render_error(message: str, status: int) -> bytes:
    """The JSON body of an error answer: ``{"error": message, "code": status}``."""
    return dumps({"error": message, "code": status})


def render_json(
    request: PredictRequest,
    *,
    model: str,
    version: str,
    output_names: list[str],
    covariance_layout: str,
    mean: Any,
    variance: Any,
    covariance: Any | None,
    extrapolation: list[int],
) -> bytes:
    """The JSON answer to a prediction request.

    Args:
        request: The request answered.
        model: The model's name; ``version`` its version.
        output_names: The ``m`` output names.
        covariance_layout: The artifact's covariance layout (``metadata.json``).
        mean: `q x m` posterior means (nested lists or a numpy array).
        variance: `q x m` posterior variances.
        covariance: `(q*m) x (q*m)` joint covariance, or None unless ``"full"``.
        extrapolation: Indices of points outside the training bounds.

    Returns:
        The body (compact JSON; see the README for the keys).
    """
    answer: dict[str, Any] = {
        "model": model,
        "version": version,
        "outputs": output_names,
        "observation_noise": request.observation_noise,
        "mean": mean,
        "variance": variance,
        "covariance_layout": covariance_layout,
        "extrapolation": extrapolation,
    }
    if covariance is not None:
        answer["covariance"] = covariance
    if request.envelope == "instances":
        answer["predictions"] = [{"mean": mu, "variance": var} for mu, var in zip(mean, variance)]
    return dumps(answer)


def csv_header(output_names: list[str]) -> bytes:
    """The first line of a CSV answer: ``mean_<output>,std_<output>`` per output."""
    return (",".join(f"mean_{name},std_{name}" for name in output_names) + "\n").encode()


def csv_rows(rows: Any) -> bytes:
    """CSV lines of a `rows x columns` float array (shortest round-trip form, as in JSON).

    Args:
        rows: Nested lists or a C-contiguous 2-D numpy array, at least one row.
    """
    encoded = dumps(rows)  # [[a,b],[c,d]]: the numbers exactly as JSON has them
    return encoded[2:-2].replace(b"],[", b"\n") + b"\n"
