"""The test-point terms of a fitted GP's prior, traced from the model's own modules.

Eager BoTorch evaluates the input transform, the mean module and the kernel on the
test points at every ``posterior`` call. Tracing exactly those modules (and nothing
from GPyTorch's prediction strategy or LinearOperator algebra) records the same
tensor operations, so the traced terms are equal to eager ones bit for bit, for any
number of points: these modules contain no shape-dependent Python control flow.
"""

from __future__ import annotations

import torch
from botorch.models import SingleTaskGP
from gpytorch.settings import lazily_evaluate_kernels, trace_mode
from torch import Tensor, nn

from gp_serve.export.compiler import TORCHSCRIPT, Compiler


class PriorTerms(nn.Module):
    """Input transform, prior mean and kernel blocks of a fitted ``SingleTaskGP``.

    The model is held outside the module tree, so tracing bakes its fitted
    hyperparameters and (transformed) training inputs in as constants.

    Shapes use ``q`` test points, ``d`` inputs, ``N`` training points and a
    leading ``m`` output-batch dimension that is present only when ``m > 1``
    (BoTorch's batched multi-output layout).
    """

    def __init__(self, model: SingleTaskGP, batch: int = 1) -> None:
        """
        Args:
            model: The fitted model.
            batch: The model's batch size when it is batched other than by its outputs
                (the MCMC samples of a fully Bayesian model); the test points and the
                training inputs are then expanded to it, as GPyTorch broadcasts them.
        """
        super().__init__()
        self.__dict__["_model"] = model
        train_x = model.train_inputs[0].detach()
        if batch > 1 and train_x.dim() == 2:
            train_x = train_x.expand(batch, -1, -1)
        self._train_x: Tensor = train_x
        self._num_outputs = model.num_outputs if batch == 1 else batch

    def inputs(self, X: Tensor) -> Tensor:
        """Transform `q x d` raw points into the model's `(m) x q x d` test inputs."""
        x = self._model.transform_inputs(X)
        if self._num_outputs > 1:
            x = x.unsqueeze(-3).expand(self._num_outputs, -1, -1)
        return x

    def prior_mean(self, x: Tensor) -> Tensor:
        """Prior mean at the test inputs, `(m) x q`."""
        return self._model.mean_module(x)

    def cross(self, x: Tensor) -> Tensor:
        """Test-train kernel block, `(m) x q x N`."""
        return self._kernel(x, self._train_x)

    def test_test(self, x: Tensor) -> Tensor:
        """Test-test kernel block, `(m) x q x q`."""
        return self._kernel(x, x)

    def joint(self, x: Tensor) -> Tensor:
        """Kernel of the test rows against ``[train; test]``, `(m) x q x (N + q)`.

        GPyTorch < 1.15 evaluates the test covariance this way when the joint
        kernel is small enough to be evaluated eagerly.
        """
        full = torch.cat([self._train_x, x], dim=-2)
        return self._kernel(full[..., self._train_x.size(-2) :, :], full)

    def diag(self, x: Tensor) -> Tensor:
        """Diagonal of the test-test kernel block, `(m) x q`."""
        return self._model.covar_module(x, x, diag=True)

    def _kernel(self, x1: Tensor, x2: Tensor) -> Tensor:
        with lazily_evaluate_kernels(False):
            return self._model.covar_module(x1, x2).to_dense()


def trace_prior_terms(
    model: SingleTaskGP, example_X: Tensor, batch: int = 1, compiler: Compiler = TORCHSCRIPT
) -> nn.Module:
    """Trace every method of `PriorTerms` for ``model`` (or make them exportable).

    Args:
        model: A fitted ``SingleTaskGP`` in eval mode whose parameters do not
            require grad.
        example_X: A `q x d` example input, ``q >= 2``, not the training inputs.
        batch: See `PriorTerms`.
        compiler: `export.compiler.TORCHSCRIPT` (traced) or ``EXPORTABLE``.

    Returns:
        A module with the methods of `PriorTerms`.
    """
    terms = PriorTerms(model, batch)
    x = terms.inputs(example_X)
    methods = {
        "inputs": example_X,
        "prior_mean": x,
        "cross": x,
        "test_test": x,
        "joint": x,
        "diag": x,
    }
    # trace_mode makes kernels skip their custom autograd Functions (e.g. RBFCovariance
    # for d=1), which TorchScript cannot save; the forward arithmetic is the same.
    return compiler.terms(terms, methods, lambda: trace_mode(True))
