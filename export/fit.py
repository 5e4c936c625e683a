"""Fitting a model of a chosen family to validated training data (the command line's models)."""

from __future__ import annotations

from typing import TypedDict

import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import (
    KroneckerMultiTaskGP,
    MixedSingleTaskGP,
    ModelListGP,
    MultiTaskGP,
    SingleTaskGP,
)
from botorch.models.model import Model
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from gpytorch.mlls import ExactMarginalLogLikelihood

from gp_serve.export.data import TrainingData

# --model: the family fitted (see export/families.py for what each one compiles).
MODELS = {
    "single": "a SingleTaskGP",
    "list": "a ModelListGP (a SingleTaskGP per output)",
    "multitask": "a MultiTaskGP (one task per output)",
    "kronecker": "a KroneckerMultiTaskGP (every output at every row)",
    "saas": "a SaasFullyBayesianSingleTaskGP (NUTS)",
}


class NutsSettings(TypedDict):
    """Keyword arguments of BoTorch's ``fit_fully_bayesian_model_nuts``."""

    warmup_steps: int
    num_samples: int
    thinning: int


# NUTS settings for --model saas: a short chain, enough for a served surrogate of a
# small data set; fit in Python with fit_fully_bayesian_model_nuts for more control.
SAAS_NUTS: NutsSettings = {"warmup_steps": 64, "num_samples": 64, "thinning": 8}
# Families that fit each output on the rows where it is observed (empty cells allowed).
MISSING_ALLOWED = ("list", "multitask")


def _single_task(data: TrainingData, rows=slice(None), outputs=slice(None)) -> SingleTaskGP:
    """A ``SingleTaskGP`` (``Normalize`` inputs, ``Standardize`` outputs), fitted."""
    model = SingleTaskGP(
        data.X[rows],
        data.Y[rows][:, outputs],
        train_Yvar=None if data.Yvar is None else data.Yvar[rows][:, outputs],
        input_transform=Normalize(d=data.X.size(-1)),
    )
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model.eval()


def _mixed(data: TrainingData, categorical: list[int]) -> MixedSingleTaskGP:
    """A ``MixedSingleTaskGP``: ``categorical`` input columns hold category codes."""
    continuous = [j for j in range(data.X.size(-1)) if j not in categorical]
    model = MixedSingleTaskGP(
        data.X,
        data.Y,
        cat_dims=categorical,
        train_Yvar=data.Yvar,
        input_transform=Normalize(d=data.X.size(-1), indices=continuous) if continuous else None,
    )
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model.eval()


def fit_model(
    data: TrainingData, model: str = "single", categorical: list[int] | None = None
) -> Model:
    """Fit a model of the family ``model`` (a key of `MODELS`).

    - ``single``: one ``SingleTaskGP`` on all outputs (every output at every row).
    - ``list``: a ``ModelListGP`` of one single-output ``SingleTaskGP`` per output,
      each fitted on the rows where its output is observed (not NaN).
    - ``multitask``: a ``MultiTaskGP`` with task ``t`` for output ``t``, on the
      observed (row, output) pairs; its outputs are correlated through the task
      covariance.
    - ``kronecker``: a ``KroneckerMultiTaskGP`` on all outputs at every row, with a
      learned task covariance and per-task noise.
    - ``saas``: a ``SaasFullyBayesianSingleTaskGP`` (one output), its hyperparameters
      sampled with NUTS (`SAAS_NUTS`).

    Args:
        data: `N x d` inputs and `N x m` outputs (and noise variances, if known).
        model: The family.
        categorical: For ``single``, input columns holding category codes: the model
            is then a ``MixedSingleTaskGP`` (a ``SingleTaskGP`` subclass).

    Returns:
        The fitted model, in eval mode.

    Raises:
        ValueError: If ``model`` is not one of `MODELS`, or categorical inputs are asked
            for another family, or ``saas`` for several outputs.
        ImportError: For ``saas``, when BoTorch's fully Bayesian extra is missing.
    """
    if categorical and model != "single":
        raise ValueError(f"categorical inputs need the single model, got {model!r}")
    if model == "single":
        return _mixed(data, categorical) if categorical else _single_task(data)
    if model == "list":
        parts = [
            _single_task(data, ~data.Y[:, t].isnan(), slice(t, t + 1))
            for t in range(data.Y.size(-1))
        ]
        return ModelListGP(*parts).eval()
    if model == "multitask":
        return _multitask(data)
    if model == "kronecker":
        return _kronecker(data)
    if model == "saas":
        return _saas(data)
    raise ValueError(f"expected a model in {list(MODELS)}, got {model!r}")


def _multitask(data: TrainingData) -> MultiTaskGP:
    """A ``MultiTaskGP`` on the observed (row, output) pairs; the task is the last column."""
    seen = ~data.Y.isnan()  # N x m
    rows, tasks = seen.nonzero(as_tuple=True)
    d = data.X.size(-1)
    train_X = torch.cat([data.X[rows], tasks.unsqueeze(-1).to(data.X)], dim=-1)
    model = MultiTaskGP(
        train_X,
        data.Y[rows, tasks].unsqueeze(-1),
        task_feature=-1,
        train_Yvar=None if data.Yvar is None else data.Yvar[rows, tasks].unsqueeze(-1),
        output_tasks=list(range(data.Y.size(-1))),
        input_transform=Normalize(d=d + 1, indices=list(range(d))),
    )
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model.eval()


def _kronecker(data: TrainingData) -> KroneckerMultiTaskGP:
    """A ``KroneckerMultiTaskGP`` (``Normalize`` inputs, ``Standardize`` outputs), fitted."""
    if data.Yvar is not None:
        raise ValueError(
            "--model kronecker: known noise (--noise) is not supported by "
            "KroneckerMultiTaskGP; it learns one noise variance per output"
        )
    model = KroneckerMultiTaskGP(
        data.X,
        data.Y,
        input_transform=Normalize(d=data.X.size(-1)),
        outcome_transform=Standardize(m=data.Y.size(-1)),
    )
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model.eval()


def _saas(data: TrainingData) -> Model:
    """A ``SaasFullyBayesianSingleTaskGP`` fitted with NUTS (one output)."""
    from botorch.fit import fit_fully_bayesian_model_nuts
    from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP

    if data.Y.size(-1) != 1:
        raise ValueError(f"--model saas: expected one output, got {data.Y.size(-1)}")
    try:
        model = SaasFullyBayesianSingleTaskGP(
            data.X, data.Y, train_Yvar=data.Yvar, input_transform=Normalize(d=data.X.size(-1))
        )
    except ImportError as e:
        raise ImportError(
            "--model saas needs BoTorch's fully Bayesian extra, which is not installed: "
            'pip install "botorch[fully-bayesian]" (JAX, jaxlib, NumPyro); the exported '
            f"artifact needs none of it ({e})"
        ) from e
    fit_fully_bayesian_model_nuts(model, disable_progbar=True, **SAAS_NUTS)
    model.eval()
    return model
