"""The multi-task family: ``MultiTaskGP`` (ICM: the task index is an input column).

The engine's `ExactPosterior` over task-major rows (row ``t*q + i`` is task ``t`` at point
``i``, as eager appends the task column), with prior terms traced from the model's own
lazily evaluated ``forward``. See docs/export.md, the multi-task paragraph that closes
"Kronecker multi-task GP".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

import torch
from botorch.models import MultiTaskGP
from botorch.models.utils.assorted import _make_X_full
from gpytorch.likelihoods import FixedNoiseGaussianLikelihood, GaussianLikelihood
from gpytorch.settings import lazily_evaluate_kernels, trace_mode
from linear_operator.operators import InterpolatedLinearOperator
from torch import Tensor, nn

from gp_serve.export import engine
from gp_serve.export.compiler import TORCHSCRIPT, Compiled, Compiler


class MultiTaskPriorTerms(nn.Module):
    """Task-expanded inputs, prior mean and kernel blocks of a fitted ``MultiTaskGP``.

    ``x`` below is the transformed, task-expanded test input, `(q*m) x (d+1)`. The kernel is
    sliced as GPyTorch's exact prediction slices it, so that kernel structures that differ
    between BoTorch versions (a product kernel on 0.18, a data kernel times a task kernel
    on 0.12) are followed as they are.
    """

    if TYPE_CHECKING:
        # (outside the module tree: set in ``__dict__``, which nn.Module's typing cannot see)
        _model: MultiTaskGP

    def __init__(self, model: MultiTaskGP) -> None:
        super().__init__()
        self.__dict__["_model"] = model
        self._train_x: Tensor = engine.train_x(model).detach()
        self._tasks = list(model._output_tasks)
        self._task_feature = model._task_feature

    def inputs(self, X: Tensor) -> Tensor:
        """`q x d` raw points to the model's task-major `(q*m) x (d+1)` test inputs."""
        return self._model.transform_inputs(_make_X_full(X, self._tasks, self._task_feature))

    def _joint(self, x: Tensor):
        """The model's prior over ``[train; test]``, lazily evaluated (as eager's)."""
        return self._model.forward(torch.cat([self._train_x, x], dim=-2))

    def prior_mean(self, x: Tensor) -> Tensor:
        return self._joint(x).mean[..., self._train_x.size(-2) :]

    def cross(self, x: Tensor) -> Tensor:
        n = self._train_x.size(-2)
        return self._joint(x).lazy_covariance_matrix[..., n:, :n].to_dense()

    def test_test(self, x: Tensor) -> Tensor:
        n = self._train_x.size(-2)
        return self._joint(x).lazy_covariance_matrix[..., n:, n:].to_dense()

    def joint(self, x: Tensor) -> Tensor:
        n = self._train_x.size(-2)
        return self._joint(x).lazy_covariance_matrix[..., n:, :].to_dense()

    def diag(self, x: Tensor) -> Tensor:
        n = self._train_x.size(-2)
        return self._joint(x).lazy_covariance_matrix[..., n:, n:].diagonal(dim1=-2, dim2=-1)


@contextmanager
def _index_kernels_by_gather() -> Iterator[None]:
    """Evaluate task (index) kernels by indexing instead of sparse products, while tracing.

    An ``IndexKernel`` is an ``InterpolatedLinearOperator`` with one interpolation point
    of weight 1 per row; its dense form goes through sparse matrices whose sizes a trace
    would freeze. Its entries are exactly ``B[task_i, task_j]`` (products with 1.0 and
    sums with 0.0 are exact), which plain indexing computes for any number of rows.
    """
    original = InterpolatedLinearOperator.to_dense

    def to_dense(self):
        left, right = self.left_interp_indices, self.right_interp_indices
        # (while torch.export runs, the values cannot be read; they are the same tensors
        # as at the example points, where this check has passed: IndexKernel's are ones)
        ones = left.size(-1) == right.size(-1) == 1 and (
            torch.compiler.is_exporting()
            or (
                bool((self.left_interp_values == 1).all())
                and bool((self.right_interp_values == 1).all())
            )
        )
        if not ones or left.dim() != 2 or right.dim() != 2:
            return original(self)
        base = self.base_linear_op.to_dense()
        return base[left[:, 0]][:, right[:, 0]]

    InterpolatedLinearOperator.to_dense = to_dense
    try:
        yield
    finally:
        InterpolatedLinearOperator.to_dense = original


@contextmanager
def _settings() -> Iterator[None]:
    """The settings the prior terms are evaluated under (lazy kernels, as eager's)."""
    with ExitStack() as stack:
        for setting in (
            trace_mode(True),
            lazily_evaluate_kernels(True),
            _index_kernels_by_gather(),
        ):
            stack.enter_context(setting)
        yield


