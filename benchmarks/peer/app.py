"""The peer: the GP server a user would write instead, with FastAPI, uvicorn and eager BoTorch.

    uvicorn benchmarks.peer.app:app --host 127.0.0.1 --port 8090 --workers 2

(``python -m benchmarks.http`` starts it on a free loopback port and stops it.) Each uvicorn
worker process fits the same model as ``make export`` at startup,
``export.fit.fit_model(export.data.default_data(), "single")`` (a ``SingleTaskGP``, the same
data and seed), with one torch thread; with ``GP_PEER_STATE_DICT=<path>`` it loads that
``state_dict`` into the same model instead of keeping its own fit. Predictions are eager
``model.posterior(X)`` under ``torch.no_grad()``.

The contract is gp-serve's at a basic level (see ``handler/codecs/``):

- ``POST /predictions/gp`` with JSON ``{"inputs": [[x1, x2], ...], "covariance":
  "full"|"diag"|"none", "observation_noise": bool}`` (validated by a pydantic model from the
  raw body) answers the same keys in the same layout: ``model``, ``version``, ``outputs``,
  ``observation_noise``, ``mean`` and ``variance`` (`q x m`), ``covariance_layout``
  (``"output-major"``: BoTorch's own layout for a multi-output ``SingleTaskGP``),
  ``extrapolation`` and, for ``"full"``, the `(q*m) x (q*m)` ``covariance``.
- ``Content-Type: text/csv`` (one point per row, optional header ``x1,x2``) answers
  ``mean_<output>,std_<output>`` columns (posterior calls of `CSV_CHUNK_ROWS` points).
- Bad input answers 400 with ``{"error": ..., "code": 400}``.

Answers are encoded with the standard library's ``json.dumps`` (of ``tolist()``) into a
plain ``Response``, as a user would write it (FastAPI's default ``jsonable_encoder`` path is
slower still for large lists). The endpoint is ``async`` and computes inline: one request
at a time per worker process, like a TorchServe worker.

One deviation from a stock setup: ``uvicorn --workers N`` on Linux binds its listening socket
with ``proto=0``, so asyncio never sets ``TCP_NODELAY`` on accepted connections
(Kludex/uvicorn#3149) and every keep-alive request after the first waits ~40 ms for the
client's delayed ACK. `_restore_tcp_nodelay` patches that in each worker at import, so the
benchmark measures the framework and eager BoTorch, not Nagle's algorithm;
``GP_PEER_STOCK_UVICORN=1`` leaves uvicorn as it is (the bench measures that too, once).
"""

from __future__ import annotations

import asyncio.base_events
import io
import json
import os
import socket
from typing import Literal

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, ValidationError

from gp_serve.export.data import default_data
from gp_serve.export.fit import fit_model

MODEL_NAME = "gp"
VERSION = "1.0"
COVARIANCE_LAYOUT = "output-major"
# Points per posterior call for CSV: eager ``model.posterior(X).variance`` materialises the
# q x q test covariance (q = 10^4: 1.6 GB for two outputs), so a CSV body is done in chunks.
CSV_CHUNK_ROWS = 1000


def _restore_tcp_nodelay() -> None:
    """Set ``TCP_NODELAY`` on every accepted TCP socket, whatever its ``proto`` says."""

    def set_nodelay(sock: socket.socket) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    asyncio.base_events._set_nodelay = set_nodelay  # (private: see the module docstring)


if os.environ.get("GP_PEER_STOCK_UVICORN") != "1":
    _restore_tcp_nodelay()
torch.set_num_threads(1)
DATA = default_data()
MODEL = fit_model(DATA, "single")
if os.environ.get("GP_PEER_STATE_DICT"):
    MODEL.load_state_dict(torch.load(os.environ["GP_PEER_STATE_DICT"], weights_only=True))
    MODEL.eval()
LOWER, UPPER = DATA.X.min(dim=0).values, DATA.X.max(dim=0).values
INPUT_NAMES, OUTPUT_NAMES = DATA.input_names, DATA.output_names

app = FastAPI(title="gp peer (FastAPI + eager BoTorch)")


class PredictBody(BaseModel):
    """A JSON prediction request."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    inputs: list[list[float]]
    covariance: Literal["full", "diag", "none"] = "full"
    observation_noise: bool = False


def _error(message: str, status: int = 400) -> Response:
    return Response(
        json.dumps({"error": message, "code": status}),
        status_code=status,
        media_type="application/json",
    )


def _points(rows: list[list[float]] | np.ndarray) -> torch.Tensor:
    X = torch.as_tensor(np.asarray(rows, dtype=np.float64))
    if X.dim() != 2 or X.size(0) == 0 or X.size(1) != len(INPUT_NAMES):
        raise ValueError(
            f"expected a non-empty list of points of {len(INPUT_NAMES)} numbers "
            f"({INPUT_NAMES}), got shape {tuple(X.shape)}"
        )
    return X


def _csv(body: bytes) -> Response:
    text = body.decode("utf-8-sig")
    first = text.split("\n", 1)[0]
    header = any(c.isalpha() and c not in "eE" for c in first) or not first.strip()
    try:
        X = _points(np.loadtxt(io.StringIO(text), delimiter=",", skiprows=int(header), ndmin=2))
    except ValueError as e:
        return _error(f"CSV: {e}")
    if not torch.isfinite(X).all():
        return _error("CSV: expected finite numbers")
    parts = []
    with torch.no_grad():  # in chunks: eager posterior(X) builds the q x q covariance
        for chunk in X.split(CSV_CHUNK_ROWS):
            posterior = MODEL.posterior(chunk)
            parts.append(torch.stack([posterior.mean, posterior.variance.sqrt()], -1).flatten(1))
    columns = torch.cat(parts)
    lines = [",".join(f"mean_{name},std_{name}" for name in OUTPUT_NAMES)]
    lines += [",".join(map(repr, row)) for row in columns.tolist()]
    return Response("\n".join(lines) + "\n", media_type="text/csv; charset=utf-8")


@app.get("/ping")
def ping() -> dict:
    """Readiness, with this worker's pid (the bench waits until it has seen every worker)."""
    return {"status": "Healthy", "pid": os.getpid()}


@app.post("/predictions/gp")
async def predict(request: Request) -> Response:
    """The posterior at the request's points (JSON or CSV; see the module docstring)."""
    body = await request.body()
    if request.headers.get("content-type", "").split(";")[0].strip() == "text/csv":
        return _csv(body)
    try:
        parsed = PredictBody.model_validate_json(body)
        X = _points(parsed.inputs)
    except (ValidationError, ValueError) as e:
        return _error(str(e))
    with torch.no_grad():
        posterior = MODEL.posterior(X, observation_noise=parsed.observation_noise)
        mean, variance = posterior.mean, posterior.variance
        answer = {
            "model": MODEL_NAME,
            "version": VERSION,
            "outputs": OUTPUT_NAMES,
            "observation_noise": parsed.observation_noise,
            "mean": mean.tolist(),
            "variance": variance.tolist(),
            "covariance_layout": COVARIANCE_LAYOUT,
            "extrapolation": ((X < LOWER) | (X > UPPER)).any(dim=-1).nonzero().flatten().tolist(),
        }
        if parsed.covariance == "full":
            answer["covariance"] = posterior.distribution.covariance_matrix.tolist()
    return Response(json.dumps(answer), media_type="application/json")
