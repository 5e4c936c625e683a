"""The fully Bayesian family: ``SaasFullyBayesianSingleTaskGP``, equal to eager's mixture moments.

On BoTorch 0.13+ the model can only be built with BoTorch's optional fully Bayesian extra
(JAX, NumPyro), which the pinned stack does not install: there these tests check the clear
error instead, and the exactness runs on BoTorch 0.12.0 (``.venv-botorch012``, where the
class builds without it), which ``make test`` runs too.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize

from gp_serve.export import export_model, trace_posterior
from gp_serve.export.__main__ import main
from gp_serve.export.artifact import mixture_samples
from gp_serve.export.families import FAMILIES, family_of
from gp_serve.export.fit import SAAS_NUTS
from gp_serve.handler import gp_artifact
from tests.export.conftest import assert_matches_eager, make_model


def buildable() -> bool:
    try:
        SaasFullyBayesianSingleTaskGP(torch.rand(3, 1).double(), torch.rand(3, 1).double())
    except ImportError:
        return False
    return True


BUILDABLE = buildable()
needs_model = pytest.mark.skipif(
    not BUILDABLE, reason="this BoTorch needs its fully Bayesian extra (JAX, NumPyro) to build "
    "the model; covered on BoTorch 0.12.0")


def make_saas(n: int, d: int, samples: int, seed: int = 0, **kwargs) -> SaasFullyBayesianSingleTaskGP:
    """A SAAS GP with ``samples`` MCMC samples loaded (no NUTS: seeded draws)."""
    generator = torch.Generator().manual_seed(seed)
    X = 4 * torch.rand(n, d, generator=generator, dtype=torch.float64)
    Y = torch.sin(X.sum(-1, keepdim=True)) * 3 + 1
    model = SaasFullyBayesianSingleTaskGP(X, Y, **kwargs)

    def draw(*shape: int, low: float, width: float) -> torch.Tensor:
        return low + width * torch.rand(*shape, generator=generator, dtype=torch.float64)

    model.load_mcmc_samples({
        "lengthscale": draw(samples, 1, d, low=0.5, width=1.0),
        "outputscale": draw(samples, low=0.5, width=1.0),
        "mean": draw(samples, low=-0.1, width=0.2),
        "noise": draw(samples, low=1e-3, width=1e-2),
    })
    model.eval()
    return model


@needs_model
@pytest.mark.parametrize("transforms", [False, True], ids=["raw", "normalize-standardize"])
def test_mixture_matches_eager(transforms: bool, saved_and_loaded) -> None:
    kwargs = {"input_transform": Normalize(d=3), "outcome_transform": Standardize(m=1)} \
        if transforms else {}
    model = make_saas(15, 3, samples=6, **kwargs)
    module = saved_and_loaded(trace_posterior(model, torch.rand(3, 3, dtype=torch.float64)))
    generator = torch.Generator().manual_seed(9)
    for q in (1, 2, 7, 130, 1500):
        X = 5 * torch.rand(q, 3, generator=generator, dtype=torch.float64) - 0.5
        assert_matches_eager(module, model, X)


@needs_model
def test_export_records_the_class(tmp_path) -> None:
    meta = export_model(make_saas(12, 2, samples=4), tmp_path / "m")
    assert gp_artifact.load_metadata(tmp_path / "m").document == meta
    assert (meta["model_class"], meta["correlated_outputs"]) == (
        "SaasFullyBayesianSingleTaskGP", False)
    assert meta["gate"]["max_relative_error"] <= 1e-8
    assert meta["mixture_samples"] == 4
    assert gp_artifact.load_metadata(tmp_path / "m").mixture_samples == 4


def test_mixture_samples_is_the_number_of_mcmc_samples() -> None:
    """(Runs on every stack: a stand-in with a fitted model's batch of 6 samples.)"""
    saas = next(family for family in FAMILIES if family.name == "saas")
    assert mixture_samples(saas, SimpleNamespace(batch_shape=torch.Size([6]))) == 6
    single = make_model(5, 2, 1)
    assert mixture_samples(family_of(single), single) == 1


@needs_model
def test_unfitted_model_is_refused() -> None:
    model = SaasFullyBayesianSingleTaskGP(torch.rand(8, 2).double(), torch.rand(8, 1).double())
    with pytest.raises(ValueError, match=r"^expected a fitted fully Bayesian model \(a batch of "
                       r"MCMC samples\), got batch shape \(\): fit it or load its samples first$"):
        trace_posterior(model, torch.rand(3, 2, dtype=torch.float64))


SAAS_CSV = "a,b,y\n" + "".join(
    f"{i / 13},{(i * 5 % 13) / 13},{(i / 13) ** 2 - (i * 5 % 13) / 26}\n" for i in range(14)
)


def test_cli_saas(tmp_path, capsys) -> None:
    data = tmp_path / "train.csv"
    data.write_text(SAAS_CSV)
    code = main(["--data", str(data), "--outputs", "y", "--model", "saas",
                 "--out", str(tmp_path / "m")])
    if BUILDABLE:  # NUTS, then the gate against the mixture
        assert code == 0, capsys.readouterr().err
        meta = gp_artifact.load_metadata(tmp_path / "m").document
        assert meta["model_class"] == "SaasFullyBayesianSingleTaskGP"
        assert meta["mixture_samples"] == SAAS_NUTS["num_samples"] // SAAS_NUTS["thinning"]
    else:
        assert code == 2
        assert ('error: --model saas needs BoTorch\'s fully Bayesian extra, which is not '
                'installed: pip install "botorch[fully_bayesian]"') in capsys.readouterr().err
        assert not (tmp_path / "m").exists()
