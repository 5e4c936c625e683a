"""The corrected posterior of a ``SingleTaskGP`` (the single-task family) as TorchScript.

`trace_single_task` does not trace ``model.posterior``. It traces only the parts that
depend on the test points through the model's own modules (input transform, mean,
kernel; see `prior_terms`), takes the training-data caches from the model's own
prediction strategy (``mean_cache``, ``covar_cache``: the same Cholesky factors eager
BoTorch uses), and redoes the remaining algebra of GPyTorch's exact prediction,
BoTorch's multi-output assembly and ``Standardize.untransform_posterior`` as plain,
scripted tensor code, in the same order of operations as eager BoTorch. The result
accepts any number of points and keeps eager BoTorch's output-major layout.
"""

from __future__ import annotations

import copy
from typing import List, Tuple

import gpytorch
import torch
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from gpytorch.likelihoods import FixedNoiseGaussianLikelihood, GaussianLikelihood
from gpytorch.models import ExactGP
from torch import Tensor, nn

from gp_serve.export.compiler import TORCHSCRIPT, Compiler
from gp_serve.export.prior_terms import trace_prior_terms


class ExactPosterior(nn.Module):
    """Posterior of a fitted ``SingleTaskGP`` with ``m`` outputs, for TorchScript.

    Covariances are output-major, as in eager BoTorch: entry ``t*q + i`` is output
    ``t`` at point ``i``. Outputs are independent given the data, so the
    off-diagonal ``q x q`` blocks are zero.
    """

    def __init__(
        self,
        prior: nn.Module,
        mean_cache: Tensor,
        covar_cache: Tensor,
        noise: Tensor,
        y_mean: Tensor,
        y_std: Tensor,
        num_train: int,
        eager_kernel_size: int,
        joint_test_covar: bool,
        min_variance: float,
        noise_tasks: int = 0,
    ) -> None:
        """
        Args:
            prior: The traced (or exportable) `PriorTerms` of the model.
            mean_cache: `(m) x N`, ``(K + noise)^-1 (y - prior mean)``.
            covar_cache: `(m) x N x k`, a root ``S`` with ``S S^T = (K + noise)^-1``.
            noise: `(m) x 1` (or `1`) observation noise on the standardized scale.
            y_mean: `m`, the outcome transform's means (zeros without one).
            y_std: `m`, the outcome transform's standard deviations (ones without).
            num_train: ``N``.
            eager_kernel_size: GPyTorch's ``max_eager_kernel_size`` at export.
            joint_test_covar: Whether GPyTorch evaluates the test covariance as
                rows of the joint kernel (GPyTorch < 1.15) when it is small.
            min_variance: GPyTorch's ``min_variance`` for the dtype.
            noise_tasks: ``T > 0`` when ``noise`` is one variance per task (`T`) and the
                test rows are task-major blocks of equal size (the multi-task family);
                0 when ``noise`` broadcasts over the rows.
        """
        super().__init__()
        self.prior = prior
        self.register_buffer("mean_cache", mean_cache)
        self.register_buffer("covar_cache", covar_cache)
        self.register_buffer("noise", noise)
        self.register_buffer("y_mean", y_mean)
        self.register_buffer("y_std", y_std)
        self.num_train = num_train
        self.num_outputs = y_mean.numel()
        self.batched = self.num_outputs > 1
        self.eager_kernel_size = eager_kernel_size
        self.joint_test_covar = joint_test_covar
        self.min_variance = min_variance
        self.noise_tasks = noise_tasks

    def forward(self, X: Tensor) -> Tuple[Tensor, Tensor]:
        """Posterior mean `q x m` and covariance `(q*m) x (q*m)` at `q x d` ``X``."""
        mean, blocks = self._mean_covariance(X, False)
        return mean, block_diagonal(blocks.unbind(0))

    @torch.jit.export
    def forward_noisy(self, X: Tensor) -> Tuple[Tensor, Tensor]:
        """As `forward`, with observation noise (``observation_noise=True``)."""
        mean, blocks = self._mean_covariance(X, True)
        return mean, block_diagonal(blocks.unbind(0))

    @torch.jit.export
    def mean_var(self, X: Tensor) -> Tuple[Tensor, Tensor]:
        """Posterior mean and variance, both `q x m`, without a `q x q` matrix once
        ``N + q`` exceeds GPyTorch's eager kernel size (`O(q (N + m))` memory)."""
        return self._mean_variance(X, False)

    @torch.jit.export
    def mean_var_noisy(self, X: Tensor) -> Tuple[Tensor, Tensor]:
        """As `mean_var`, with observation noise (``observation_noise=True``)."""
        return self._mean_variance(X, True)

    def _latent_mean(self, x: Tensor, cross: Tensor) -> Tensor:
        mean = (cross @ self.mean_cache.unsqueeze(-1)).squeeze(-1)
        return mean + self.prior.prior_mean(x)

    def _noise(self, shape: List[int]) -> Tensor:
        """Observation noise for latent values of ``shape`` (`(m) x rows`)."""
        if self.noise_tasks > 0:
            return self.noise.repeat_interleave(shape[-1] // self.noise_tasks).expand(shape)
        return self.noise.expand(shape)

    def _outcome_mean(self, mean: Tensor) -> Tensor:
        """Untransform the latent `(m) x q` mean into the `q x m` outcome mean."""
        if not self.batched:
            mean = mean.unsqueeze(0)
        return self.y_mean + self.y_std * mean.transpose(0, 1)

    def _joint_regime(self, q: int) -> bool:
        """Whether GPyTorch takes the `q` test rows from the joint kernel."""
        return self.joint_test_covar and q + self.num_train <= self.eager_kernel_size

    def _mean_covariance(self, X: Tensor, noisy: bool) -> Tuple[Tensor, Tensor]:
        x = self.prior.inputs(X)
        n = self.num_train
        if self._joint_regime(x.size(-2)):
            joint = self.prior.joint(x)
            cross = joint[..., :n]
            test_test = joint[..., n:]
        else:
            cross = self.prior.cross(x)
            test_test = self.prior.test_test(x)
        mean = self._latent_mean(x, cross)
        root = cross @ self.covar_cache
        covar = torch.add(test_test, root @ root.transpose(-1, -2), alpha=-1)
        if noisy:
            covar = _add_to_diagonal(covar, self._noise(mean.shape))
        if not self.batched:
            covar = covar.unsqueeze(0)
        scale = self.y_std.view(-1, 1, 1)
        blocks = (scale * covar) * scale
        return self._outcome_mean(mean), blocks

    @torch.jit.export
    def blocks(self, X: Tensor, noisy: bool) -> Tuple[Tensor, Tensor]:
        """Mean `q x m` and the `m x q x q` covariance blocks (before assembly)."""
        return self._mean_covariance(X, noisy)

    def _test_diag(self, x: Tensor) -> Tensor:
        """Diagonal of the test-test kernel block, `(m) x q`, as eager BoTorch sees it.

        Where GPyTorch < 1.15 takes the test covariance from the joint kernel (only
        while ``N + q <= max_eager_kernel_size``), eager's variance is the diagonal of
        those joint rows, with the rounding of their distance computation: the same
        distances computed in other shapes round differently, which Matern-1/2's
        square root magnifies to ~1e-8. So the joint rows are computed here too, as
        eager does (`(m) x q x (N + q)`, bounded by that size).
        """
        if not self._joint_regime(x.size(-2)):
            return self.prior.diag(x)
        test_test = self.prior.joint(x)[..., self.num_train :]
        return torch.diagonal(test_test, dim1=-2, dim2=-1)

    def _mean_variance(self, X: Tensor, noisy: bool) -> Tuple[Tensor, Tensor]:
        x = self.prior.inputs(X)
        cross = self.prior.cross(x)
        mean = self._latent_mean(x, cross)
        root = cross @ self.covar_cache
        variance = self._test_diag(x) + (root * -root).sum(-1)
        if noisy:
            variance = variance + self._noise(variance.shape)
        if not self.batched:
            variance = variance.unsqueeze(0)
        scale = self.y_std.unsqueeze(-1)
        variance = ((scale * variance) * scale).transpose(0, 1)
        return self._outcome_mean(mean), variance.clamp_min(self.min_variance)


def _add_to_diagonal(matrix: Tensor, values: Tensor) -> Tensor:
    """``matrix + diag_embed(values)`` for `(b) x n x n` ``matrix`` and `(b) x n` ``values``,
    the same numbers, as a select (no zeros-then-copy, which torch.onnx cannot export)."""
    n = matrix.size(-1)
    eye = torch.eye(n, dtype=torch.bool, device=matrix.device)
    return torch.where(eye, matrix + values.unsqueeze(-1), matrix)


def block_diagonal(blocks: List[Tensor]) -> Tensor:
    """The block-diagonal matrix of square ``blocks`` (``torch.block_diag``, which takes a
    list in TorchScript and separate tensors in Python)."""
    if torch.jit.is_scripting():
        return torch.block_diag(blocks)
    return _block_diag_eager(blocks)


@torch.jit.unused
def _block_diag_eager(blocks: List[Tensor]) -> Tensor:
    return torch.block_diag(*blocks)


def _observation_noise(model: SingleTaskGP) -> Tensor:
    likelihood = model.likelihood
    if isinstance(likelihood, FixedNoiseGaussianLikelihood):
        return likelihood.noise.mean(dim=-1, keepdim=True).detach().clone()
    if isinstance(likelihood, GaussianLikelihood):
        return likelihood.noise.detach().clone()
    raise ValueError(
        "expected a GaussianLikelihood or FixedNoiseGaussianLikelihood, "
        f"got {type(likelihood).__name__}"
    )


def _outcome_scale(model: SingleTaskGP) -> Tuple[Tensor, Tensor]:
    m = model.num_outputs
    transform = getattr(model, "outcome_transform", None)
    dtype = model.train_inputs[0].dtype
    if transform is None:
        return torch.zeros(m, dtype=dtype), torch.ones(m, dtype=dtype)
    if type(transform) is not Standardize:
        raise ValueError(
            f"expected a Standardize outcome transform or none, got "
            f"{type(transform).__name__}"
        )
    return transform.means.detach().reshape(m), transform.stdvs.detach().reshape(m)


def _check_model(model: SingleTaskGP, example_X: Tensor) -> None:
    if not isinstance(model, SingleTaskGP):
        raise TypeError(f"expected a SingleTaskGP, got {type(model).__name__}")
    train_x = model.train_inputs[0]
    if train_x.dtype != torch.float64:
        raise ValueError(f"expected a float64 model, got {train_x.dtype}")
    expected_dim = 3 if model.num_outputs > 1 else 2
    if train_x.dim() != expected_dim:
        raise ValueError(
            "expected a model without batch dimensions (train_X of shape N x d), "
            f"got train inputs of shape {tuple(train_x.shape)}"
        )
    d = train_x.size(-1)
    if example_X.dim() != 2 or example_X.size(-1) != d or example_X.size(0) < 1:
        raise ValueError(
            f"expected example_X of shape q x {d} with q >= 1, "
            f"got {tuple(example_X.shape)}"
        )


def _tracing_points(example_X: Tensor, model: SingleTaskGP) -> Tensor:
    """Points to trace with: never the training inputs themselves (the kernels'
    ``torch.equal(x1, x2)`` shortcut would be frozen in), and at least 2 of them."""
    q = 4 if model.train_inputs[0].size(-2) == 3 else 3
    steps = torch.arange(q, dtype=torch.float64).unsqueeze(-1)
    return example_X[:1] + 0.1 * steps + 0.01 * steps.square()


def training_inputs(model: SingleTaskGP) -> list[Tensor]:
    """The model's raw (untransformed) `N x d` training inputs, as a one-item list."""
    train_x = model.train_inputs[0]
    if train_x.dim() == 3:
        train_x = train_x[0]
    transform = getattr(model, "input_transform", None)
    with torch.no_grad():
        return [train_x if transform is None else transform.untransform(train_x)]


def training_tensors(model: SingleTaskGP) -> list[Tensor]:
    """The tensors the model was conditioned on (for a hash of the training data)."""
    return [model.train_inputs[0], model.train_targets]


def trace_single_task(model: SingleTaskGP, example_X: Tensor,
                      compiler: Compiler = TORCHSCRIPT) -> nn.Module:
    """Compile the posterior of a fitted ``SingleTaskGP`` into TorchScript.

    The model is not modified: a detached copy is traced.

    Args:
        model: A fitted ``SingleTaskGP`` with ``m >= 1`` outputs, float64, with or
            without ``train_Yvar``, any input transform, and a ``Standardize``
            outcome transform or none.
        example_X: A `q x d` example input (raw, untransformed), any q >= 1;
            its values do not matter.
        compiler: `export.compiler.TORCHSCRIPT`, or ``EXPORTABLE`` for an eager module
            that ``torch.export`` can export (`export.portable`).

    Returns:
        A ScriptModule (or the eager module) with ``forward``/``forward_noisy`` (mean `q x m`,
        output-major covariance `(q*m) x (q*m)`) and ``mean_var``/
        ``mean_var_noisy`` (mean and variance, `q x m`), for any `q x d` input.
    """
    _check_model(model, example_X)
    frozen = frozen_copy(model)
    example_X = example_X.detach().to(torch.float64)
    y_mean, y_std = _outcome_scale(frozen)
    posterior = exact_posterior(
        frozen,
        trace_prior_terms(frozen, _tracing_points(example_X, frozen), compiler=compiler),
        example_X,
        noise=_observation_noise(frozen),
        y_mean=y_mean,
        y_std=y_std,
    )
    return compiler.finish(posterior)


def frozen_copy(model: ExactGP) -> ExactGP:
    """A detached copy of ``model`` in eval mode (the model itself is not modified)."""
    frozen = copy.deepcopy(model)
    frozen.requires_grad_(False)
    frozen.eval()  # (not chained: some models' eval returns None)
    return frozen


def exact_posterior(
    frozen: ExactGP,
    prior: nn.Module,
    example_X: Tensor,
    noise: Tensor,
    y_mean: Tensor,
    y_std: Tensor,
    noise_tasks: int = 0,
) -> ExactPosterior:
    """An `ExactPosterior` of a frozen model: its caches taken from one eager call.

    Args:
        frozen: The model (`frozen_copy`), any exact GP with BoTorch's ``posterior``.
        prior: Its traced prior terms (``inputs``, ``prior_mean``, kernel blocks).
        example_X: A raw `q x d` input for the eager call that computes the caches.
        noise: Observation noise on the latent scale (see `ExactPosterior`).
        y_mean: The outcome transform's means.
        y_std: Its standard deviations.
        noise_tasks: See `ExactPosterior`.
    """
    with torch.no_grad():
        # The caches are computed exactly as eager BoTorch computes them.
        frozen.posterior(example_X)
        strategy = frozen.prediction_strategy
        mean_cache = strategy.mean_cache.detach()
        covar_cache = strategy.covar_cache.detach()
    return ExactPosterior(
        prior=prior,
        mean_cache=mean_cache,
        covar_cache=covar_cache,
        noise=noise,
        y_mean=y_mean,
        y_std=y_std,
        num_train=frozen.train_inputs[0].size(-2),
        eager_kernel_size=gpytorch.settings.max_eager_kernel_size.value(),
        joint_test_covar=not hasattr(ExactGP, "_get_test_prior_mean_and_covariances"),
        min_variance=gpytorch.settings.min_variance.value(torch.float64),
        noise_tasks=noise_tasks,
    )
