"""The Open Inference Protocol (KServe v2) codec of the GP handler, JSON and binary tensors.

A request is v2 if it carries `HEADER_LENGTH` or its JSON body's ``inputs`` are tensor
objects (`split`); its errors are then v2's. See docs/serving.md (step 10).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np

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
from gp_serve.handler.codecs.budget import (
    BINARY_BYTES,
    NUMBER_BYTES,
    Budget,
    RequestError,
    clip,
    error_text,
)
from gp_serve.handler.codecs.products import Products

INPUT_NAME = "X"
DATATYPE = "FP64"
MOMENTS = ("mean", "variance", "covariance")
# Every output a request may name: the moments, then the products (`codecs.products`).
OUTPUTS = (*MOMENTS, "samples", "quantiles", "acquisition", *products.GRADIENTS)
HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_TYPE = "application/octet-stream"
PARAMETERS = ("covariance", "observation_noise", "binary_data_output", *products.KEYS)
_REQUEST_KEYS = ("id", "inputs", "outputs", "parameters")
_INPUT_KEYS = ("name", "shape", "datatype", "data", "parameters")


@dataclass(frozen=True)
class InferRequest:
    """A validated v2 inference request.

    Attributes:
        points: `q x d` float64 inputs, columns in input-name order.
        outputs: The outputs to answer with, in order (a subset of `OUTPUTS`).
        binary: The outputs to send as binary data.
        observation_noise: Whether to add observation noise.
        id: The request's ``id``, echoed in the answer ("" if none).
        products: The samples, quantiles and acquisition values asked for (``parameters``).
    """

    points: np.ndarray
    outputs: tuple[str, ...]
    binary: frozenset[str]
    observation_noise: bool
    id: str
    products: Products = products.NONE

    @property
    def covariance(self) -> CovarianceMode:
        """The covariance mode this request needs (``"full"`` or ``"diag"``)."""
        return "full" if "covariance" in self.outputs else "diag"


def header_length(headers: dict) -> int | None:
    """The ``Inference-Header-Content-Length`` request header, if sent (any case)."""
    for name, value in headers.items():
        if isinstance(name, str) and name.lower() == HEADER_LENGTH.lower():
            try:
                return int(value)
            except (TypeError, ValueError) as e:
                raise RequestError(
                    f"{HEADER_LENGTH}: expected a byte count, got {clip(value)!r}"
                ) from e
    return None


def has_header(headers: dict) -> bool:
    """Whether the request carries `HEADER_LENGTH` (it is then a v2 request, whatever else)."""
    return any(isinstance(name, str) and name.lower() == HEADER_LENGTH.lower() for name in headers)


def split(body: Any, headers: dict, budget: Budget | None = None) -> tuple[Any, bytes] | None:
    """A v2 request's decoded JSON (header) and its binary data; None if not a v2 request.

    A request is v2 if it carries `HEADER_LENGTH`, or if its JSON body is an object whose
    ``inputs`` are tensor objects declaring a ``datatype`` (no other request format has
    them). Bodies without the text ``"datatype"`` are not decoded here at all.

    Args:
        body: The raw body.
        headers: The request's headers.
        budget: If given, a JSON part holding more values than its points allow is refused
            (413) before it is decoded.

    Raises:
        RequestError: For a v2 request whose header length or JSON header is invalid, or
            too large (413).
    """
    length = header_length(headers)  # (None without the header)
    if length is not None:
        if not isinstance(body, (bytes, bytearray)) or not 0 < length <= len(body):
            size = len(body) if isinstance(body, (bytes, bytearray)) else 0
            raise RequestError(
                f"{HEADER_LENGTH}: expected a JSON header length between 1 and the body's "
                f"{size} bytes, got {clip(str(length))}"
            )
        return load_json(bytes(body[:length]), budget), bytes(body[length:])
    if not isinstance(body, (bytes, bytearray, str)):
        return None
    if not ('"datatype"' in body if isinstance(body, str) else b'"datatype"' in body):
        return None
    try:
        value = load_json(body, budget)
    except RequestError as e:
        if e.status == 413:
            raise
        return None  # (the other protocol's parser reports it)
    tensors = value.get("inputs") if isinstance(value, dict) else None
    if (
        isinstance(tensors, list)
        and tensors
        and all(isinstance(t, dict) and "datatype" in t for t in tensors)
    ):
        return value, b""
    return None


def parse_request(body: Any, headers: dict, budget: Budget) -> InferRequest:
    """Parse a v2 inference request (a raw body; see `split` and `parse_decoded`).

    Raises:
        RequestError: If it is not a v2 request or anything in it is invalid.
    """
    parts = split(body, headers, budget)
    if parts is None:
        value = load_json(body, budget)
        raise RequestError(
            f'expected a v2 inference request object {{"inputs": [...]}}, got {describe(value)}'
        )
    return parse_decoded(*parts, budget)


def parse_decoded(value: Any, raw: bytes, budget: Budget) -> InferRequest:
    """Validate a v2 request (`split`'s result), its cost included: the points (from the
    declared shape, before any float is built), the full covariance and the answer's bytes.

    Args:
        value: The decoded JSON (header).
        raw: The binary data after it (empty without the binary-data extension).
        budget: The model's inputs, outputs and limits.

    Raises:
        RequestError: If anything is invalid (400) or too large (413).
    """
    if not isinstance(value, dict):
        raise RequestError(
            f'expected a v2 inference request object {{"inputs": [...]}}, got {describe(value)}'
        )
    _known_keys(value, _REQUEST_KEYS, "request")
    request_id = value.get("id", "")
    if not isinstance(request_id, str):
        raise RequestError(f"id: expected a string, got {describe(request_id)}")
    parameters = _parameters(value.get("parameters", {}))
    points = _input(value.get("inputs"), raw, budget)
    q = len(points)
    asked = products.parse(value.get("parameters", {}), q, budget, "parameters.")
    outputs, binary = _outputs(value.get("outputs"), parameters, asked)
    request = InferRequest(
        points, outputs, binary, parameters["observation_noise"], request_id, asked
    )
    m = len(budget.output_names)
    if request.covariance == "full":
        budget.check_full(
            q, 'ask for the outputs "mean" and "variance" only (or parameters.covariance "diag")'
        )
    size = budget.overhead_bytes(q)
    for name in outputs:  # (each as JSON text or binary, as asked)
        if name in asked.asked:
            numbers = asked.output_numbers(name, q, m)
            size += numbers * (BINARY_BYTES if name in binary else NUMBER_BYTES)
            continue
        measure = budget.covariance_bytes if name == "covariance" else budget.tensor_bytes
        size += measure(q, name not in binary)
    budget.check_answer(size, q, request.covariance)
    return request


def _known_keys(value: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise RequestError(
            f"{where}: unknown keys {quote_names(unknown)}: expected only {list(allowed)}"
        )


class _Parameters(TypedDict):
    """A request's validated ``parameters`` (`PARAMETERS`), defaults filled in."""

    covariance: CovarianceMode
    observation_noise: bool
    binary_data_output: bool


