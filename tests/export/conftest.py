"""Model factories for the export tests: real BoTorch models, no fitting needed."""

from __future__ import annotations

import pytest
import torch
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize

from gp_serve.export.families import eager_moments
from gp_serve.export.gate import relative_error
from gp_serve.export.torchscript import quiet_torchscript

TOL = 1e-8


def make_model(
    n: int,
    d: int,
    m: int,
    *,
    yvar: bool = False,
    normalize: bool = True,
    standardize: bool = True,
    seed: int = 0,
    **kwargs,
) -> SingleTaskGP:
    """A float64 SingleTaskGP on a smooth random function, with randomised
    hyperparameters so that every case exercises different numbers."""
    generator = torch.Generator().manual_seed(seed)
    X = 4 * torch.rand(n, d, generator=generator, dtype=torch.float64) - 1
    W = torch.randn(d, m, generator=generator, dtype=torch.float64)
    Y = torch.sin(X @ W) + 0.1 * torch.randn(n, m, generator=generator, dtype=torch.float64)
    Y = Y * torch.linspace(1, 50, m, dtype=torch.float64) + 3
    model = SingleTaskGP(
        X,
        Y,
        train_Yvar=torch.full_like(Y, 1e-3)
        * (1 + torch.rand(n, m, generator=generator, dtype=torch.float64))
        if yvar
        else None,
        input_transform=Normalize(d) if normalize else None,
        outcome_transform=Standardize(m) if standardize else None,
        **kwargs,
    )
    return perturbed(model, generator)


def perturbed(model, generator: torch.Generator):
    """``model`` in eval mode with its raw hyperparameters (not the noise) randomised."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "raw_" in name and "noise" not in name:
                param.add_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * 0.3)
    return model.eval()


def points(model: SingleTaskGP, q: int, seed: int) -> torch.Tensor:
    """`q x d` test points, partly outside the training range."""
    d = model.train_inputs[0].size(-1)
    generator = torch.Generator().manual_seed(1000 + seed)
    return 5 * torch.rand(q, d, generator=generator, dtype=torch.float64) - 1.5


def assert_matches_eager(module, model: SingleTaskGP, X: torch.Tensor) -> None:
    """Every method of ``module`` equals eager BoTorch at ``X`` to ``TOL``."""
    for noisy, suffix in ((False, ""), (True, "_noisy")):
        eager = eager_moments(model, X, noisy)
        e_mean, e_var, e_cov = eager["mean"], eager["variance"], eager["covariance"]
        mean, cov = getattr(module, "forward" + suffix)(X)
        mv_mean, var = getattr(module, "mean_var" + suffix)(X)
        for label, actual, expected in (
            ("mean", mean, e_mean),
            ("covariance", cov, e_cov),
            ("mean_var mean", mv_mean, e_mean),
            ("mean_var variance", var, e_var),
        ):
            assert actual.shape == expected.shape, (label, suffix, actual.shape, expected.shape)
            error = relative_error(actual, expected)
            assert error <= TOL, f"{label}{suffix} q={X.size(0)}: relative error {error:.3g}"


@pytest.fixture
def saved_and_loaded(tmp_path):
    """Round-trip a ScriptModule through torch.jit.save / torch.jit.load."""

    def round_trip(module):
        path = tmp_path / "posterior.pt"
        with quiet_torchscript():
            torch.jit.save(module, str(path))
            return torch.jit.load(str(path))

    return round_trip
