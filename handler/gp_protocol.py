"""The REST protocol of the GP handler: request bodies in, validated points out; answers rendered.

Shipped next to the handler in the model archive and imported by it as ``gp_protocol``.
No torch: every rule is unit-tested without a server. Answers are encoded by orjson, which
writes float64 in shortest round-trip form and numpy arrays without a detour through
Python lists (20x faster than ``json.dumps`` of ``tolist()`` for a 4000 x 4000
covariance). Every error is a
`RequestError` whose message names the rule broken, with what was expected and what
was received, quoting the client's input truncated (`MAX_QUOTE_CHARS`; a whole message is
at most `MAX_ERROR_CHARS`). Nothing a client sends can make the parser spend unbounded stack,
time or memory: nesting depth and the length of a number are bounded, numbers are matched
by patterns without backtracking, and the number of points is counted before any float is
built. Every request's cost is checked against a `Budget` (points, covariance size, the
answer's bytes) before any work is done.

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
# A number (a JSON float, a CSV cell) longer than this is refused before it is parsed: float64
# needs at most 17 significant digits, and no pattern or conversion then runs on a long text.
MAX_NUMBER_CHARS = 400
# Client input quoted in an error message is cut to this many characters ...
MAX_QUOTE_CHARS = 40
# ... and a whole error message to this many (error bodies stay under 1 KB).
MAX_ERROR_CHARS = 900
# A CSV number. Unambiguous (each digit can belong to one place only), so a failed match costs
# linear time: the former ``\d+\.?\d*`` backtracked quadratically on a cell of digits and a
# letter (8,000 digits: 1.2 s).
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# The upper bounds of the answer's size, per number: the longest float64 orjson writes
# (-2.2250738585072014e-308, 24 characters) and a separator; an exact zero ("-0.0") likewise.
NUMBER_BYTES = 25
ZERO_BYTES = 5
BINARY_BYTES = 8
# Bytes of an answer besides its numbers (keys, names, version), before its names' lengths.
ANSWER_OVERHEAD_BYTES = 2048
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
class Budget:
    """What one request may cost, and the model facts its cost depends on.

    Built by the handler from ``model-config.yaml``'s ``handler`` limits and the artifact's
    ``metadata.json``; every parser checks a request against it before any float is built
    (points) or any posterior work is done (covariance size, the answer's bytes).

    Attributes:
        input_names: The model's ``d`` input names, in order.
        output_names: Its ``m`` output names.
        max_points: The most points (`q`) of one request, in every mode and envelope.
        max_covariance_rows: The largest full covariance, as its side `q*m`; a mixture of
            ``S`` samples (SAAS) computes ``S`` of them, so it may have `q*m*sqrt(S)` rows.
        max_response_bytes: The largest answer (TorchServe's ``max_response_size``).
        correlated_outputs: Whether the covariance's off-diagonal output blocks can be
            nonzero (else they are exact zeros, which take fewer bytes).
        mixture_samples: ``S``, the samples of a mixture posterior (1 for the others).
    """

    input_names: list[str]
    output_names: list[str]
    max_points: int = 100_000
    max_covariance_rows: int = 4000
    max_response_bytes: int = 314_572_800
    correlated_outputs: bool = True
    mixture_samples: int = 1

    @property
    def max_full_points(self) -> int:
        """The most points a full covariance may be asked for (`max_covariance_rows`)."""
        rows = self.max_covariance_rows / math.sqrt(max(1, self.mixture_samples))
        return max(0, min(self.max_points, int(rows // len(self.output_names))))

    def check_points(self, q: int, where: str = "a request", at_least: bool = False) -> None:
        """Refuse more than `max_points` points (413); ``at_least``: ``q`` is a lower bound."""
        if q > self.max_points:
            got = f"at least {q}" if at_least else str(q)
            raise RequestError(
                f"{where} is limited to {self.max_points} points, got {got}: split the points "
                "into several requests (client.score_csv does for CSV: --chunk-rows)", 413)

    def check_values(self, values: int) -> None:
        """Refuse a body of more JSON values than `max_points` points can hold, before it is
        decoded (413). ``values`` is an upper bound of its values (its commas + 1)."""
        d = len(self.input_names)
        if values > (self.max_points + 1) * (d + 1) + 64:
            raise RequestError(
                f"the body holds up to {values} JSON values, more than {self.max_points} "
                f"points of {d} inputs need: a request is limited to {self.max_points} "
                "points; split the points into several requests", 413)

    def check_full(self, q: int, hint: str) -> None:
        """Refuse a full covariance of more than `max_full_points` points (413)."""
        if q > self.max_full_points:
            m, s = len(self.output_names), self.mixture_samples
            rows = f"{q * m} x {q * m}" + (f", for each of {s} samples" if s > 1 else "")
            raise RequestError(
                f"a full covariance is limited to {self.max_full_points} points, got {q}; "
                f"{hint} for more points (a {rows} covariance; at most "
                f"{self.max_covariance_rows} rows for {m} outputs)", 413)

    def answer_bytes(self, q: int, covariance: bool, per_point_numbers: int = 2,
                     extra_bytes: int = 0) -> int:
        """An upper bound of a JSON answer's size in bytes.

        Args:
            q: The number of points.
            covariance: Whether it holds the `(q*m) x (q*m)` covariance.
            per_point_numbers: `q x m` tensors besides the covariance (mean, variance: 2;
                the KServe v1 envelope repeats them: 4).
            extra_bytes: Bytes per point on top (keys, brackets).
        """
        size = self.overhead_bytes(q, extra_bytes) + per_point_numbers * self.tensor_bytes(q)
        if covariance:
            size += self.covariance_bytes(q)
        return size

    def overhead_bytes(self, q: int, extra_bytes: int = 0) -> int:
        """An upper bound of an answer's bytes besides its tensors: keys, names, version and,
        per point, its extrapolation index, row brackets and ``extra_bytes``."""
        names = sum(len(name) + 16 for name in self.output_names)
        return ANSWER_OVERHEAD_BYTES + 4 * names + q * (extra_bytes + len(str(q)) + 8)

    def tensor_bytes(self, q: int, json_numbers: bool = True) -> int:
        """An upper bound of one `q x m` tensor's bytes (JSON text, or 8-byte binary)."""
        return q * len(self.output_names) * (NUMBER_BYTES if json_numbers else BINARY_BYTES)

    def covariance_bytes(self, q: int, json_numbers: bool = True) -> int:
        """An upper bound of the `(q*m) x (q*m)` covariance's size in bytes (JSON or binary).

        Without correlated outputs its off-diagonal output blocks are exact zeros.
        """
        if not json_numbers:
            return BINARY_BYTES * (q * len(self.output_names)) ** 2
        m = len(self.output_names)
        off_diagonal = NUMBER_BYTES if self.correlated_outputs else ZERO_BYTES
        return q * m * (q * NUMBER_BYTES + (m - 1) * q * off_diagonal + 2)

    def check_answer(self, size: int, q: int, covariance: str) -> None:
        """Refuse an answer that could exceed `max_response_bytes` (413)."""
        if size > self.max_response_bytes:
            raise RequestError(
                f"the answer to {q} points with covariance {covariance!r} could take "
                f"{size} bytes, over the limit of {self.max_response_bytes} bytes "
                '(max_response_size): ask for "diag" (no covariance), send fewer points '
                "or score a CSV in chunks (client.score_csv --chunk-rows)", 413)


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
        f"{[clip(name) for name in sorted(map(str, row))[:10]]} (curl -d sends a form: add -H 'Content-Type: "
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


def parse_request(row: dict, headers: dict, budget: Budget) -> PredictRequest:
    """Parse one request of a TorchServe batch: JSON or CSV by its Content-Type.

    Its cost is checked against ``budget`` before any posterior work: the number of points
    (counted before floats are built), the full covariance's size and the answer's bytes.

    Args:
        row: TorchServe's dict for the request (its body).
        headers: The request's headers (``context.get_all_request_header(idx)``).
        budget: The model's inputs, outputs and limits.

    Returns:
        The validated request.

    Raises:
        RequestError: If anything is invalid (400), or too large (413).
    """
    part, body = request_body(row)
    if is_csv(content_type(headers, part)):
        request = parse_csv(body, budget.input_names, budget)
    else:
        request = parse_json(body, budget.input_names, budget)
    check_cost(request, budget)
    return request


def check_cost(request: PredictRequest, budget: Budget) -> None:
    """Refuse a request whose full covariance or answer is over ``budget`` (413)."""
    q = len(request.points)
    full = request.covariance == "full"
    if full:
        budget.check_full(q, 'send "covariance": "diag" (or "none")')
    if request.envelope == "csv":  # mean and std per output; no brackets
        size = budget.answer_bytes(q, False)
    else:  # (v1 repeats mean and variance per instance, with its keys)
        instances = request.envelope == "instances"
        size = budget.answer_bytes(q, full, per_point_numbers=4 if instances else 2,
                                   extra_bytes=(48 if instances else 8))
    budget.check_answer(size, q, request.covariance)


# --- JSON ---------------------------------------------------------------------------------


def clip(text: str, limit: int = MAX_QUOTE_CHARS) -> str:
    """``text`` cut to ``limit`` characters (``...`` and its length marking a cut)."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit - 3]}... ({len(text)} characters)"


def quote_names(names: Any, count: int = 10) -> str:
    """The first ``count`` of ``names`` as a JSON list, each cut by `clip` (error messages)."""
    return json.dumps([clip(name) for name in list(names)[:count]])


def _describe(value: Any) -> str:
    """A short description of a JSON value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean (" + json.dumps(value) + ")"
    if isinstance(value, int):
        return "a number (" + clip(repr(value)) + ")"
    if isinstance(value, float):
        return "a number (" + repr(value) + ")"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return "a string (" + json.dumps(text) + ")"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    if isinstance(value, dict):
        return "an object with keys " + quote_names(sorted(value))
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


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise RequestError(f"a JSON number of {len(text)} characters: expected at most "
                           f"{MAX_NUMBER_CHARS} characters")
    return float(text)


def _text(body: bytes | bytearray | str) -> str:
    if isinstance(body, str):
        return body
    try:
        return bytes(body).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RequestError(f"expected a UTF-8 encoded body, got invalid bytes: {e}") from e


def _outside_strings(text: str) -> str:
    """JSON text without its strings, for measuring it (`json_depth`, and its commas: an
    upper bound of its values).

    Linear in the text, iterative (no recursion) and without backtracking: escaped
    backslashes and quotes are dropped, then every other ``"`` toggles "inside a
    string". Text that is not valid JSON is measured as far as that reading goes (the
    decoder then reports it as malformed).
    """
    unescaped = text.replace("\\\\", "").replace('\\"', "")
    return "".join(unescaped.split('"')[::2])


def _depth(outside: str) -> int:
    brackets = _NOT_BRACKETS.sub("", outside)
    # (After a closer with no opener the decoder stops, so a negative run needs no care.)
    return max(0, max(accumulate(map(_BRACKET_STEPS.__getitem__, map(ord, brackets))),
                      default=0))


def json_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in JSON text, ignoring brackets inside strings
    (see `_outside_strings`)."""
    return _depth(_outside_strings(text))


def load_json(body: Any, budget: Budget | None = None) -> Any:
    """Decode a JSON body strictly and within bounds.

    ``NaN``/``Infinity`` literals, nesting deeper than `MAX_JSON_DEPTH`, integers longer
    than `MAX_INTEGER_DIGITS`, numbers longer than `MAX_NUMBER_CHARS` and (with a
    ``budget``) more values than its `Budget.max_points` points hold are refused, the last
    before anything is decoded.

    Args:
        body: The raw body (bytes or str), or a value TorchServe already decoded.
        budget: The request's budget (None: no count of values).

    Returns:
        The decoded JSON value.

    Raises:
        RequestError: If the body is empty, not UTF-8, too deep, too large (413) or not
            valid JSON.
    """
    if not isinstance(body, (bytes, bytearray, str)):
        return body
    text = _text(body)
    if not text.strip():
        raise RequestError("expected a JSON body, got an empty body")
    outside = _outside_strings(text)
    if budget is not None:  # (first: counting is cheaper than measuring the depth)
        budget.check_values(outside.count(",") + 1)
    depth = _depth(outside)
    if depth > MAX_JSON_DEPTH:
        raise RequestError(
            f"JSON nested {depth} levels deep: expected at most {MAX_JSON_DEPTH} levels"
        )
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_int=_integer,
                          parse_float=_float)
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
                f"got unknown {quote_names(unknown)} and missing {missing}"
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


def parse_points(value: Any, key: str, input_names: list[str],
                 budget: Budget | None = None) -> list[list[float]]:
    """Validate a list of points, each a list of ``d`` numbers or an object.

    Args:
        value: The decoded JSON value holding the points.
        key: Where the points came from, for error messages.
        input_names: The model's ``d`` input names, in order.
        budget: If given, more than its `Budget.max_points` points are refused (413).

    Returns:
        `q x d` floats, columns in ``input_names`` order.

    Raises:
        RequestError: If ``value`` is not a non-empty list of valid points.
    """
    if not isinstance(value, list):
        raise RequestError(f"{key}: expected a list of points, got {_describe(value)}")
    if not value:
        raise RequestError(f"{key}: expected at least one point, got an empty list")
    if budget is not None:
        budget.check_points(len(value))
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


def parse_json(body: Any, input_names: list[str], budget: Budget | None = None
               ) -> PredictRequest:
    """Parse a JSON prediction request.

    Accepts ``{"inputs": [...], "covariance": ..., "observation_noise": ...}``,
    the KServe v1 envelope ``{"instances": [...], ...}`` and a bare list of points.

    Args:
        body: The raw body, or the value TorchServe already decoded.
        input_names: The model's ``d`` input names, in order.
        budget: If given, a body of more points than its `Budget.max_points` is refused
            (413), before it is decoded when it is raw.

    Returns:
        The validated request.

    Raises:
        RequestError: If anything in the request is invalid.
    """
    value = load_json(body, budget)
    if isinstance(value, list):
        return PredictRequest(parse_points(value, "body", input_names, budget), "full", False,
                              "list")
    if not isinstance(value, dict):
        raise RequestError(
            'expected a JSON object like {"inputs": [[...], ...]} or a list of points, '
            f"got {_describe(value)}"
        )
    envelopes = [key for key in ENVELOPE_KEYS if key in value]
    if len(envelopes) != 1:
        raise RequestError(
            f"expected exactly one of the keys {list(ENVELOPE_KEYS)}, got "
            f"{quote_names(sorted(value))}"
        )
    unknown = sorted(set(value) - set(ENVELOPE_KEYS) - set(OPTION_KEYS))
    if unknown:
        raise RequestError(
            f"unknown keys {quote_names(unknown)}: expected only {envelopes[0]!r} and "
            f"{list(OPTION_KEYS)}"
        )
    key = envelopes[0]
    covariance, noise = _options(value)
    return PredictRequest(parse_points(value[key], key, input_names, budget), covariance,
                          noise, key)


# --- CSV ----------------------------------------------------------------------------------


def _is_number(text: str) -> bool:
    """Whether a stripped CSV cell is a number (linear time: bounded length, no backtracking)."""
    return len(text) <= MAX_NUMBER_CHARS and _NUMBER.fullmatch(text) is not None


def _csv_number(cell: str, line: int, name: str) -> float:
    text = cell.strip()
    if len(text) > MAX_NUMBER_CHARS:
        raise RequestError(
            f"CSV line {line}, column {name}: a cell of {len(text)} characters: expected a "
            f"number of at most {MAX_NUMBER_CHARS} characters, got {clip(text)!r}")
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
        f"CSV line {line}: expected {d} values ({','.join(input_names)}), "
        f"got {len(cells)}{hint}"
    )


def parse_csv(body: bytes | bytearray | str, input_names: list[str],
              budget: Budget | None = None) -> PredictRequest:
    """Parse a CSV body: one point per row, with an optional header of input names.

    A first row without any number is a header: it may list the inputs in any order;
    columns are reordered to ``input_names``. Blank lines are skipped; a UTF-8 byte-order mark, CRLF line
    ends and quoted cells are accepted. Line numbers in errors are the body's
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
    reader = csv.reader(io.StringIO(_text(body), newline=""), strict=True)
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


# --- answers ------------------------------------------------------------------------------


def dumps(payload: Any) -> bytes:
    """Compact JSON (UTF-8) of dicts, lists, strings, numbers and C-contiguous numpy arrays.

    Floats are written in shortest round-trip form, so they parse back to the same
    float64. Callers pass finite numbers only (orjson would write NaN as ``null``).
    """
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def error_text(message: str) -> str:
    """An error message cut to `MAX_ERROR_CHARS` (whatever a client's input made it)."""
    return clip(message, MAX_ERROR_CHARS)


def render_error(message: str, status: int) -> bytes:
    """The JSON body of an error answer: ``{"error": message, "code": status}`` (the message
    cut to `MAX_ERROR_CHARS`)."""
    return dumps({"error": error_text(message), "code": status})


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
