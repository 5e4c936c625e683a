"""Portable posteriors: ``torch.export`` programs, an AOTInductor package and an ONNX graph.

``posterior.pt2`` holds one AOTInductor-compiled program per method; ``posterior.onnx`` one
float64 graph with every method's outputs (named in ``gp_artifact.ONNX_OUTPUTS``). Both are
gated like the TorchScript file: see docs/formats.md, "How the posterior exports".
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from botorch.models.model import Model
from gpytorch.models import ExactGP
from torch import Tensor, nn

from gp_serve.export.compiler import EXPORTABLE, cdist_written_out
from gp_serve.export.engine import CompiledPosterior
from gp_serve.export.families import Family, family_of
from gp_serve.handler import gp_artifact

# The number of points: dynamic, from 1 up.
POINTS = torch.export.Dim("q", min=1)
ONNX_OPSET = 18


class PortableExportError(RuntimeError):
    """The posterior cannot be written in a portable format (the reason says why)."""


class _Method(nn.Module):
    """One method of a posterior as a module's ``forward`` (one program per method)."""

    def __init__(self, posterior: CompiledPosterior, method: str) -> None:
        super().__init__()
        self.posterior = posterior
        self.method = method

    def forward(self, X: Tensor) -> tuple[Tensor, Tensor]:
        return getattr(self.posterior, self.method)(X)


class _AllOutputs(nn.Module):
    """Every method's outputs at once, in the order of ``gp_artifact.ONNX_OUTPUT_NAMES``."""

    def __init__(self, posterior: CompiledPosterior) -> None:
        super().__init__()
        self.posterior = posterior

    def forward(self, X: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        _, covariance = self.posterior.forward(X)
        _, covariance_noisy = self.posterior.forward_noisy(X)
        mean, variance = self.posterior.mean_var(X)
        _, variance_noisy = self.posterior.mean_var_noisy(X)
        return mean, covariance, covariance_noisy, variance, variance_noisy


def exportable_posterior(
    model: Model, example_X: Tensor, family: Family[Any] | None = None
) -> CompiledPosterior:
    """The eager posterior module of ``model`` that ``torch.export`` can export.

    Args:
        model: A fitted model.
        example_X: A `q x d` example input.
        family: Its family, once `export.families.family_of` has checked it (default: check
            it here).

    Raises:
        PortableExportError: With GPyTorch < 1.15, whose exact prediction takes the test
            covariance from the joint kernel while ``N + q`` is at most
            ``max_eager_kernel_size`` and separately above it: a branch on the number of
            points that one graph with a dynamic number of points cannot follow exactly.
    """
    if not hasattr(ExactGP, "_get_test_prior_mean_and_covariances"):
        import gpytorch

        raise PortableExportError(
            "pt2 and onnx need GPyTorch >= 1.15 (BoTorch >= 0.15), got GPyTorch "
            f"{gpytorch.__version__}: older versions compute the test covariance one way "
            "while N + q <= max_eager_kernel_size and another above, which one graph for "
            "any number of points cannot reproduce; export torchscript only"
        )
    family = family_of(model) if family is None else family
    posterior = family.trace(model, example_X, EXPORTABLE)
    assert isinstance(posterior, CompiledPosterior)  # (EXPORTABLE's finish keeps it eager)
    return posterior


def export_programs(
    posterior: CompiledPosterior, example_X: Tensor
) -> dict[str, torch.export.ExportedProgram]:
    """One ``torch.export`` program per method, for `q x d` inputs with any ``q >= 1``.

    Args:
        posterior: An `exportable_posterior`.
        example_X: A `q x d` float64 example input, ``q >= 2`` (``torch.export``
            specialises sizes 0 and 1).
    """
    return {
        method: _export(_Method(posterior, method), example_X) for method in gp_artifact.METHODS
    }


def _export(module: nn.Module, example_X: Tensor) -> torch.export.ExportedProgram:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", UserWarning)  # (GPyTorch's and export's chatter)
        warnings.filterwarnings("ignore", ".*LeafSpec.*", FutureWarning)  # (torch's pytree)
        try:
            return torch.export.export(
                module, (example_X,), dynamic_shapes={"X": {0: POINTS}}, strict=False
            )
        except Exception as e:  # (torch.export raises many types; all mean the same here)
            raise PortableExportError(
                f"torch.export cannot export this posterior ({type(e).__name__}: "
                f"{' '.join(str(e).split())[:500]})"
            ) from e


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Only errors from these loggers (the ONNX exporter and optimiser log every pass)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def write_pt2(programs: dict[str, torch.export.ExportedProgram], path: str | os.PathLike) -> None:
    """Compile each program with AOTInductor and package them as one ``.pt2``.

    Args:
        programs: `export_programs`' output (the models are named after its keys).
        path: The file to write, ending in ``.pt2``.
    """
    from torch._inductor.package import package_aoti

    files: dict[str, Any] = {}  # (each method's packaged files)
    for method, program in programs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            # (torch's own pytree deprecation, raised inside AOTInductor)
            warnings.filterwarnings("ignore", ".*LeafSpec.*", FutureWarning)
            files[method] = torch._inductor.aot_compile(
                program.module(), program.example_inputs[0], options={"aot_inductor.package": True}
            )
    package_aoti(os.fspath(path), files)


def write_onnx(posterior: CompiledPosterior, example_X: Tensor, path: str | os.PathLike) -> None:
    """Write every method's outputs as one float64 ONNX graph with input ``X``.

    Args:
        posterior: An `exportable_posterior`.
        example_X: A `q x d` float64 example input, ``q >= 2``.
        path: The file to write.
    """
    with cdist_written_out():  # (ONNX has no cdist)
        program = _export(_AllOutputs(posterior), example_X).run_decompositions()
    with warnings.catch_warnings(), _quiet("torch.onnx", "onnxscript", "onnx_ir"):
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(
            program, (example_X,), dynamo=True, opset_version=ONNX_OPSET, verbose=False
        )
        assert onnx_program is not None  # (None only without dynamo=True)
        graph = onnx_program.model.graph
        outputs = list(graph.outputs)
        names = {*gp_artifact.ONNX_OUTPUT_NAMES, gp_artifact.ONNX_INPUT}
        for node in graph:  # free the contract's names taken by intermediate values
            for value in node.outputs:
                if value.name in names and value not in outputs:
                    value.name = f"{value.name}_intermediate"
        for value, name in zip(outputs, gp_artifact.ONNX_OUTPUT_NAMES, strict=True):
            value.name = name
        graph.inputs[0].name = gp_artifact.ONNX_INPUT
        onnx_program.save(os.fspath(path))
