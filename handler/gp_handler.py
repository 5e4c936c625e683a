"""TorchServe handler for an exported GP posterior, in the shape of KServe's sklearnserver model.

``initialize`` loads the artifact through its contract (``gp_artifact``), ``predict`` maps
`q x d` inputs to posterior tensors with the TorchScript module, and ``handle`` maps each
request of a batch to an answer or to its own 4xx: parsing and rendering are the pure-Python
``gp_protocol``'s. Both modules ship in the archive next to this file.
"""

from __future__ import annotations

import dataclasses
import logging
from http import HTTPStatus
from typing import Any

import torch
from torch import Tensor
from ts.torch_handler.base_handler import BaseHandler

from gp_serve.handler import gp_artifact
from gp_serve.handler import gp_formats
from gp_serve.handler import gp_protocol
from gp_serve.handler import gp_v2
from gp_serve.handler.gp_protocol import PredictRequest, RequestError

logger = logging.getLogger(__name__)
# The request limits model-config.yaml's ``handler`` section may set, and their defaults:
# gp_protocol.Budget's ``max_*`` fields (docs/serving.md says how they were sized).
LIMITS = {f.name: f.default for f in dataclasses.fields(gp_protocol.Budget)
          if f.name.startswith("max_")}


def _has_body(row: dict) -> bool:
    """Whether a request of a batch carries a body (any part that is not empty)."""
    return any(value not in (None, b"", "", bytearray()) for value in row.values())


def _array(values: Tensor):
    """A tensor as the C-contiguous numpy array the protocol's encoder takes (no copy if
    already contiguous)."""
    return values.contiguous().numpy()