def _parameters(value: Any) -> _Parameters:
    if not isinstance(value, dict):
        raise RequestError(f"parameters: expected an object, got {describe(value)}")
    _known_keys(value, PARAMETERS, "parameters")
    covariance = value.get("covariance", "full")
    if not is_covariance_mode(covariance):
        raise RequestError(
            f"parameters.covariance: expected one of "
            f"{json.dumps(list(COVARIANCE_MODES))}, got {describe(covariance)}"
        )
    return {
        "covariance": covariance,
        "observation_noise": _flag(value, "observation_noise"),
        "binary_data_output": _flag(value, "binary_data_output"),
    }


def _flag(parameters: dict, key: str) -> bool:
    flag = parameters.get(key, False)
    if not isinstance(flag, bool):
        raise RequestError(f"parameters.{key}: expected true or false, got {describe(flag)}")
    return flag


def _input(value: Any, raw: bytes, budget: Budget) -> np.ndarray:
    input_names = budget.input_names
    d = len(input_names)
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
        raise RequestError(
            f'inputs: expected one tensor {{"name": "{INPUT_NAME}", "shape": '
            f'[q, {d}], "datatype": "{DATATYPE}", ...}}, got {describe(value)}'
        )
    tensor = value[0]
    _known_keys(tensor, _INPUT_KEYS, "inputs[0]")
    if tensor.get("name") != INPUT_NAME:
        raise RequestError(
            f"inputs[0].name: expected {INPUT_NAME!r}, got {describe(tensor.get('name'))}"
        )
    if tensor.get("datatype") != DATATYPE:
        raise RequestError(
            f"inputs[0].datatype: expected {DATATYPE!r} (float64), got "
            f"{describe(tensor.get('datatype'))}"
        )
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or any(isinstance(n, bool) or not isinstance(n, int) for n in shape)
        or shape[0] < 1
        or shape[1] != d
    ):
        shown = json.dumps(shape)[:60] if isinstance(shape, list) else describe(shape)
        raise RequestError(
            f"inputs[0].shape: expected [q, {d}] with q >= 1 (inputs {input_names}), got {shown}"
        )
    q = shape[0]
    budget.check_points(q, "inputs[0].shape: a request")
    parameters = tensor.get("parameters", {})
    if not isinstance(parameters, dict):
        raise RequestError(f"inputs[0].parameters: expected an object, got {describe(parameters)}")
    size = parameters.get("binary_data_size")
    if size is None:
        if raw:
            raise RequestError(
                f"inputs[0]: the body has {len(raw)} bytes of binary data but "
                "the input declares no binary_data_size"
            )
        return _json_data(tensor.get("data"), q, d)
    if "data" in tensor:
        raise RequestError(
            "inputs[0]: expected either data or parameters.binary_data_size, got both"
        )
    if size != 8 * q * d or len(raw) != size:
        raise RequestError(
            f"inputs[0]: expected {8 * q * d} bytes of binary data ({q} x {d} "
            f"float64), got binary_data_size {json.dumps(size)[:40]} and "
            f"{len(raw)} bytes after the JSON header"
        )
    points = np.frombuffer(raw, dtype="<f8").astype(np.float64).reshape(q, d)
    bad = np.flatnonzero(~np.isfinite(points))
    if bad.size:
        i, j = divmod(int(bad[0]), d)
        raise RequestError(
            f"inputs[0] binary data: point {i}, input {j} "
            f"({input_names[j]}): expected a finite number, got "
            f"{float(points[i, j])!r}"
        )
    return points


