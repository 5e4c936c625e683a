"""The model-list family: a ``ModelListGP`` of single-output ``SingleTaskGP`` models.

Each output has its own model and its own training points (outputs measured at different
points, or with missing values). Eager BoTorch's posterior stacks the models' posteriors
(``MultitaskMultivariateNormal.from_independent_mvns``): means side by side, covariance
block-diagonal and output-major. Here each model is compiled by the single-task family
(`export.posterior`) and the stacking is scripted, in the same layout. Outputs are
independent given the data: the cross-output blocks are zero.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from botorch.models import ModelListGP, SingleTaskGP
from torch import Tensor, nn

from gp_serve.export import posterior as single_task
from gp_serve.export.compiler import TORCHSCRIPT, Compiler


class ModelListPosterior(nn.Module):
    """The stacked posterior of ``m`` compiled single-output posteriors, for TorchScript."""

    def __init__(self, parts: List[nn.Module]) -> None:
        """
        Args:
            parts: One compiled posterior per output (`trace_single_task`), in order.
        """
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, X: Tensor) -> Tuple[Tensor, Tensor]:
        """Posterior mean `q x m` and block-diagonal covariance `(q*m) x (q*m)`."""
        return self._joint(X, False)

    @torch.jit.export
    def forward_noisy(self, X: Tensor) -> Tuple[Tensor, Tensor]:
        """As `forward`, with each model's observation noise."""
        return self._joint(X, True)

    @torch.jit.export
    def mean_var(self, X: Tensor) -> Tuple[Tensor, Tensor]:
        """Posterior mean and variance, both `q x m`."""
        return self._marginal(X, False)

    @torch.jit.export
    def mean_var_noisy(self, X: Tensor) -> Tuple[Tensor, Tensor]:
        """As `mean_var`, with each model's observation noise."""
        return self._marginal(X, True)

    def _joint(self, X: Tensor, noisy: bool) -> Tuple[Tensor, Tensor]:
        means: List[Tensor] = []
        covariances: List[Tensor] = []
        for part in self.parts:
            mean, covariance = part.forward_noisy(X) if noisy else part(X)
            means.append(mean)
            covariances.append(covariance)
        return torch.cat(means, dim=-1), single_task.block_diagonal(covariances)

    def _marginal(self, X: Tensor, noisy: bool) -> Tuple[Tensor, Tensor]:
        means: List[Tensor] = []
        variances: List[Tensor] = []
        for part in self.parts:
            mean, variance = part.mean_var_noisy(X) if noisy else part.mean_var(X)
            means.append(mean)
            variances.append(variance)
        return torch.cat(means, dim=-1), torch.cat(variances, dim=-1)


def _check_model(model: ModelListGP) -> None:
    dims = set()
    for k, part in enumerate(model.models):
        if not isinstance(part, SingleTaskGP):
            raise TypeError(
                f"ModelListGP model {k}: expected a SingleTaskGP, got {type(part).__name__}"
            )
        if part.num_outputs != 1:
            raise ValueError(
                f"ModelListGP model {k}: expected a single-output SingleTaskGP, got "
                f"{part.num_outputs} outputs (eager BoTorch drops the covariance between "
                "points for multi-output models in a list; give each output its own model)"
            )
        dims.add(part.train_inputs[0].size(-1))
    if len(dims) != 1:
        raise ValueError(f"ModelListGP: expected every model to take the same d inputs, "
                         f"got d in {sorted(dims)}")


def training_inputs(model: ModelListGP) -> list[Tensor]:
    """Each model's raw `N_k x d` training inputs."""
    return [x for part in model.models for x in single_task.training_inputs(part)]


def training_tensors(model: ModelListGP) -> list[Tensor]:
    return [t for part in model.models for t in single_task.training_tensors(part)]


def trace_model_list(model: ModelListGP, example_X: Tensor, compiler: Compiler = TORCHSCRIPT
                     ) -> nn.Module:
    """Compile the posterior of a fitted ``ModelListGP`` into TorchScript.

    Args:
        model: A fitted ``ModelListGP`` of single-output ``SingleTaskGP`` models (each as
            `trace_single_task` accepts), all on the same ``d`` inputs.
        example_X: A `q x d` example input (raw), any q >= 1.
        compiler: See `export.compiler`.

    Returns:
        A ScriptModule (or eager module) with the four methods of `ModelListPosterior`.
    """
    _check_model(model)
    parts = [single_task.trace_single_task(part, example_X, compiler) for part in model.models]
    return compiler.finish(ModelListPosterior(parts))