class GPHandler(BaseHandler):
    """Answers ``POST /predictions/<model>`` with the GP posterior (JSON or CSV)."""

    def initialize(self, context: Any) -> None:
        """Read the handler settings and load ``metadata.json`` and the posterior in the
        format they name (``format``: ``torchscript``, ``pt2`` or ``onnx``).

        Raises:
            RuntimeError: If the artifact is missing, truncated or breaks the contract;
                one log line, the only one with ``gp_artifact.LOAD_ERROR_MARKER``, says why.
        """
        self.context, self.manifest = context, context.manifest
        model_dir = context.system_properties["model_dir"]
        settings = (getattr(context, "model_yaml_config", None) or {}).get("handler") or {}
        self.limits = {key: int(settings.get(key, default)) for key, default in LIMITS.items()}
        self.chunk_rows = int(settings.get("chunk_rows", 4096))
        threads = int(settings.get("torch_threads") or 0)
        if threads:
            torch.set_num_threads(threads)
        self.format = str(settings.get("format", gp_artifact.DEFAULT_FORMAT))
        try:
            self.metadata = gp_artifact.load_metadata(model_dir)
            if self.format not in self.metadata.formats:
                raise gp_artifact.ArtifactError(
                    f"format: model-config.yaml asks for {self.format!r}, the artifact holds "
                    f"{self.metadata.formats}")
            self.model = gp_formats.load(model_dir, self.format, len(self.metadata.input_names),
                                         threads or None)
        except (gp_artifact.ArtifactError, RuntimeError) as e:
            reason = " ".join(str(e).split())  # one log line, whatever torch's message is
            logger.error("%s %r: %s", gp_artifact.LOAD_ERROR_MARKER, context.model_name, reason)
            raise RuntimeError(reason) from e  # (TorchServe logs it again, with a traceback)
        document = self.metadata.document
        self.budget = gp_protocol.Budget(
            self.metadata.input_names, self.metadata.output_names, **self.limits,
            correlated_outputs=bool(document.get("correlated_outputs", True)),
            mixture_samples=self.metadata.mixture_samples)
        bounds = torch.tensor(self.metadata.input_bounds, dtype=torch.float64)
        self.lower, self.upper = bounds[:, 0], bounds[:, 1]
        self.version = str(self.manifest["model"].get("modelVersion", ""))
        self._warm_up()
        self.initialized = True

    @property
    def max_full_points(self) -> int:
        """The most points a full covariance may be asked for (the budget's)."""
        return self.budget.max_full_points

    def _warm_up(self) -> None:
        """Run every method before the first request.

        TorchScript's profiling executor profiles the first two calls of a method and then
        optimises it; left to the first requests, that costs them ~60 ms. Two sizes, so the
        optimised graph is not specialised to one number of points. (The compiled formats
        need no warm-up, but their first calls allocate; it costs them little.)
        """
        centre = torch.tensor([self.metadata.centre()], dtype=torch.float64)
        with torch.inference_mode():
            for q in (1, 1, 2, 2, 3):
                X = centre.expand(q, -1)
                for method in ("forward", "forward_noisy", "mean_var", "mean_var_noisy"):
                    getattr(self.model, method)(X)

    def predict(
        self, X: Tensor, covariance: bool, noisy: bool, offset: int = 0
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Posterior mean and variance (`q x m`) and, if asked, the `(q*m) x (q*m)` covariance.

        One module call: with the covariance, ``forward`` (the variances are its diagonal,
        clamped at ``MIN_VARIANCE`` as eager clamps them: the export gate checks exactly
        this); without, ``mean_var`` in chunks of ``chunk_rows`` points (memory
        `O(chunk x N)`).
        """
        if covariance:
            mean, full = (self.model.forward_noisy if noisy else self.model.forward)(X)
            variance = full.diagonal().reshape(-1, X.size(0)).t().clamp_min(
                gp_artifact.MIN_VARIANCE)
        else:
            method = self.model.mean_var_noisy if noisy else self.model.mean_var
            parts = [method(chunk) for chunk in X.split(self.chunk_rows)]
            mean, variance = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
            full = None
        finite = torch.isfinite(mean).all(dim=-1) & torch.isfinite(variance).all(dim=-1)
        if full is not None:  # (row t*q + i of the covariance is point i's)
            finite &= torch.isfinite(full).all(dim=-1).view(-1, X.size(0)).all(dim=0)
        if not bool(finite.all()):
            bad = [offset + i for i in (~finite).nonzero().flatten().tolist()[:10]]
            raise RequestError(f"the posterior is not finite at points {bad} (first 10): "
                               "expected inputs at a sane distance from the training bounds")
        return mean, variance, full

    def handle(self, data: list[dict], context: Any) -> list[bytes]:
        """One answer per request of the batch; a bad request fails only itself.

        (TorchServe times each batch itself: ``ts_inference_latency_microseconds`` and the
        worker's ``PredictionTime``; no metric of our own is written per request.)
        """
        self.context = context
        if self._is_describe() and len(data) == 1 and not _has_body(data[0]):
            return [self.describe_handle()]
        return [self._answer(idx, row) for idx, row in enumerate(data)]

    def describe_handle(self) -> bytes:
        """``metadata.json`` plus a ``serving`` object (the handler's limits).

        Answered to the management API's describe (``GET /models/<m>?customized=true``),
        which sends a ``describe`` header and no body; a prediction that carries that header
        (any client can send one on the inference port) is answered as a prediction.
        """
        serving = {"max_full_covariance_points": self.max_full_points, **self.limits,
                   "chunk_rows": self.chunk_rows, "format": self.format}
        return gp_protocol.dumps({**self.metadata.document, "serving": serving})

    def _answer(self, idx: int, row: dict) -> bytes:
        headers = self.context.get_all_request_header(idx)
        content_type, v2 = gp_protocol.JSON_TYPE, False
        try:
            body = gp_protocol.request_body(row)[1]
            v2 = gp_v2.has_header(headers)  # (errors in the v2 form from here on)
            parts = gp_v2.split(body, headers, self.budget)
            v2 = parts is not None
            with torch.inference_mode():
                if v2:
                    answer, content_type = self._v2(idx, gp_v2.parse_decoded(
                        *parts, self.budget))
                else:
                    request = gp_protocol.parse_request(row, headers, self.budget)
                    X = torch.tensor(request.points, dtype=torch.float64)
                    if request.envelope == "csv":
                        answer, content_type = self._csv(X), gp_protocol.CSV_TYPE
                    else:
                        answer = self._json(X, request)
        except RequestError as e:
            answer = (gp_v2.render_error(str(e)) if v2
                      else gp_protocol.render_error(str(e), e.status))
            self.context.set_response_status(e.status, HTTPStatus(e.status).phrase, idx)
        except Exception as e:  # noqa: BLE001 - one request's failure must not fail its batch
            logger.exception("prediction failed")
            answer = gp_protocol.render_error(f"internal error: {type(e).__name__}: {e}", 500)
            self.context.set_response_status(500, "Internal Server Error", idx)
        self.context.set_response_content_type(idx, content_type)
        return answer

    def _outside(self, X: Tensor) -> list[int]:
        """Indices of the points outside the training bounds."""
        return ((X < self.lower) | (X > self.upper)).any(dim=-1).nonzero().flatten().tolist()

    def _json(self, X: Tensor, request: PredictRequest) -> bytes:
        mean, variance, covariance = self.predict(
            X, request.covariance == "full", request.observation_noise)
        return gp_protocol.render_json(
            request, model=self.context.model_name, version=self.version,
            output_names=self.metadata.output_names,
            covariance_layout=self.metadata.covariance_layout, mean=_array(mean),
            variance=_array(variance), extrapolation=self._outside(X),
            covariance=None if covariance is None else _array(covariance))

    def _v2(self, idx: int, request: gp_v2.InferRequest) -> tuple[bytes, str]:
        """An Open Inference Protocol answer (JSON, or JSON plus binary tensors)."""
        X = torch.from_numpy(request.points)
        mean, variance, covariance = self.predict(
            X, request.covariance == "full", request.observation_noise)
        tensors = {"mean": _array(mean), "variance": _array(variance)}
        if covariance is not None:
            tensors["covariance"] = _array(covariance)
        parameters = {"outputs": self.metadata.output_names,
                      "covariance_layout": self.metadata.covariance_layout,
                      "observation_noise": request.observation_noise,
                      "extrapolation": self._outside(X)}
        body, length = gp_v2.render(request, tensors, model=self.context.model_name,
                                    version=self.version, parameters=parameters)
        if length is None:
            return body, gp_protocol.JSON_TYPE
        self.context.set_response_header(idx, gp_v2.HEADER_LENGTH, str(length))
        return body, gp_v2.BINARY_TYPE

    def _csv(self, X: Tensor) -> bytes:
        """``mean_<output>,std_<output>`` rows, `chunk_rows` points at a time."""
        parts = [gp_protocol.csv_header(self.metadata.output_names)]
        for start in range(0, X.size(0), self.chunk_rows):
            mean, variance, _ = self.predict(X[start : start + self.chunk_rows], False, False, start)
            parts.append(gp_protocol.csv_rows(_array(torch.stack([mean, variance.sqrt()], -1).flatten(1))))
        return b"".join(parts)
