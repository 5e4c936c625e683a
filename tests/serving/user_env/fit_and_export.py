"""Run by the *user's* interpreter (a venv with BoTorch 0.16.1 and the installed gp-serve,
no TorchServe): fit a model the way a practitioner does, export it with
``gp_serve.export_model`` and write the eager posterior BoTorch computes in that environment.

    python fit_and_export.py OUT_DIR

Writes ``OUT_DIR/model/`` (the artifact) and ``OUT_DIR/eager.json``: for each test set, the
points and the eager mean and variance (`q x m`) and the output-major `(q*m) x (q*m)`
covariance, without and with observation noise, plus the versions it ran with. Imports no
test code: only BoTorch, GPyTorch, torch and gp_serve.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import botorch
import gpytorch
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from gpytorch.distributions import MultitaskMultivariateNormal
from gpytorch.kernels import MaternKernel, ScaleKernel
from gpytorch.mlls import ExactMarginalLogLikelihood

import gp_serve
from gp_serve import export_model

LOWER = torch.tensor([0.0, -1.0, 100.0], dtype=torch.float64)
UPPER = torch.tensor([10.0, 1.0, 200.0], dtype=torch.float64)
INPUTS, OUTPUTS = ["speed", "angle", "temperature"], ["yield", "cost"]
SIZES = (1, 6, 40)


def objective(X: torch.Tensor) -> torch.Tensor:
    """Two smooth outputs of three inputs on very different scales (`n x 3` -> `n x 2`)."""
    u = (X - LOWER) / (UPPER - LOWER)
    return torch.stack(
        [
            torch.sin(3 * u[:, 0]) + u[:, 1] ** 2 - 0.5 * u[:, 2],
            50.0 + 20.0 * torch.cos(2 * u[:, 0] * u[:, 2]) + 5 * u[:, 1],
        ],
        -1,
    )


def output_major(mvn) -> torch.Tensor:
    """The joint covariance with row ``t*q + i`` for point ``i``, output ``t``."""
    covariance = mvn.covariance_matrix
    if not isinstance(mvn, MultitaskMultivariateNormal):
        return covariance
    q, m = mvn.mean.shape[-2:]
    index = torch.arange(q * m).reshape(q, m)  # interleaved: row i*m + t
    order = index.t().reshape(-1) if mvn._interleaved else torch.arange(q * m)
    return covariance[order][:, order]


def main(out: Path) -> None:
    torch.manual_seed(11)
    X = LOWER + (UPPER - LOWER) * torch.rand(30, 3, dtype=torch.float64)
    Y = objective(X) + 0.01 * torch.randn(30, 2, dtype=torch.float64)
    model = SingleTaskGP(
        X,
        Y,
        covar_module=ScaleKernel(MaternKernel(nu=1.5, ard_num_dims=3)),
        input_transform=Normalize(d=3),
        outcome_transform=Standardize(m=2),
    )
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    model.eval()
    export_model(
        model,
        out / "model",
        input_names=INPUTS,
        output_names=OUTPUTS,
        input_bounds=torch.stack([LOWER, UPPER], -1),
    )
    cases = []
    generator = torch.Generator().manual_seed(5)
    for q in SIZES:
        points = LOWER + (UPPER - LOWER) * torch.rand(
            q, 3, dtype=torch.float64, generator=generator
        )
        case = {"points": points.tolist()}
        with torch.no_grad():
            for noise in (False, True):
                posterior = model.posterior(points, observation_noise=noise)
                case["noisy" if noise else "noiseless"] = {
                    "mean": posterior.mean.tolist(),
                    "variance": posterior.variance.tolist(),
                    "covariance": output_major(posterior.distribution).tolist(),
                }
        cases.append(case)
    versions = {
        "botorch": botorch.__version__,
        "gpytorch": gpytorch.__version__,
        "torch": torch.__version__,
        "gp_serve": gp_serve.__version__,
        "gp_serve_file": gp_serve.__file__,
    }
    (out / "eager.json").write_text(json.dumps({"versions": versions, "cases": cases}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