def _json_data(data: Any, q: int, d: int) -> np.ndarray:
    if not isinstance(data, list):
        raise RequestError(
            f"inputs[0].data: expected a list of {q * d} numbers (row-major), got {describe(data)}"
        )
    if data and all(isinstance(row, list) for row in data):  # nested q x d
        if len(data) != q or any(len(row) != d for row in data):
            raise RequestError(
                f"inputs[0].data: expected {q} rows of {d} numbers (shape), got {len(data)} rows"
            )
        flat = [value for row in data for value in row]
    else:
        flat = data
    if len(flat) != q * d:
        raise RequestError(
            f"inputs[0].data: expected {q * d} numbers ({q} x {d}, the shape), got {len(flat)}"
        )
    values = [finite_number(v, f"inputs[0].data[{k}]") for k, v in enumerate(flat)]
    return np.array(values, dtype=np.float64).reshape(q, d)


def _outputs(
    value: Any, parameters: _Parameters, asked: Products
) -> tuple[tuple[str, ...], frozenset[str]]:
    every_binary = parameters["binary_data_output"]
    if value is None:
        moments = MOMENTS if parameters["covariance"] == "full" else MOMENTS[:2]
        default = (*moments, *asked.asked)
        return default, frozenset(default if every_binary else ())
    if not isinstance(value, list) or not value:
        raise RequestError(
            f'outputs: expected a non-empty list of {{"name": ...}} objects '
            f"(names in {list(OUTPUTS)}), got {describe(value)}"
        )
    names: list[str] = []
    binary: set[str] = set()
    for k, output in enumerate(value):
        if not isinstance(output, dict):
            raise RequestError(f"outputs[{k}]: expected an object, got {describe(output)}")
        _known_keys(output, ("name", "parameters"), f"outputs[{k}]")
        name = output.get("name")
        if name not in OUTPUTS or name in names:
            raise RequestError(
                f"outputs[{k}].name: expected one of {list(OUTPUTS)}, each "
                f"once, got {describe(name)}"
            )
        options = output.get("parameters", {})
        if not isinstance(options, dict):
            raise RequestError(
                f"outputs[{k}].parameters: expected an object, got {describe(options)}"
            )
        flag = options.get("binary_data", every_binary)
        if not isinstance(flag, bool):
            raise RequestError(
                f"outputs[{k}].parameters.binary_data: expected true or false, got {describe(flag)}"
            )
        names.append(name)
        if flag:
            binary.add(name)
    missing = [name for name in names if name not in MOMENTS and name not in asked.asked]
    if missing:
        needs = {
            "samples": "samples or parameters.base_samples",
            **dict.fromkeys(products.GRADIENTS, "gradients"),
        }.get(missing[0], missing[0])
        raise RequestError(
            f"outputs: {json.dumps(missing[0])} asked for without parameters.{needs}: "
            "expected the parameter that says how to compute it"
        )
    if "covariance" in names and parameters["covariance"] != "full":
        raise RequestError(
            'outputs: "covariance" asked for with parameters.covariance '
            f'{parameters["covariance"]!r}: expected "full" or no such '
            "parameter"
        )
    return tuple(names), frozenset(binary)


