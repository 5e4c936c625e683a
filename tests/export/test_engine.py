"""The engine: one definition of the four methods and one model check for every family."""

from __future__ import annotations

import pytest
import torch
from botorch.models import KroneckerMultiTaskGP, MultiTaskGP, SingleTaskGP
from torch import Tensor

from gp_serve.export import (
    engine,
    fully_bayesian,
    kronecker,
    model_list,
    multitask,
    trace_posterior,
)
from gp_serve.export.support import UnsupportedModelError
from gp_serve.handler import gp_artifact

POSTERIORS = (
    engine.ExactPosterior,
    kronecker.KroneckerPosterior,
    model_list.ModelListPosterior,
    multitask.MultiTaskPosterior,
    fully_bayesian.MixturePosterior,
)


@pytest.mark.parametrize("posterior", POSTERIORS, ids=lambda cls: cls.__name__)
def test_every_family_implements_only_the_two_primitives(posterior: type) -> None:
    assert issubclass(posterior, engine.CompiledPosterior)
    assert not set(gp_artifact.METHODS) & set(vars(posterior)), "redefines a public method"
    assert {"_joint", "_marginal"} <= set(vars(posterior))


class _Shifted(engine.CompiledPosterior):
    def _joint(self, X: Tensor, noisy: bool) -> tuple[Tensor, Tensor]:
        return X + 1.0, X + (2.0 if noisy else 0.0)

    def _marginal(self, X: Tensor, noisy: bool) -> tuple[Tensor, Tensor]:
        return X - 1.0, X - (2.0 if noisy else 0.0)


def test_the_inherited_methods_are_scripted_and_saved(saved_and_loaded) -> None:
    """``torch.jit.script`` compiles the base's ``forward`` and its ``@torch.jit.export``
    methods over the subclass's primitives, and they survive save and load."""
    loaded = saved_and_loaded(torch.jit.script(_Shifted()))
    X = torch.arange(6, dtype=torch.float64).reshape(3, 2)
    expected = {
        "forward": (X + 1, X),
        "forward_noisy": (X + 1, X + 2),
        "mean_var": (X - 1, X),
        "mean_var_noisy": (X - 1, X - 2),
    }
    for method, (first, second) in expected.items():
        got = getattr(loaded, method)(X)
        assert torch.equal(got[0], first) and torch.equal(got[1], second), method


def test_method_names_are_the_contract_s() -> None:
    names = [
        gp_artifact.method_name(covariance, noisy)
        for covariance in ("full", "diag")
        for noisy in (False, True)
    ]
    assert sorted(names) == sorted(gp_artifact.METHODS)
    assert gp_artifact.method_name("none", True) == "mean_var_noisy"


def _float32(cls: type) -> object:
    X = torch.rand(8, 2)
    if cls is MultiTaskGP:
        return MultiTaskGP(
            torch.cat([X, torch.randint(0, 2, (8, 1)).float()], -1),
            torch.rand(8, 1),
            task_feature=-1,
        )
    return cls(X, torch.rand(8, 2))


@pytest.mark.parametrize(
    "cls", [SingleTaskGP, MultiTaskGP, KroneckerMultiTaskGP], ids=lambda cls: cls.__name__
)
def test_every_family_refuses_a_float32_model_alike(cls: type) -> None:
    with pytest.raises(ValueError, match=r"^expected a float64 model, got torch.float32$"):
        trace_posterior(_float32(cls), torch.rand(3, 2, dtype=torch.float64))


def test_a_batched_model_is_refused() -> None:
    model = SingleTaskGP(
        torch.rand(2, 8, 2, dtype=torch.float64), torch.rand(2, 8, 1, dtype=torch.float64)
    )
    with pytest.raises(
        UnsupportedModelError,
        match=r"^model: SingleTaskGP \(batched models are not supported: fit the model on "
        r"N x d inputs, got batch shape \(2,\)\)$",
    ):
        trace_posterior(model, torch.rand(3, 2, dtype=torch.float64))
