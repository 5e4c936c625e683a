"""The reproduction of the original report: a plain trace of BoTorch's posterior is
broken (BoTorch 0.12.0) or not deployable (later versions); trace_posterior works."""

from __future__ import annotations

import warnings

import botorch
import pytest
import torch
from packaging.version import Version

from gp_serve.export import trace_posterior
from tests.export.conftest import assert_matches_eager, make_model, points

HAS_UPSTREAM_FIX = Version(botorch.__version__) >= Version("0.13.0")


class NoisyMeanVariance(torch.nn.Module):
    """What a new user traces: ``posterior(X, observation_noise=True)``."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, X):
        posterior = self.model.posterior(X, observation_noise=True)
        return posterior.mean, posterior.variance


def plain_trace(model, X):
    """Trace as the report did: frozen parameters and caches computed first (without
    them the trace fails earlier, with ``unordered_map::at``)."""
    model.requires_grad_(False)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        model.posterior(X)
        return torch.jit.trace(NoisyMeanVariance(model), X, check_trace=False)


@pytest.mark.skipif(HAS_UPSTREAM_FIX, reason="the shape error is BoTorch < 0.13 only")
def test_plain_trace_fails_with_the_reported_shape_error():
    model = make_model(20, 2, 2)
    with pytest.raises(
        RuntimeError,
        match=r"mean shape torch.Size\(\[10, 2\]\) is incompatible "
        r"with covariance shape torch.Size\(\[160, 160\]\)",
    ):
        plain_trace(model, points(model, 10, 0))


@pytest.mark.skipif(not HAS_UPSTREAM_FIX, reason="BoTorch < 0.13 cannot trace at all")
def test_plain_trace_only_accepts_its_traced_size():
    model = make_model(20, 2, 2)
    traced = plain_trace(model, points(model, 20, 0))
    with pytest.raises(RuntimeError, match="must match the existing size"):
        traced(points(model, 2, 1))


def test_trace_posterior_succeeds_where_the_plain_trace_does_not(saved_and_loaded):
    model = make_model(20, 2, 2)
    module = saved_and_loaded(trace_posterior(model, points(model, 10, 0)))
    for q in (1, 2, 10, 33):
        assert_matches_eager(module, model, points(model, q, q))
