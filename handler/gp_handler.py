"""TorchServe handler for an exported GP posterior (``posterior.pt`` + ``metadata.json``).

Thin by design: requests are parsed and validated by ``gp_request`` (shipped in the
same archive), the maths is the TorchScript module's, and this file only calls its
methods and formats the answers. Each request of a batch is answered on its own:
a bad request gets its own 4xx (``context.set_response_status``) and never fails
the others or the worker.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from http import HTTPStatus
from typing import Any

import torch
from torch import Tensor
from ts.torch_handler.base_handler import BaseHandler

from gp_request import PredictRequest, RequestError, is_csv, parse_csv, parse_json

METADATA_FILE = "metadata.json"
METADATA_FORMAT = "gp-serve/1"
DEFAULT_MAX_FULL_COVARIANCE_POINTS = 2000
DEFAULT_CHUNK_ROWS = 4096
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv; charset=utf-8"

logger = logging.getLogger(__name__)


def _dumps(payload: Any) -> str:
    """Compact JSON; floats as ``repr`` so that they round-trip exactly."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False)


def _error(message: str, code: int) -> str:
    return _dumps({"error": message, "code": code})


def _body(row: dict) -> tuple[str, Any]:
    """The request body and the name of the part it came in."""
    for name in ("body", "data"):
        if row.get(name) is not None:
            return name, row[name]
    if len(row) == 1:
        return next(iter(row.items()))
    raise RequestError(
        "expected a JSON body (Content-Type: application/json) or CSV (Content-Type: "
        f"text/csv), got a form or multipart body with {len(row)} parts "
        f"{sorted(row)[:10]} (curl -d sends a form: add -H 'Content-Type: application/json')"
    )


def _check_finite(mean: Tensor, variance: Tensor, offset: int = 0) -> None:
    """Refuse points (`q x m` answers) where the posterior overflowed to inf/NaN."""
    finite = torch.isfinite(mean).all(dim=-1) & torch.isfinite(variance).all(dim=-1)
    if not bool(finite.all()):
        bad = [offset + i for i in (~finite).nonzero().flatten().tolist()[:10]]
        raise RequestError(
            f"the posterior is not finite at points {bad} (first 10): expected inputs "
            "at a sane distance from the training bounds"
        )