def _trace_terms(
    model: MultiTaskGP, example_X: Tensor, compiler: Compiler
) -> engine.PriorTermsModule:
    terms = MultiTaskPriorTerms(model)
    x = terms.inputs(example_X)
    methods = {name: x for name in ("prior_mean", "cross", "test_test", "joint", "diag")}
    methods["inputs"] = example_X
    return compiler.terms(terms, methods, _settings)


class MultiTaskPosterior(engine.CompiledPosterior):
    """The posterior of ``m`` output tasks: the latent posterior over task-major rows (its
    covariance is already output-major, with non-zero cross-task blocks)."""

    def __init__(
        self, latent: engine.ExactPosterior | torch.jit.ScriptModule, num_outputs: int
    ) -> None:
        """
        Args:
            latent: The compiled `ExactPosterior` of the one-output GP over `(q*m)` rows.
            num_outputs: ``m``, the model's output tasks.
        """
        super().__init__()
        self.latent = latent
        self.num_outputs = num_outputs

    def _by_output(self, values: Tensor) -> Tensor:
        """Task-major `(q*m) x 1` values to `q x m`."""
        return values.reshape(self.num_outputs, -1).transpose(0, 1)

    def _joint(self, X: Tensor, noisy: bool) -> tuple[Tensor, Tensor]:
        mean, covariance = self.latent.forward_noisy(X) if noisy else self.latent(X)
        return self._by_output(mean), covariance

    def _marginal(self, X: Tensor, noisy: bool) -> tuple[Tensor, Tensor]:
        mean, variance = self.latent.mean_var_noisy(X) if noisy else self.latent.mean_var(X)
        return self._by_output(mean), self._by_output(variance)


def _noise(model: MultiTaskGP) -> tuple[Tensor, int]:
    """Observation noise as eager adds it, and the number of per-task values (or 0)."""
    likelihood = model.likelihood
    tasks = model._map_tasks(torch.tensor(model._output_tasks, dtype=torch.long)).tolist()
    if isinstance(likelihood, FixedNoiseGaussianLikelihood):
        # Eager adds, per task, the mean known noise of that task's training rows.
        train_tasks = model._map_tasks(engine.train_x(model)[..., model._task_feature]).long()
        noise = likelihood.noise.detach()
        per_task = [noise[..., train_tasks == task].mean(dim=-1) for task in tasks]
        return torch.stack(per_task, dim=-1).reshape(-1), len(tasks)
    if type(likelihood) is GaussianLikelihood:
        return likelihood.noise.detach().clone(), 0
    if type(likelihood).__name__ == "HadamardGaussianLikelihood":  # GPyTorch >= 1.14
        per_task = likelihood.noise.detach().reshape(-1)
        return per_task[tasks].clone(), len(tasks)
    raise ValueError(
        "expected a Gaussian, fixed-noise or Hadamard Gaussian likelihood, "
        f"got {type(likelihood).__name__}"
    )


def training_inputs(model: MultiTaskGP) -> list[Tensor]:
    """The raw training inputs without the task column, `N x d`, as a one-item list."""
    raw = engine.training_inputs(model)[0]
    keep = [j for j in range(raw.size(-1)) if j != model._task_feature]
    return [raw[..., keep]]


def trace_multitask(
    model: MultiTaskGP, example_X: Tensor, compiler: Compiler = TORCHSCRIPT
) -> Compiled:
    """Compile the posterior of a fitted ``MultiTaskGP`` over its output tasks.

    Args:
        model: A fitted float64 ``MultiTaskGP`` without batch dimensions, with a
            ``Standardize(m=1)`` outcome transform or none.
        example_X: A `q x d` example input (raw, without the task column), q >= 1.
        compiler: See `export.compiler`.

    Returns:
        A ScriptModule with the four methods; outputs are the model's output tasks,
        in order.
    """
    engine.check_model(
        model, example_X, num_inputs=model.num_non_task_features, example_note="(no task column)"
    )
    frozen = engine.frozen_copy(model)
    # The task column is ours (`_make_X_full`: every output task), valid by construction;
    # BoTorch's check of it is data-dependent, which torch.export cannot follow.
    frozen._validate_task_values = False
    example_X = example_X.detach().to(torch.float64)
    noise, noise_tasks = _noise(frozen)
    y_mean, y_std = engine.outcome_scale(frozen, num_outputs=1)
    latent = engine.exact_posterior(
        frozen,
        _trace_terms(frozen, engine.tracing_points(example_X), compiler),
        example_X,
        noise,
        y_mean,
        y_std,
        noise_tasks,
    )
    return compiler.finish(MultiTaskPosterior(compiler.finish(latent), len(frozen._output_tasks)))
