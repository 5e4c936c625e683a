"""Gradients of the served mean and variance (``handler.gradients``) equal eager BoTorch's
autograd through ``model.posterior``, for every Gaussian family, with and without
observation noise, in chunks. No server."""

from __future__ import annotations

import pytest
import torch

from gp_serve.handler.gradients import moment_gradients
from tests.serving.test_sampling import BUILDERS, built, spread

TOLERANCE = 1e-8
# (Kronecker with unequal task noises: BoTorch's closed-form variance is not its posterior's
# (docs/export.md), so its variance gradient is not compared there.)
CASES = [name for name in BUILDERS if name != "kronecker, unequal noises"]


def eager_gradients(model, X: torch.Tensor, noisy: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`q x m x d` gradients of BoTorch's posterior mean and variance, output by output."""
    points = X.clone().requires_grad_(True)
    posterior = model.posterior(points, observation_noise=noisy)
    mean, variance = posterior.mean, posterior.variance
    grads = []
    for moment in (mean, variance):
        rows = [
            torch.autograd.grad(moment[:, t].sum(), points, retain_graph=True)[0]
            for t in range(moment.size(-1))
        ]
        grads.append(torch.stack(rows, dim=1))
    return grads[0], grads[1]


def relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize("noisy", [False, True], ids=["noiseless", "noisy"])
@pytest.mark.parametrize("q", [1, 7, 40])
@pytest.mark.parametrize("name", CASES)
def test_gradients_equal_eager_autograd(name: str, q: int, noisy: bool) -> None:
    model, module = built(name)
    X = spread(q, seed=q)
    method = module.mean_var_noisy if noisy else module.mean_var
    mean_gradient, variance_gradient = moment_gradients(method, X, chunk_rows=16)
    expected_mean, expected_variance = eager_gradients(model, X, noisy)
    m, d = expected_mean.shape[1:]
    assert mean_gradient.shape == variance_gradient.shape == (q, m, d)
    assert relative(mean_gradient, expected_mean) <= TOLERANCE
    assert relative(variance_gradient, expected_variance) <= TOLERANCE


def test_chunks_do_not_change_the_gradients() -> None:
    _, module = built("single, two outputs")
    X = spread(30, seed=3)
    whole = moment_gradients(module.mean_var, X, chunk_rows=4096)
    chunked = moment_gradients(module.mean_var, X, chunk_rows=7)
    for a, b in zip(whole, chunked, strict=True):
        assert relative(b, a) <= 1e-12
