"""The TorchServe handler of an exported GP posterior (`GPHandler`).

Each request of a batch is decoded, predicted and encoded with its own codec (``codecs.select``)
and fails alone. See docs/serving.md ("Where things are").
"""

from __future__ import annotations

import dataclasses
import logging
from http import HTTPStatus
from typing import Any

import numpy as np
import torch
from torch import Tensor
from ts.torch_handler.base_handler import BaseHandler

from gp_serve.handler import acquisition, codecs, gp_artifact, gp_formats, gradients, sampling
from gp_serve.handler.codecs.base import Answer, Codec, Posterior, Request, ServedModel
from gp_serve.handler.codecs.bounded_json import dumps
from gp_serve.handler.codecs.budget import Budget, RequestError
from gp_serve.handler.codecs.products import GRADIENTS, Products

logger = logging.getLogger(__name__)
# The request limits model-config.yaml's ``handler`` section may set, and their defaults:
# codecs.budget.Budget's ``max_*`` fields (docs/serving.md says how they were sized).
LIMITS = {f.name: f.default for f in dataclasses.fields(Budget) if f.name.startswith("max_")}
# Points per ``forward`` call when acquisition values need each point's output covariance.
BLOCK_POINTS = 64
# model-config.yaml's defaults for the rows per ``mean_var`` call and the working memory that
# bounds them: a call holds about two float64 `(m) x rows x N` kernel products.
CHUNK_ROWS, CHUNK_BYTES = 4096, 64 * 2**20


def _has_body(row: dict) -> bool:
    """Whether a request of a batch carries a body (any part that is not empty)."""
    return any(value not in (None, b"", "", bytearray()) for value in row.values())


def _array(values: Tensor) -> np.ndarray:
    """A tensor as the C-contiguous numpy array the codecs' encoders take (no copy if
    already contiguous)."""
    return values.contiguous().numpy()


