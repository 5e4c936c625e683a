"""The fully Bayesian family: ``SaasFullyBayesianSingleTaskGP``, equal to eager's mixture moments.

On BoTorch 0.13+ the model can only be built with BoTorch's optional fully Bayesian extra
(JAX, jaxlib, NumPyro), which .venv's lock includes: with it these
tests run in full (NUTS in JAX/NumPyro); without it (a user's venv) they skip, and the clear
error is checked either way (in a subprocess that cannot import the extra). BoTorch 0.12.0
(``.venv-botorch012``, NUTS in Pyro, no extra needed) runs them too.
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
    not BUILDABLE,
    reason="this BoTorch needs its fully Bayesian extra (JAX, NumPyro) to build "
    "the model (pip install 'gp-serve[saas]'); covered on BoTorch 0.12.0",
)


def botorch_version() -> tuple[int, ...]:
    import botorch

    return tuple(int(part) for part in botorch.__version__.split(".")[:2])


def jax_x64() -> bool:
    import jax

    return bool(jax.config.jax_enable_x64)


# BoTorch 0.13+ builds the model only with the extra and runs NUTS in JAX/NumPyro; 0.12 needs
# no extra (NUTS in Pyro, torch float64).
NEEDS_EXTRA = botorch_version() >= (0, 13)
# Where the fit's NUTS runs in JAX's default float32 (x64 off: BoTorch leaves it off).
JAX_FLOAT32 = NEEDS_EXTRA and BUILDABLE and not jax_x64()


def make_saas(
    n: int, d: int, samples: int, seed: int = 0, **kwargs
) -> SaasFullyBayesianSingleTaskGP:
    """A SAAS GP with ``samples`` MCMC samples loaded (no NUTS: seeded draws)."""
    generator = torch.Generator().manual_seed(seed)
    X = 4 * torch.rand(n, d, generator=generator, dtype=torch.float64)
    Y = torch.sin(X.sum(-1, keepdim=True)) * 3 + 1
    model = SaasFullyBayesianSingleTaskGP(X, Y, **kwargs)

    def draw(*shape: int, low: float, width: float) -> torch.Tensor:
        return low + width * torch.rand(*shape, generator=generator, dtype=torch.float64)

    model.load_mcmc_samples(
        {
            "lengthscale": draw(samples, 1, d, low=0.5, width=1.0),
            "outputscale": draw(samples, low=0.5, width=1.0),
            "mean": draw(samples, low=-0.1, width=0.2),
            "noise": draw(samples, low=1e-3, width=1e-2),
        }
    )
    model.eval()
    return model


@needs_model
@pytest.mark.parametrize("transforms", [False, True], ids=["raw", "normalize-standardize"])
def test_mixture_matches_eager(transforms: bool, saved_and_loaded) -> None:
    kwargs = (
        {"input_transform": Normalize(d=3), "outcome_transform": Standardize(m=1)}
        if transforms
        else {}
    )
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
        "SaasFullyBayesianSingleTaskGP",
        False,
    )
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
    with pytest.raises(
        ValueError,
        match=r"^expected a fitted fully Bayesian model \(a batch of "
        r"MCMC samples\), got batch shape \(\): fit it or load its samples first$",
    ):
        trace_posterior(model, torch.rand(3, 2, dtype=torch.float64))


SAAS_CSV = "a,b,y\n" + "".join(
    f"{i / 13},{(i * 5 % 13) / 13},{(i / 13) ** 2 - (i * 5 % 13) / 26}\n" for i in range(14)
)


@pytest.mark.slow
@needs_model
def test_cli_saas(tmp_path, capsys) -> None:
    """NUTS (`SAAS_NUTS`), then the gate against the mixture."""
    data = tmp_path / "train.csv"
    data.write_text(SAAS_CSV)
    code = main(
        ["--data", str(data), "--outputs", "y", "--model", "saas", "--out", str(tmp_path / "m")]
    )
    assert code == 0, capsys.readouterr().err
    meta = gp_artifact.load_metadata(tmp_path / "m").document
    assert meta["model_class"] == "SaasFullyBayesianSingleTaskGP"
    assert meta["mixture_samples"] == SAAS_NUTS["num_samples"] // SAAS_NUTS["thinning"]
    assert meta["gate"]["max_relative_error"] <= 1e-8


# Run first in the subprocess of the test below: every import of the extra fails as it does
# where it is not installed (None in sys.modules: ImportError), so BoTorch's own guarded import
# of it fails. Where the extra is missing anyway this changes nothing.
WITHOUT_EXTRA = "import sys; sys.modules.update(dict.fromkeys(['jax', 'jaxlib', 'numpyro']))"


@pytest.mark.skipif(
    not NEEDS_EXTRA,
    reason="BoTorch 0.12 builds SAAS models without the "
    "extra (NUTS in Pyro): there is no missing-extra error to check",
)
@pytest.mark.slow
def test_cli_saas_without_the_extra(tmp_path) -> None:
    """Without the extra: exit 2, the clear error, nothing written (installed or not: a
    subprocess that cannot import it; if the blocking failed, NUTS would run, exit 0)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    data = tmp_path / "train.csv"
    data.write_text(SAAS_CSV)
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            WITHOUT_EXTRA + "\nfrom gp_serve.export.__main__ import main\n"
            "sys.exit(main(sys.argv[1:]))",
            "--data",
            str(data),
            "--outputs",
            "y",
            "--model",
            "saas",
            "--out",
            str(tmp_path / "m"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    assert (
        "error: --model saas needs BoTorch's fully Bayesian extra, which is not "
        'installed: pip install "botorch[fully-bayesian]"'
    ) in run.stderr
    assert not (tmp_path / "m").exists()


def saas_hyperparameters(model: SaasFullyBayesianSingleTaskGP) -> dict[str, torch.Tensor]:
    """The loaded MCMC samples, constrained (one entry per sample)."""
    return {
        "lengthscale": model.covar_module.base_kernel.lengthscale,
        "outputscale": model.covar_module.outputscale,
        "mean": model.mean_module.constant,
        "noise": model.likelihood.noise,
    }


@pytest.mark.slow
@needs_model
def test_nuts_fit_matches_eager(tmp_path, saved_and_loaded) -> None:
    """A real (short) NUTS fit: on BoTorch 0.13+ NumPyro samples in float32 (JAX's default,
    which BoTorch keeps), the model loads the samples as float64, and the export, which reads
    those float64 hyperparameters, equals eager BoTorch on that model (docs/export.md)."""
    from botorch.fit import fit_fully_bayesian_model_nuts

    generator = torch.Generator().manual_seed(0)
    X = torch.rand(10, 3, generator=generator, dtype=torch.float64)
    model = SaasFullyBayesianSingleTaskGP(
        X,
        torch.sin(6 * X.sum(-1, keepdim=True)),
        input_transform=Normalize(d=3),
        outcome_transform=Standardize(m=1),
    )
    fit_fully_bayesian_model_nuts(
        model, warmup_steps=32, num_samples=16, thinning=4, disable_progbar=True
    )
    assert model.batch_shape == torch.Size([4])
    for name, value in saas_hyperparameters(model).items():
        assert value.dtype == torch.float64, name
        distance = ((value - value.float().double()).abs() / value.abs()).max().item()
        if JAX_FLOAT32:  # float32 numbers stored as float64 (round-off of the softplus only)
            assert distance <= 1e-10, (name, distance)
        elif not NEEDS_EXTRA:  # Pyro: torch float64 all along
            assert distance > 1e-10, (name, distance)
    module = saved_and_loaded(trace_posterior(model, torch.rand(3, 3, dtype=torch.float64)))
    for q in (1, 7, 200):
        assert_matches_eager(
            module, model, 5 * torch.rand(q, 3, generator=generator, dtype=torch.float64) - 1
        )
    meta = export_model(model, tmp_path / "m")
    assert meta["gate"]["max_relative_error"] <= 1e-8 and meta["mixture_samples"] == 4
