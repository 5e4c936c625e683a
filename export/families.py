"""Model families and the one dispatch: which compiler handles which fitted model.

A family is one module of the export package that compiles one kind of BoTorch model into
a `export.engine.CompiledPosterior`; this module knows the families and picks one, and
nothing else branches on the model's class. See docs/export.md, "Model families".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

import torch
from botorch.models import KroneckerMultiTaskGP, ModelListGP, MultiTaskGP, SingleTaskGP
from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP
from botorch.models.model import Model
from torch import Tensor

from gp_serve.export import (
    engine,
    fully_bayesian,
    gate,
    kronecker,
    model_list,
    multitask,
    posterior,
    support,
)
from gp_serve.export.compiler import Compiled, Compiler
from gp_serve.handler import gp_artifact

M = TypeVar("M", bound=Model)
M_contra = TypeVar("M_contra", bound=Model, contravariant=True)


class Trace(Protocol[M_contra]):
    """A family's compiler: ``trace(model, example_X)`` for TorchScript, or with
    ``compiler=EXPORTABLE`` for ``torch.export`` (`export.compiler`)."""

    def __call__(
        self, model: M_contra, example_X: Tensor, compiler: Compiler = ...
    ) -> Compiled: ...


@dataclass(frozen=True)
class Family(Generic[M]):
    """One kind of model the export handles.

    Attributes:
        name: The family's name (``--model`` on the command line).
        model_type: The BoTorch class (and its subclasses) it compiles.
        trace: Compiles a fitted model, given a `q x d` example input (and a `Compiler`).
        correlated_outputs: Whether the served covariance has non-zero cross-output blocks.
        training_inputs: The raw `N_k x d` training inputs (one per model part).
        training_tensors: The tensors the model was conditioned on (for a hash).
        eager_moments: The eager posterior the gate compares with (mean, variance and
            output-major covariance at `q x d` ``X``, with or without observation noise).
        output_part: The name of output ``t``'s part of a model, for the gate's report
            (``"output 1"``; a list's member, ``"model.models.1"``).
        sample_order: The order of eager BoTorch's joint sample vector, whose Cholesky
            factor its draws use (`gp_artifact.SAMPLE_ORDERS`): ``"output-major"`` (the
            served covariance's) or ``"point-major"`` (interleaved outputs).
    """

    name: str
    model_type: type[M]
    trace: Trace[M]
    correlated_outputs: bool
    training_inputs: Callable[[M], list[Tensor]] = engine.training_inputs
    training_tensors: Callable[[M], list[Tensor]] = engine.training_tensors
    eager_moments: Callable[[M, Tensor, bool], dict[str, Tensor]] = gate.eager_moments
    output_part: Callable[[M, int], str] = gate.output_part
    sample_order: gp_artifact.SampleOrder = "output-major"


FAMILIES: tuple[Family[Any], ...] = (
    Family("single", SingleTaskGP, posterior.trace_single_task, correlated_outputs=False),
    Family(
        "list",
        ModelListGP,
        model_list.trace_model_list,
        correlated_outputs=False,
        training_inputs=model_list.training_inputs,
        training_tensors=model_list.training_tensors,
        output_part=model_list.output_part,
    ),
    Family(
        "multitask",
        MultiTaskGP,
        multitask.trace_multitask,
        correlated_outputs=True,
        training_inputs=multitask.training_inputs,
    ),
    # (the exact posterior: BoTorch's closed-form variance is off for unequal task noises)
    Family(
        "kronecker",
        KroneckerMultiTaskGP,
        kronecker.trace_kronecker,
        correlated_outputs=True,
        eager_moments=kronecker.eager_moments,
        sample_order="point-major",
    ),
    # (its training data are a single-task model's: one batch of N points, not per sample)
    Family(
        "saas",
        SaasFullyBayesianSingleTaskGP,
        fully_bayesian.trace_fully_bayesian,
        correlated_outputs=False,
    ),
)


def family_of(model: Model, allow_unlisted: bool = False) -> Family[Any]:
    """The family that compiles ``model``, once the support check has accepted every part
    of it (`export.support.check`: nothing is traced before it).

    Args:
        model: A fitted BoTorch model.
        allow_unlisted: See `export.support.check`.

    Raises:
        UnsupportedModelError: Naming the first part outside the support table.
    """
    return family_named(support.check(model, allow_unlisted))


def family_named(name: str) -> Family[Any]:
    """The family called ``name`` (`Family.name`)."""
    for family in FAMILIES:
        if family.name == name:
            return family
    raise KeyError(f"expected a family of {[family.name for family in FAMILIES]}, got {name!r}")


def trace_posterior(
    model: Model, example_X: Tensor, allow_unlisted: bool = False
) -> torch.jit.ScriptModule:
    """Compile the posterior of a fitted BoTorch model into TorchScript.

    The model is not modified. What is supported is `export.support.TABLE` (docs/export.md,
    "What is supported"): ``SingleTaskGP`` and the BoTorch models built on it (see
    `export.posterior.trace_single_task`), ``ModelListGP`` of single-output such models
    (`export.model_list.trace_model_list`), ``MultiTaskGP``
    (`export.multitask.trace_multitask`; ``X`` without the task column),
    ``KroneckerMultiTaskGP`` (`export.kronecker.trace_kronecker`: its exact posterior) and
    ``SaasFullyBayesianSingleTaskGP`` (`export.fully_bayesian.trace_fully_bayesian`:
    the moments of its mixture over MCMC samples).

    Args:
        model: A fitted float64 model.
        example_X: A `q x d` example input (raw, untransformed), any q >= 1.
        allow_unlisted: See `export.support.check`.

    Returns:
        A ScriptModule with ``forward``/``forward_noisy`` (mean `q x m`, output-major
        covariance `(q*m) x (q*m)`) and ``mean_var``/``mean_var_noisy`` (`q x m` each).

    Raises:
        UnsupportedModelError: If a part of the model is outside the support table.
    """
    # (TORCHSCRIPT, the default compiler, finishes with torch.jit.script)
    family = family_of(model, allow_unlisted)
    return cast(torch.jit.ScriptModule, family.trace(model, example_X))


def eager_moments(model: Model, X: Tensor, noisy: bool) -> dict[str, Tensor]:
    """The eager posterior ``model``'s compiled posterior must equal (the gate's reference).

    Args:
        model: A fitted model of a supported family.
        X: `q x d` raw points.
        noisy: With observation noise.

    Returns:
        ``mean`` and ``variance`` (`q x m`) and the output-major ``covariance``
        (`(q*m) x (q*m)`).
    """
    return family_of(model, allow_unlisted=True).eager_moments(model, X, noisy)