class GPHandler(BaseHandler):
    """Answers ``POST /predictions/<model>`` (JSON, CSV) and ``POST /v2/models/<model>/infer``
    (the Open Inference Protocol) with the GP posterior."""

    # Set by `initialize`.
    model: gp_formats.PosteriorModule
    metadata: gp_artifact.Metadata
    budget: Budget
    format: str
    limits: dict[str, int]
    chunk_rows: int
    csv_reader: str
    lower: Tensor
    upper: Tensor
    version: str

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
        threads = int(settings.get("torch_threads") or 0)
        if threads:
            torch.set_num_threads(threads)
        self.format = str(settings.get("format", gp_artifact.DEFAULT_FORMAT))
        self.csv_reader = str(settings.get("csv_reader", codecs.CSV_READERS[0]))
        if self.csv_reader not in codecs.CSV_READERS:
            raise ValueError(
                f"csv_reader: expected one of {list(codecs.CSV_READERS)}, got {self.csv_reader!r}"
            )
        try:
            self.metadata = gp_artifact.load_metadata(model_dir)
            if self.format not in self.metadata.formats:
                raise gp_artifact.ArtifactError(
                    f"format: model-config.yaml asks for {self.format!r}, the artifact holds "
                    f"{self.metadata.formats}"
                )
            self.model = gp_formats.load(
                model_dir, self.format, len(self.metadata.input_names), threads or None
            )
        except (gp_artifact.ArtifactError, RuntimeError) as e:
            reason = " ".join(str(e).split())  # one log line, whatever torch's message is
            logger.error("%s %r: %s", gp_artifact.LOAD_ERROR_MARKER, context.model_name, reason)
            raise RuntimeError(reason) from e  # (TorchServe logs it again, with a traceback)
        document = self.metadata.document
        self.budget = Budget(
            self.metadata.input_names,
            self.metadata.output_names,
            **self.limits,
            correlated_outputs=bool(document.get("correlated_outputs", True)),
            mixture_samples=self.metadata.mixture_samples,
        )
        outputs = len(self.metadata.output_names) * self.metadata.mixture_samples
        per_row = 2 * 8 * max(1, int(document.get("num_train", 1))) * outputs
        self.chunk_rows = max(
            1,
            min(
                int(settings.get("chunk_rows", CHUNK_ROWS)),
                int(settings.get("chunk_bytes", CHUNK_BYTES)) // per_row,
            ),
        )
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
        """Run every method at two sizes before the first request: TorchScript optimises a
        method after profiling its first two calls (docs/serving.md, "Where things are")."""
        centre = torch.tensor([self.metadata.centre()], dtype=torch.float64)
        with torch.inference_mode():
            methods = (
                self.model.forward,
                self.model.forward_noisy,
                self.model.mean_var,
                self.model.mean_var_noisy,
            )
            for q in (1, 1, 2, 2, 3):
                X = centre.expand(q, -1)
                for method in methods:
                    method(X)

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
            variance = (
                full.diagonal().reshape(-1, X.size(0)).t().clamp_min(gp_artifact.MIN_VARIANCE)
            )
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
            raise RequestError(
                f"the posterior is not finite at points {bad} (first 10): "
                "expected inputs at a sane distance from the training bounds"
            )
        return mean, variance, full

    def handle(self, data: list[dict], context: Any) -> list[bytes]:
        """One answer per request of the batch; a bad request fails only itself."""
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
        serving = {
            "max_full_covariance_points": self.max_full_points,
            **self.limits,
            "chunk_rows": self.chunk_rows,
            "format": self.format,
            "csv_reader": self.csv_reader,
        }
        return dumps({**self.metadata.document, "serving": serving})

    def _answer(self, idx: int, row: dict) -> bytes:
        """One request's answer: select its codec, decode, predict, encode.

        A `RequestError` (400, 413) is answered by the selected codec's ``error``, or by
        JSON's if it came before one was selected; anything else is a 500 in JSON's form.
        """
        headers = self.context.get_all_request_header(idx)
        codec: Codec = codecs.JSON
        try:
            codec = codecs.select(row, headers, self.budget, self.csv_reader)
            request = codec.decode(codecs.request_body(row)[1], headers, self.budget)
            with torch.inference_mode():
                posterior = self._posterior(request, codec.chunked)
            answer = codec.encode(request, posterior, self._served())
            for name, value in answer.headers.items():
                self.context.set_response_header(idx, name, value)
        except RequestError as e:
            answer = Answer(*codec.error(str(e), e.status))
            self.context.set_response_status(e.status, HTTPStatus(e.status).phrase, idx)
        except Exception as e:  # (broad: one request's failure must not fail its batch)
            logger.exception("prediction failed")
            answer = Answer(*codecs.JSON.error(f"internal error: {type(e).__name__}: {e}", 500))
            self.context.set_response_status(500, "Internal Server Error", idx)
        self.context.set_response_content_type(idx, answer.content_type)
        return answer.body

    def _posterior(self, request: Request, chunked: bool) -> Posterior:
        """``request``'s posterior as the codecs take it (numpy), with the indices of its
        points outside the training bounds.

        Args:
            request: The decoded request (`q x d` points, covariance mode, noise).
            chunked: Predict `chunk_rows` points at a time, without covariance, naming the
                non-finite points of the first chunk that has any (the CSV codec's rows).
        """
        X = torch.as_tensor(request.points, dtype=torch.float64)
        noisy = request.observation_noise
        asked = request.products
        spec = self._acquisition(asked, noisy)  # (validated before any posterior work)
        if asked.gradients and self.format not in gradients.DIFFERENTIABLE_FORMATS:
            raise RequestError(
                f"gradients: the served format {self.format!r} carries no autograd graph: "
                f"expected a model served as {list(gradients.DIFFERENTIABLE_FORMATS)}"
            )
        if chunked:
            parts = [
                self.predict(X[start : start + self.chunk_rows], False, noisy, start)
                for start in range(0, X.size(0), self.chunk_rows)
            ]
            mean, variance = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
            std = torch.cat([p[1].sqrt() for p in parts])  # (torch's sqrt, chunk by chunk)
            covariance = None
        else:
            joint = request.covariance == "full" or asked.joint
            mean, variance, covariance = self.predict(X, joint, noisy)
            std = variance.sqrt()
        products = self._products(asked, spec, X, mean, variance, covariance)
        if asked.gradients:
            with torch.inference_mode(False):  # (autograd: X anew, not an inference tensor)
                points = torch.tensor(request.points, dtype=torch.float64)
                method = self.model.mean_var_noisy if noisy else self.model.mean_var
                grads = gradients.moment_gradients(method, points, self.chunk_rows)
            products |= dict(zip(GRADIENTS, grads, strict=True))
        return Posterior(
            _array(mean),
            _array(variance),
            _array(std),
            None if covariance is None or request.covariance != "full" else _array(covariance),
            self._outside(X),
            {name: _array(values) for name, values in products.items()},
        )

    def _acquisition(self, asked: Products, noisy: bool) -> acquisition.Acquisition | None:
        """The request's acquisition function, validated (None if it asks for none).

        Raises:
            RequestError: If its spec is invalid, or the request asks for observation
                noise (BoTorch's analytic acquisition functions use the noiseless posterior).
        """
        if asked.acquisition is None:
            return None
        if noisy:
            raise RequestError(
                "acquisition: BoTorch's analytic acquisition functions use the noiseless "
                "posterior: expected observation_noise false with an acquisition"
            )
        return acquisition.parse(asked.acquisition, self.metadata.output_names)

    def _products(
        self,
        asked: Products,
        spec: acquisition.Acquisition | None,
        X: Tensor,
        mean: Tensor,
        variance: Tensor,
        covariance: Tensor | None,
    ) -> dict[str, Tensor]:
        """The products ``asked`` for, from the request's posterior at `q x d` ``X``: its
        `q x m` mean and variance and, where samples are asked for, its joint covariance."""
        products: dict[str, Tensor] = {}
        q, m = mean.shape
        if asked.joint and covariance is not None:
            base = (
                torch.tensor(asked.base_samples, dtype=torch.float64)
                if asked.base_samples is not None
                else sampling.standard_normal(asked.samples, asked.seed, q, m)
            )
            try:
                products["samples"] = sampling.draw(
                    mean, covariance, base, self.metadata.sample_order
                )
            except sampling.NotPositiveDefinite as e:
                raise RequestError(f"samples: {e}") from e
        if asked.quantiles:
            levels = torch.tensor(asked.quantiles, dtype=torch.float64)
            products["quantiles"] = sampling.quantiles(mean, variance, levels)
        if spec is not None:
            blocks = None
            if acquisition.needs_output_covariance(spec, self.budget.correlated_outputs):
                blocks = self._point_blocks(X, covariance)
            products["acquisition"] = acquisition.evaluate(spec, mean, variance, blocks)
        return products

    def _point_blocks(self, X: Tensor, covariance: Tensor | None) -> Tensor:
        """The `q x m x m` noiseless covariance of each point's outputs: from the joint
        ``covariance`` if it was computed, else from ``forward`` on `BLOCK_POINTS` points
        at a time (each call `O((BLOCK_POINTS m)^2)`)."""
        m = len(self.metadata.output_names)
        if covariance is not None:
            return acquisition.point_blocks(covariance, X.size(0), m)
        parts = []
        for chunk in X.split(BLOCK_POINTS):
            parts.append(acquisition.point_blocks(self.model.forward(chunk)[1], chunk.size(0), m))
        return torch.cat(parts)

    def _served(self) -> ServedModel:
        """The facts of the served model an answer names."""
        return ServedModel(
            self.context.model_name,
            self.version,
            self.metadata.output_names,
            self.metadata.covariance_layout,
            self.metadata.input_names,
        )

    def _outside(self, X: Tensor) -> list[int]:
        """Indices of the points outside the training bounds."""
        return ((X < self.lower) | (X > self.upper)).any(dim=-1).nonzero().flatten().tolist()
