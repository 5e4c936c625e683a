"""Request parsing for the GP handler: JSON and CSV bodies to validated points.

Shipped next to the handler in the model archive (``--extra-files``) and imported
by it as ``gp_request``. Pure Python: no torch, so every rule here is unit-tested
without a server. Every error is a `RequestError` whose message says what was
expected and what was received.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from typing import Any

COVARIANCE_MODES = ("full", "diag", "none")
ENVELOPE_KEYS = ("inputs", "instances")
OPTION_KEYS = ("covariance", "observation_noise")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


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


def is_csv(content_type: str | None) -> bool:
    """Whether a Content-Type header names CSV (``text/csv``, any parameters)."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() in ("text/csv", "application/csv")


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


def _text(body: bytes | bytearray | str) -> str:
    if isinstance(body, str):
        return body
    try:
        return bytes(body).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RequestError(f"expected a UTF-8 encoded body, got invalid bytes: {e}") from e


def load_json(body: Any) -> Any:
    """Decode a JSON body strictly (``NaN``/``Infinity`` literals are rejected).

    Args:
        body: The raw body (bytes or str), or a value TorchServe already decoded.

    Returns:
        The decoded JSON value.

    Raises:
        RequestError: If the body is empty, not UTF-8 or not valid JSON.
    """
    if not isinstance(body, (bytes, bytearray, str)):
        return body
    text = _text(body)
    if not text.strip():
        raise RequestError("expected a JSON body, got an empty body")
    try:
        return json.loads(text, parse_constant=_reject_constant)
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
        raise RequestError(f"{where}: expected a finite number, got {value!r}") from e
    if not math.isfinite(number):
        raise RequestError(f"{where}: expected a finite number, got {number!r}")
    return number


def _point(value: Any, where: str, input_names: list[str]) -> list[float]:
    d = len(input_names)
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(input_names))
        missing = [name for name in input_names if name not in value]
        if unknown or missing:
            raise RequestError(
                f"{where}: expected an object with exactly the inputs {input_names}, "
                f"got unknown {unknown} and missing {missing}"
            )
        return [_number(value[name], f"{where}.{name}") for name in input_names]
    if not isinstance(value, list):
        raise RequestError(
            f"{where}: expected a point (a list of {d} numbers or an object keyed by "
            f"{input_names}), got {_describe(value)}"
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
            f"unknown keys {unknown}: expected only {envelopes[0]!r} and "
            f"{list(OPTION_KEYS)}"
        )
    key = envelopes[0]
    covariance, noise = _options(value)
    return PredictRequest(parse_points(value[key], key, input_names), covariance, noise, key)


def _csv_number(cell: str, line: int, name: str) -> float:
    text = cell.strip()
    number = float(text) if _NUMBER.fullmatch(text) else math.nan
    if not math.isfinite(number):  # not a number, or one that overflows (1e999)
        raise RequestError(
            f"CSV line {line}, column {name}: expected a finite number, got {cell!r}"
        )
    return number


def _csv_header(cells: list[str], input_names: list[str]) -> list[int]:
    names = [cell.strip() for cell in cells]
    if sorted(names) != sorted(input_names):
        raise RequestError(
            f"CSV header: expected the input names {input_names} (in any order), "
            f"got {names}"
        )
    return [names.index(name) for name in input_names]


def parse_csv(body: bytes | bytearray | str, input_names: list[str]) -> PredictRequest:
    """Parse a CSV body: one point per row, with an optional header of input names.

    A header, if present, may list the inputs in any order; columns are reordered
    to ``input_names``. Blank lines are skipped.

    Args:
        body: The raw CSV text or bytes.
        input_names: The model's ``d`` input names, in order.

    Returns:
        The validated request (``covariance="none"``, ``envelope="csv"``).

    Raises:
        RequestError: On an unknown header, a row of the wrong length or a cell
            that is not a finite number, naming the line.
    """
    d = len(input_names)
    order = list(range(d))
    points: list[list[float]] = []
    first = True
    try:
        for line, cells in enumerate(csv.reader(_text(body).splitlines()), start=1):
            if all(not cell.strip() for cell in cells):
                continue
            if first and not all(_NUMBER.fullmatch(cell.strip()) for cell in cells):
                order = _csv_header(cells, input_names)
                first = False
                continue
            first = False
            if len(cells) != d:
                raise RequestError(
                    f"CSV line {line}: expected {d} values ({','.join(input_names)}), "
                    f"got {len(cells)}"
                )
            points.append(
                [_csv_number(cells[k], line, input_names[j]) for j, k in enumerate(order)]
            )
    except csv.Error as e:
        raise RequestError(f"CSV: unparsable input: {e}") from e
    if not points:
        raise RequestError("CSV: expected at least one data row, got none")
    return PredictRequest(points, "none", False, "csv")