class GPHandler(BaseHandler):
    """Answers ``POST /predictions/<model>`` with the GP posterior (JSON or CSV)."""

    def initialize(self, context: Any) -> None:
        """Load the TorchScript posterior, its metadata and the handler settings.

        Args:
            context: TorchServe's context (model dir, manifest, model-config.yaml).

        Raises:
            ValueError: If ``metadata.json`` is missing a key or has another format.
        """
        super().initialize(context)
        model_dir = context.system_properties["model_dir"]
        with open(os.path.join(model_dir, METADATA_FILE), encoding="utf-8") as f:
            self.metadata = json.load(f)
        if self.metadata.get("format") != METADATA_FORMAT:
            raise ValueError(
                f"expected {METADATA_FILE} of format {METADATA_FORMAT!r}, "
                f"got {self.metadata.get('format')!r}"
            )
        self.input_names = list(self.metadata["input_names"])
        self.output_names = list(self.metadata["output_names"])
        bounds = torch.tensor(self.metadata["input_bounds"], dtype=torch.float64)
        self.lower, self.upper = bounds[:, 0], bounds[:, 1]
        settings = (getattr(self, "model_yaml_config", None) or {}).get("handler") or {}
        self.max_full_points = int(
            settings.get("max_full_covariance_points", DEFAULT_MAX_FULL_COVARIANCE_POINTS)
        )
        self.chunk_rows = int(settings.get("chunk_rows", DEFAULT_CHUNK_ROWS))
        if settings.get("torch_threads"):
            torch.set_num_threads(int(settings["torch_threads"]))
        self.model_name = context.model_name
        self.version = str(self.manifest["model"].get("modelVersion", ""))

    def handle(self, data: list[dict], context: Any) -> list[str]:
        """Answer every request of a batch on its own.

        Args:
            data: One dict per request, holding its body (``body`` or ``data``).
            context: TorchServe's context: request headers, response status.

        Returns:
            One response body (JSON or CSV text) per request.
        """
        start = time.time()
        self.context = context
        if self._is_describe():
            return [self.describe_handle()]
        answers = [self._answer(idx, row) for idx, row in enumerate(data)]
        context.metrics.add_time("HandlerTime", round((time.time() - start) * 1000, 2), None, "ms")
        return answers

    def describe_handle(self) -> str:
        """The exported model's metadata and the serving settings, as JSON.

        Returns:
            ``metadata.json`` plus a ``serving`` object (the handler's limits).
        """
        serving = {
            "max_full_covariance_points": self.max_full_points,
            "chunk_rows": self.chunk_rows,
        }
        return _dumps({**self.metadata, "serving": serving})

    def _content_type(self, idx: int, part: str) -> str | None:
        """The Content-Type of request ``idx``: its body part's, else the request's."""
        headers = self.context.get_all_request_header(idx)
        part_headers = headers.get(part)
        if isinstance(part_headers, dict) and part_headers.get("content-type"):
            return part_headers["content-type"]
        for name, value in headers.items():
            if name.lower() == "content-type" and isinstance(value, str):
                return value
        return None

    def _answer(self, idx: int, row: dict) -> str:
        """Answer request ``idx`` of the batch; errors become its own 4xx/5xx."""
        try:
            part, body = _body(row)
            if is_csv(self._content_type(idx, part)):
                request = parse_csv(body, self.input_names)
            else:
                request = parse_json(body, self.input_names)
            X = torch.tensor(request.points, dtype=torch.float64, device=self.device)
            with torch.inference_mode():
                if request.envelope == "csv":
                    answer = self._csv_scores(X)
                    self.context.set_response_content_type(idx, CSV_TYPE)
                    return answer
                answer = self._json_prediction(X, request)
        except RequestError as e:
            answer, status = _error(str(e), e.status), e.status
            self.context.set_response_status(status, HTTPStatus(status).phrase, idx)
        except Exception as e:  # noqa: BLE001 - one request's failure must not fail its batch
            logger.exception("prediction failed")
            answer = _error(f"internal error: {type(e).__name__}: {e}", 500)
            self.context.set_response_status(500, "Internal Server Error", idx)
        self.context.set_response_content_type(idx, JSON_TYPE)
        return answer

    def _mean_var(self, X: Tensor, noisy: bool) -> tuple[Tensor, Tensor]:
        """Mean and variance, both `q x m`, in chunks of `chunk_rows x d`."""
        method = self.model.mean_var_noisy if noisy else self.model.mean_var
        parts = [method(chunk) for chunk in X.split(self.chunk_rows)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _json_prediction(self, X: Tensor, request: PredictRequest) -> str:
        """The JSON answer for `q x d` ``X``; the covariance only when ``"full"``."""
        q = X.size(0)
        if request.covariance == "full" and q > self.max_full_points:
            raise RequestError(
                f"a full covariance is limited to {self.max_full_points} points, got {q}; "
                'send "covariance": "diag" (or "none") for more points',
                413,
            )
        mean, variance = self._mean_var(X, request.observation_noise)
        _check_finite(mean, variance)
        outside = ((X < self.lower) | (X > self.upper)).any(dim=-1)
        answer = {
            "model": self.model_name,
            "version": self.version,
            "outputs": self.output_names,
            "observation_noise": request.observation_noise,
            "mean": mean.tolist(),
            "variance": variance.tolist(),
            "covariance_layout": "output-major",
            "extrapolation": outside.nonzero().flatten().tolist(),
        }
        if request.covariance == "full":
            forward = self.model.forward_noisy if request.observation_noise else self.model
            answer["covariance"] = forward(X)[1].tolist()
        if request.envelope == "instances":
            answer["predictions"] = [
                {"mean": mu, "variance": var}
                for mu, var in zip(answer["mean"], answer["variance"])
            ]
        return _dumps(answer)

    def _csv_scores(self, X: Tensor) -> str:
        """CSV ``mean_<output>,std_<output>`` rows for `q x d` ``X``, chunk by chunk."""
        out = io.StringIO()
        out.write(",".join(f"mean_{n},std_{n}" for n in self.output_names) + "\n")
        for start in range(0, X.size(0), self.chunk_rows):
            chunk = X[start : start + self.chunk_rows]
            mean, variance = self._mean_var(chunk, False)
            _check_finite(mean, variance, offset=start)
            columns = torch.stack([mean, variance.sqrt()], dim=-1).flatten(1)
            for values in columns.tolist():
                out.write(",".join(map(repr, values)) + "\n")
        return out.getvalue()
