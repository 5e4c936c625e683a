"""JSON in and out, within bounds: the strict decoder every JSON codec reads bodies with, and
the orjson encoder (`dumps`) every answer is written with.

See docs/serving.md ("Limits").
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

import orjson

from gp_serve.handler.codecs.budget import Budget, RequestError, clip

JSON_TYPE = "application/json"
# The deepest valid body is {"instances": [{"x1": 0.1}]} (3); anything past this is refused
# before decoding, so that no body can make the decoder recurse thousands of levels deep.
MAX_JSON_DEPTH = 32
# A JSON integer longer than this is refused (Python's int() refuses > 4300 digits anyway).
MAX_INTEGER_DIGITS = 400
# A number (a JSON float, a CSV cell) longer than this is refused before it is parsed: float64
# needs at most 17 significant digits, and no pattern or conversion then runs on a long text.
MAX_NUMBER_CHARS = 400
_BRACKET_STEPS = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def quote_names(names: Any, count: int = 10) -> str:
    """The first ``count`` of ``names`` as a JSON list, each cut by `clip` (error messages)."""
    return json.dumps([clip(name) for name in list(names)[:count]])


def describe(value: Any) -> str:
    """A short description of a decoded JSON value, for error messages."""
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


def finite_number(value: Any, where: str) -> float:
    """A decoded JSON number as a finite float64.

    Raises:
        RequestError: Naming ``where``, if ``value`` is not a number (a boolean included)
            or is not finite as a float64.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{where}: expected a finite number, got {describe(value)}")
    try:
        number = float(value)
    except OverflowError as e:
        raise RequestError(
            f"{where}: expected a finite number, got an integer that overflows a float64"
        ) from e
    if math.isinf(number):
        raise RequestError(
            f"{where}: expected a finite number, got one beyond the float64 range ({number!r})"
        )
    if math.isnan(number):
        raise RequestError(f"{where}: expected a finite number, got nan")
    return number


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
        raise RequestError(
            f"a JSON number of {len(text)} characters: expected at most "
            f"{MAX_NUMBER_CHARS} characters"
        )
    return float(text)


def body_text(body: bytes | bytearray | str) -> str:
    """A raw body as text (UTF-8, a byte-order mark dropped; a str is returned as is).

    Raises:
        RequestError: If the bytes are not UTF-8.
    """
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
    return max(0, max(accumulate(map(_BRACKET_STEPS.__getitem__, map(ord, brackets))), default=0))


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
    text = body_text(body)
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
        return json.loads(
            text, parse_constant=_reject_constant, parse_int=_integer, parse_float=_float
        )
    except json.JSONDecodeError as e:
        raise RequestError(
            f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}; expected "
            'an object like {"inputs": [[...], ...]} or a list of points'
        ) from e


def dumps(payload: Any) -> bytes:
    """Compact JSON (UTF-8) of dicts, lists, strings, numbers and C-contiguous numpy arrays.

    Floats are written in shortest round-trip form, so they parse back to the same
    float64. Callers pass finite numbers only (orjson would write NaN as ``null``).
    """
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