def render(
    request: InferRequest,
    tensors: dict[str, np.ndarray],
    *,
    model: str,
    version: str,
    parameters: dict,
) -> tuple[bytes, int | None]:
    """The v2 answer: its body and, with binary outputs, the JSON header's length.

    Args:
        request: The request answered.
        tensors: Each requested output's C-contiguous float64 array.
        model: The model's name; ``version`` its version.
        parameters: The answer's ``parameters`` (output names, layout, extrapolation).

    Returns:
        The body and the value of the `HEADER_LENGTH` response header (None if the
        answer is JSON only).
    """
    outputs, raw = [], []
    for name in request.outputs:
        array = tensors[name]
        output: dict[str, Any] = {"name": name, "datatype": DATATYPE, "shape": list(array.shape)}
        if name in request.binary:
            data = array.astype("<f8", copy=False).tobytes()
            output["parameters"] = {"binary_data_size": len(data)}
            raw.append(data)
        else:
            output["data"] = array.reshape(-1)
        outputs.append(output)
    answer: dict[str, Any] = {"model_name": model, "model_version": version}
    if request.id:
        answer["id"] = request.id
    answer["parameters"] = parameters
    answer["outputs"] = outputs
    header = dumps(answer)
    if not raw:
        return header, None
    return header + b"".join(raw), len(header)


def render_error(message: str) -> bytes:
    """A v2 error body: ``{"error": message}`` (cut to ``budget.MAX_ERROR_CHARS``)."""
    return dumps({"error": error_text(message)})


class V2Codec(Codec):
    """Open Inference Protocol requests and answers, JSON or JSON plus binary tensors.

    Args:
        parts: A request's `split` when `select` already decoded it to recognise it (a v2
            JSON body without the `HEADER_LENGTH` header); None: `decode` splits the body.
    """

    name = "v2"

    def __init__(self, parts: tuple[Any, bytes] | None = None) -> None:
        self.parts = parts

    def decode(self, body: Any, headers: dict, budget: Budget) -> InferRequest:
        """`parse_decoded` of the parts `select` split, else `parse_request`.

        Raises:
            RequestError: If anything is invalid (400) or too large (413).
        """
        if self.parts is not None:
            return parse_decoded(*self.parts, budget)
        return parse_request(body, headers, budget)

    def encode(self, request: InferRequest, posterior: Posterior, model: ServedModel) -> Answer:
        """`render`'s answer: ``application/json``, or with binary outputs
        ``application/octet-stream`` and the `HEADER_LENGTH` response header."""
        tensors = {"mean": posterior.mean, "variance": posterior.variance, **posterior.products}
        if posterior.covariance is not None:
            tensors["covariance"] = posterior.covariance
        parameters = {
            "outputs": model.output_names,
            "covariance_layout": model.covariance_layout,
            "observation_noise": request.observation_noise,
            "extrapolation": posterior.extrapolation,
        }
        if request.products.quantiles:
            parameters["quantiles"] = list(request.products.quantiles)
        body, length = render(
            request, tensors, model=model.name, version=model.version, parameters=parameters
        )
        if length is None:
            return Answer(body, JSON_TYPE)
        return Answer(body, BINARY_TYPE, {HEADER_LENGTH: str(length)})

    def error(self, message: str, status: int) -> tuple[bytes, str]:
        """`render_error`'s body, as ``application/json`` (``status`` is the response's only)."""
        return render_error(message), JSON_TYPE
