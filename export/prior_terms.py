"""The test-point terms of a fitted GP's prior, traced from the model's own modules.

Tracing exactly the input transform, mean module and kernel that eager BoTorch evaluates on
the test points (and nothing of GPyTorch's prediction strategy) records the same tensor
operations, so the traced terms equal eager ones bit for bit for any number of points. See
docs/export.md, "Design: the corrected posterior".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from gpytorch.models import ExactGP
from gpytorch.settings import lazily_evaluate_kernels, trace_mode
from torch import Tensor, nn

from gp_serve.export import support
from gp_serve.export.compiler import TORCHSCRIPT, Compiler
from gp_serve.export.engine import PriorTermsModule


class PriorTerms(nn.Module):
    """Input transform, prior mean and kernel blocks of a fitted exact GP.

    The model is held outside the module tree, so tracing bakes its fitted
    hyperparameters and (transformed) training inputs in as constants.

    Shapes use ``q`` test points, ``d`` inputs, ``N`` training points and a
    leading batch dimension ``b`` that is present only when ``b > 1`` (BoTorch's batched
    multi-output layout, ``b = m``, or the MCMC samples of a fully Bayesian model).
    """

    if TYPE_CHECKING:
        # (outside the module tree: set in ``__dict__``, which nn.Module's typing cannot see)
        _model: ExactGP
        _covar: nn.Module

    def __init__(
        self, model: ExactGP, batch: int | None = None, kernel: nn.Module | None = None
    ) -> None:
        """
        Args:
            model: The fitted model.
            batch: ``b``, the batch the test points are expanded to, as GPyTorch broadcasts
                them (default: the model's outputs, ``m``); the training inputs are
                expanded too where they have no batch dimension.
            kernel: The kernel of the blocks (default: the model's ``covar_module``; a
                ``KroneckerMultiTaskGP``'s data kernel).
        """
        super().__init__()
        self.__dict__["_model"] = model
        self.__dict__["_covar"] = model.covar_module if kernel is None else kernel
        batch = model.num_outputs if batch is None else batch
        train_x = model.train_inputs[0].detach()
        if batch > 1 and train_x.dim() == 2:
            train_x = train_x.expand(batch, -1, -1)
        self._train_x: Tensor = train_x
        self._batch = batch
        self._per_point_diagonal = support.full_path_diagonal(self._covar)

    def inputs(self, X: Tensor) -> Tensor:
        """Transform `q x d` raw points into the model's `(b) x q x d` test inputs."""
        x = self._model.transform_inputs(X)
        if self._batch > 1:
            x = x.unsqueeze(-3).expand(self._batch, -1, -1)
        return x

    def prior_mean(self, x: Tensor) -> Tensor:
        """Prior mean at the test inputs, `(b) x q` (`q x m` for a multi-task mean)."""
        return self._model.mean_module(x)

    def cross(self, x: Tensor) -> Tensor:
        """Test-train kernel block, `(b) x q x N`."""
        return self._kernel(x, self._train_x)

    def test_test(self, x: Tensor) -> Tensor:
        """Test-test kernel block, `(b) x q x q`."""
        return self._kernel(x, x)

    def joint(self, x: Tensor) -> Tensor:
        """Kernel of the test rows against ``[train; test]``, `(b) x q x (N + q)`.

        GPyTorch < 1.15 evaluates the test covariance this way when the joint
        kernel is small enough to be evaluated eagerly.
        """
        full = torch.cat([self._train_x, x], dim=-2)
        return self._kernel(full[..., self._train_x.size(-2) :, :], full)

    def diag(self, x: Tensor) -> Tensor:
        """Diagonal of the test-test kernel block, `(b) x q`.

        The kernel's ``diag=True`` path, except for kernels whose diagonal path computes
        other numbers than the full kernel (`export.support.FULL_PATH_DIAGONAL`, such as
        ``InfiniteWidthBNNKernel``: 4e-8 relative apart), where eager's variance is the
        full kernel's diagonal: the full kernel is evaluated one point at a time, as `q`
        `1 x 1` blocks (the same numbers as the full matrix's diagonal, `O(q)` memory).
        """
        if self._per_point_diagonal:
            points = x.unsqueeze(-2)  # (b) x q x 1 x d
            return self._kernel(points, points).squeeze(-1).squeeze(-1)
        return self._covar(x, x, diag=True)

    def _kernel(self, x1: Tensor, x2: Tensor) -> Tensor:
        with lazily_evaluate_kernels(False):
            return self._covar(x1, x2).to_dense()


def trace_prior_terms(
    model: ExactGP,
    example_X: Tensor,
    batch: int | None = None,
    kernel: nn.Module | None = None,
    compiler: Compiler = TORCHSCRIPT,
) -> PriorTermsModule:
    """Trace every method of `PriorTerms` for ``model`` (or make them exportable).

    Args:
        model: A fitted exact GP in eval mode whose parameters do not require grad.
        example_X: A `q x d` example input, ``q >= 2``, not the training inputs
            (`export.engine.tracing_points`).
        batch: See `PriorTerms`.
        kernel: See `PriorTerms`.
        compiler: `export.compiler.TORCHSCRIPT` (traced) or ``EXPORTABLE``.

    Returns:
        A module with the methods of `PriorTerms`.
    """
    terms = PriorTerms(model, batch, kernel)
    x = terms.inputs(example_X)
    methods = {"inputs": example_X} | {
        name: x for name in ("prior_mean", "cross", "test_test", "joint", "diag")
    }
    # trace_mode makes kernels skip their custom autograd Functions (e.g. RBFCovariance
    # for d=1), which TorchScript cannot save; the forward arithmetic is the same.
    return compiler.terms(terms, methods, lambda: trace_mode(True))
