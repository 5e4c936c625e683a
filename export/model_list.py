"""The model-list family: a ``ModelListGP`` of single-output ``SingleTaskGP`` models.

Each model (its own training points) is compiled by the single-task family and their
posteriors stacked as eager's ``from_independent_mvns`` stacks them: block-diagonal and
output-major. See docs/export.md, "Model families".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
from botorch.models import ModelListGP, SingleTaskGP
from botorch.models.model import Model
from torch import Tensor, nn

from gp_serve.export import engine, gate
from gp_serve.export.compiler import TORCHSCRIPT, Compiled, Compiler
from gp_serve.export.posterior import trace_single_task


class ModelListPosterior(engine.CompiledPosterior):
    """The stacked posterior of ``m`` compiled single-output posteriors, for TorchScript.

    Outputs are independent given the data: the cross-output blocks are zero.
    """

    def __init__(self, parts: list[Compiled]) -> None:
        """
        Args:
            parts: One compiled posterior per output (`trace_single_task`), in order.
        """
        super().__init__()
        # (an nn.ModuleList, whose loops TorchScript unrolls; typed by what it holds, as
        # nn.ModuleList is not generic: its items are typed as plain modules)
        self.parts = cast("Iterable[Compiled]", nn.ModuleList(parts))

    def _joint(self, X: Tensor, noisy: bool) -> tuple[Tensor, Tensor]:
        means: list[Tensor] = []
        covariances: list[Tensor] = []
        for part in self.parts:
            mean, covariance = part.forward_noisy(X) if noisy else part(X)
            means.append(mean)
            covariances.append(covariance)
        return torch.cat(means, dim=-1), engine.block_diagonal(covariances)

    def _marginal(self, X: Tensor, noisy: bool) -> tuple[Tensor, Tensor]:
        means: list[Tensor] = []
        variances: list[Tensor] = []
        for part in self.parts:
            mean, variance = part.mean_var_noisy(X) if noisy else part.mean_var(X)
            means.append(mean)
            variances.append(variance)
        return torch.cat(means, dim=-1), torch.cat(variances, dim=-1)


def _check_parts(model: ModelListGP) -> list[SingleTaskGP]:
    """The model's parts, after refusing any other than single-output ``SingleTaskGP``
    models on the same ``d`` inputs (each part is then checked as the single-task family
    checks it)."""
    parts: list[SingleTaskGP] = []
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
        parts.append(part)
    if len(dims) != 1:
        raise ValueError(
            f"ModelListGP: expected every model to take the same d inputs, got d in {sorted(dims)}"
        )
    return parts


def training_inputs(model: ModelListGP) -> list[Tensor]:
    """Each model's raw `N_k x d` training inputs."""
    return [x for part in model.models for x in engine.training_inputs(part)]


def training_tensors(model: ModelListGP) -> list[Tensor]:
    """Each model's training tensors, in order (for a hash of the training data)."""
    return [t for part in model.models for t in engine.training_tensors(part)]


def output_part(model: ModelListGP, output: int) -> str:
    """``"model.models.<k>"``: the member that answers output ``t`` (with the member's own
    output, ``", its output <j>"``, where the member has several)."""
    first = 0
    for k, member in enumerate(model.models):
        outputs = int(cast(Model, member).num_outputs)
        if output < first + outputs:
            j = output - first
            return f"model.models.{k}" + (f", its output {j}" if outputs > 1 else "")
        first += outputs
    return gate.output_part(model, output)


def trace_model_list(
    model: ModelListGP, example_X: Tensor, compiler: Compiler = TORCHSCRIPT
) -> Compiled:
    """Compile the posterior of a fitted ``ModelListGP`` into TorchScript.

    Args:
        model: A fitted ``ModelListGP`` of single-output ``SingleTaskGP`` models (each as
            `trace_single_task` accepts), all on the same ``d`` inputs.
        example_X: A `q x d` example input (raw), any q >= 1.
        compiler: See `export.compiler`.

    Returns:
        A ScriptModule (or eager module) with the four methods of `ModelListPosterior`.
    """
    parts = [trace_single_task(part, example_X, compiler) for part in _check_parts(model)]
    return compiler.finish(ModelListPosterior(parts))
