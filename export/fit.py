"""Fitting a ``SingleTaskGP`` to validated training data."""

from __future__ import annotations

from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import Normalize
from gpytorch.mlls import ExactMarginalLogLikelihood

from export.data import TrainingData


def fit_model(data: TrainingData) -> SingleTaskGP:
    """Fit a ``SingleTaskGP`` (``Normalize`` inputs, ``Standardize`` outputs).

    Args:
        data: `N x d` inputs and `N x m` outputs (and noise variances, if known).

    Returns:
        The fitted model, in eval mode.
    """
    model = SingleTaskGP(
        data.X,
        data.Y,
        train_Yvar=data.Yvar,
        input_transform=Normalize(d=data.X.size(-1)),
    )
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model.eval()
