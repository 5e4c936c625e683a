"""The JSON codec of ``POST /predictions/<model>``: gp-serve's own envelope, KServe v1's
(``instances``) and a bare list of points.

See docs/serving.md (steps 2 to 4 and 9, "Limits").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gp_serve.handler.codecs import products
from gp_serve.handler.codecs.base import (
    COVARIANCE_MODES,
    Answer,
    Codec,
    CovarianceMode,
    Posterior,
    ServedModel,
    is_covariance_mode,
)
from gp_serve.handler.codecs.bounded_json import (
    JSON_TYPE,
    describe,
    dumps,
    finite_number,
    load_json,
    quote_names,
)
from gp_serve.handler.codecs.budget import Budget, RequestError, error_text
from gp_serve.handler.codecs.products import Products

ENVELOPE_KEYS = ("inputs", "instances")
OPTION_KEYS = ("covariance", "observation_noise", *products.KEYS)


@dataclass(frozen=True)
class PredictRequest:
    """A validated prediction request of the REST API (JSON, or CSV: `csv_codec`).

    Attributes:
        points: `q x d` raw inputs as Python floats, columns in input-name order.
        covariance: One of `COVARIANCE_MODES` (``"none"`` for CSV).
        observation_noise: Whether to add observation noise to the posterior.
        envelope: ``"inputs"``, ``"instances"`` (KServe v1), ``"list"`` or ``"csv"``.
        products: The samples, quantiles and acquisition values asked for (`products`).
    """

    points: list[list[float]]
    covariance: CovarianceMode
    observation_noise: bool
    envelope: str
    products: Products = products.NONE


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
        return [finite_number(value[name], f"{where}.{name}") for name in input_names]
    if not isinstance(value, list):
        raise RequestError(
            f"{where}: expected a point (a list of {d} numbers or an object keyed by "
            f"{input_names}), got {describe(value)}"
        )
    nested = next((j for j, v in enumerate(value) if isinstance(v, (list, dict))), None)
    if nested is not None:
        raise RequestError(
            f"{where}[{nested}]: expected a number (points nest one level deep: "
            f"[[{', '.join(input_names)}], ...]), got {describe(value[nested])}"
        )
    if len(value) != d:
        raise RequestError(
            f"{where}: expected {d} numbers (inputs {input_names}), got {len(value)}"
        )
    return [finite_number(v, f"{where}[{j}] ({input_names[j]})") for j, v in enumerate(value)]


def parse_points(
    value: Any, key: str, input_names: list[str], budget: Budget | None = None
) -> list[list[float]]:
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
        raise RequestError(f"{key}: expected a list of points, got {describe(value)}")
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


def _options(body: dict) -> tuple[CovarianceMode, bool]:
    covariance = body.get("covariance", "full")
    if not is_covariance_mode(covariance):
        raise RequestError(
            f"covariance: expected one of {list(COVARIANCE_MODES)}, got {describe(covariance)}"
        )
    noise = body.get("observation_noise", False)
    if not isinstance(noise, bool):
        raise RequestError(f"observation_noise: expected true or false, got {describe(noise)}")
    return covariance, noise


def parse_json(body: Any, input_names: list[str], budget: Budget | None = None) -> PredictRequest:
    """Parse a JSON prediction request (its points and options; its cost: `check_cost`).

    Accepts ``{"inputs": [...], "covariance": ..., "observation_noise": ...}`` with the
    products' keys (`products.KEYS`), the KServe v1 envelope ``{"instances": [...], ...}``
    and a bare list of points.

    Args:
        body: The raw body, or the value TorchServe already decoded.
        input_names: The model's ``d`` input names, in order.
        budget: If given, a body of more points than its `Budget.max_points` is refused
            (413), before it is decoded when it is raw; the products are read only with one
            (they depend on the model's outputs).

    Returns:
        The validated request.

    Raises:
        RequestError: If anything in the request is invalid.
    """
    value = load_json(body, budget)
    if isinstance(value, list):
        return PredictRequest(
            parse_points(value, "body", input_names, budget), "full", False, "list"
        )
    if not isinstance(value, dict):
        raise RequestError(
            'expected a JSON object like {"inputs": [[...], ...]} or a list of points, '
            f"got {describe(value)}"
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
    points = parse_points(value[key], key, input_names, budget)
    asked = products.NONE if budget is None else products.parse(value, len(points), budget)
    return PredictRequest(points, covariance, noise, key, asked)


def check_cost(request: PredictRequest, budget: Budget) -> None:
    """Refuse a JSON request whose full covariance or answer is over ``budget`` (413)."""
    q = len(request.points)
    full = request.covariance == "full"
    if full:
        budget.check_full(q, 'send "covariance": "diag" (or "none")')
    instances = request.envelope == "instances"  # (repeats mean and variance, with its keys)
    size = budget.answer_bytes(
        q, full, per_point_numbers=4 if instances else 2, extra_bytes=(48 if instances else 8)
    )
    size += request.products.answer_bytes(q, len(budget.output_names))
    budget.check_answer(size, q, request.covariance)


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
    extras: dict[str, Any] | None = None,
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
        extras: The products asked for, by answer key (`Posterior.products`).

    Returns:
        The body (compact JSON; docs/serving.md shows the keys).
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
    answer |= extras or {}
    if request.envelope == "instances":
        answer["predictions"] = [
            {"mean": mu, "variance": var} for mu, var in zip(mean, variance, strict=True)
        ]
    return dumps(answer)


class JsonCodec(Codec):
    """JSON requests and answers (gp-serve's envelope, KServe v1's, a bare list of points)."""

    name = "json"

    def decode(self, body: Any, headers: dict, budget: Budget) -> PredictRequest:
        """`parse_json` then `check_cost` (``headers`` are not read).

        Raises:
            RequestError: If anything is invalid (400) or too large (413).
        """
        request = parse_json(body, budget.input_names, budget)
        check_cost(request, budget)
        return request

    def encode(self, request: PredictRequest, posterior: Posterior, model: ServedModel) -> Answer:
        """`render_json`'s answer, as ``application/json``."""
        return Answer(
            render_json(
                request,
                model=model.name,
                version=model.version,
                output_names=model.output_names,
                covariance_layout=model.covariance_layout,
                mean=posterior.mean,
                variance=posterior.variance,
                covariance=posterior.covariance,
                extrapolation=posterior.extrapolation,
                extras=posterior.products,
            ),
            JSON_TYPE,
        )

    def error(self, message: str, status: int) -> tuple[bytes, str]:
        """`render_error`'s body, as ``application/json``."""
        return render_error(message, status), JSON_TYPE


JSON = JsonCodec()
