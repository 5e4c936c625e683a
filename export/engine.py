"""The export's engine: the posterior base class every family subclasses, the exact GP
posterior over traced prior terms and eager caches, and the model checks and training-data
accessors the families compose. See docs/export.md, "Design: the corrected posterior".
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Protocol

import gpytorch
import torch
from botorch.models.model import Model
from botorch.models.transforms.outcome import Standardize
from gpytorch.likelihoods import FixedNoiseGaussianLikelihood, GaussianLikelihood
from gpytorch.models import ExactGP
from torch import Tensor, nn


class PriorTermsModule(Protocol):
    """Compiled prior terms, as `export.compiler.Compiler.terms` returns them: the methods of
    `export.prior_terms.PriorTerms` (or of a family's own terms), traced into a ScriptModule
    or kept eager. ``X`` is `q x d` raw points, ``x`` the model's test inputs (`inputs`)."""

    def inputs(self, X: Tensor) -> Tensor: ...

    def prior_mean(self, x: Tensor) -> Tensor: ...

    def cross(self, x: Tensor) -> Tensor: ...

    def test_test(self, x: Tensor) -> Tensor: ...

    def joint(self, x: Tensor) -> Tensor: ...

    def diag(self, x: Tensor) -> Tensor: ...


class CompiledPosterior(nn.Module):
    """The four methods of every compiled posterior, over two primitives a family implements.

    A family implements ``_joint(X, noisy)`` (mean `q x m` and output-major covariance
    `(q*m) x (q*m)`: entry ``t*q + i`` is output ``t`` at point ``i``) and
    ``_marginal(X, noisy)`` (mean and variance, `q x m` each), for `q x d` raw ``X``.
    ``torch.jit.script`` compiles the inherited methods (``forward`` and the exported ones)
    with the subclass's primitives.
    """

    def forward(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean `q x m` and output-major covariance `(q*m) x (q*m)` at `q x d` ``X``."""
        return self._joint(X, False)

    @torch.jit.export
    def forward_noisy(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """As `forward`, with observation noise (``observation_noise=True``)."""
        return self._joint(X, True)

    @torch.jit.export
    def mean_var(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and variance, both `q x m`, without the `(q*m) x (q*m)` matrix."""
        return self._marginal(X, False)

    @torch.jit.export
    def mean_var_noisy(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """As `mean_var`, with observation noise (``observation_noise=True``)."""
        return self._marginal(X, True)

    def _joint(self, X: Tensor, noisy: bool) -> tuple[Tensor, Tensor]:
        """Mean `q x m` and output-major covariance `(q*m) x (q*m)`, noisy or not."""
        raise NotImplementedError

    def _marginal(self, X: Tensor, noisy: bool) -> tuple[Tensor, Tensor]:
        """Mean and variance, `q x m` each, noisy or not."""
        raise NotImplementedError


class ExactPosterior(CompiledPosterior):
    """Exact posterior of a GP with ``m`` outputs (or batch members), for TorchScript.

    Prior terms at the leaves, caches from eager GPyTorch, and GPyTorch's exact prediction,
    BoTorch's multi-output assembly and ``Standardize.untransform_posterior`` redone as
    scripted tensor code in eager's order of operations. Outputs are independent given
    the data: the off-diagonal ``q x q`` blocks of the covariance are zero.
    """

    if TYPE_CHECKING:
        # (for the type checker only: TorchScript cannot resolve class-level annotations
        # written as strings; it types the attributes from their values when it compiles)
        prior: PriorTermsModule
        mean_cache: Tensor
        covar_cache: Tensor
        noise: Tensor
        y_mean: Tensor
        y_std: Tensor

    def __init__(
        self,
        prior: PriorTermsModule,
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
        tile: int = 0,
    ) -> None:
        """
        Args:
            prior: The traced (or exportable) prior terms of the model
                (``export.prior_terms.PriorTerms`` or a family's own).
            mean_cache: `(m) x N`, ``(K + noise)^-1 (y - prior mean)``.
            covar_cache: `(m) x N x k`, a root ``S`` with ``S S^T = (K + noise)^-1``; or,
                with ``tile > 0``, such an upper-triangular `N x N` root packed in column
                blocks (`pack_upper_triangular`).
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
            tile: The column-block width of a packed ``covar_cache``; 0 when it is whole.
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
        self.tile = tile

    def _joint(self, X: Tensor, noisy: bool) -> tuple[Tensor, Tensor]:
        mean, blocks = self.blocks(X, noisy)
        return mean, block_diagonal(list(blocks.unbind(0)))

    @torch.jit.export
    def blocks(self, X: Tensor, noisy: bool) -> tuple[Tensor, Tensor]:
        """Mean `q x m` and the `m x q x q` covariance blocks (before assembly)."""
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
        root = self._root(cross)
        covar = torch.add(test_test, root @ root.transpose(-1, -2), alpha=-1)
        if noisy:
            covar = add_to_diagonal(covar, self._noise(list(mean.shape)))
        if not self.batched:
            covar = covar.unsqueeze(0)
        scale = self.y_std.view(-1, 1, 1)
        blocks = (scale * covar) * scale
        return self._outcome_mean(mean), blocks

    def _marginal(self, X: Tensor, noisy: bool) -> tuple[Tensor, Tensor]:
        """Mean and variance without a `q x q` matrix once ``N + q`` exceeds GPyTorch's
        eager kernel size (`O(q (N + m))` memory)."""
        x = self.prior.inputs(X)
        cross = self.prior.cross(x)
        mean = self._latent_mean(x, cross)
        root = self._root(cross)
        variance = self._test_diag(x) + (root * -root).sum(-1)
        if noisy:
            variance = variance + self._noise(list(variance.shape))
        if not self.batched:
            variance = variance.unsqueeze(0)
        scale = self.y_std.unsqueeze(-1)
        variance = ((scale * variance) * scale).transpose(0, 1)
        return self._outcome_mean(mean), variance.clamp_min(self.min_variance)

    def _root(self, cross: Tensor) -> Tensor:
        """``cross @ S``, `(m) x q x k`, for the `(m) x q x N` test-train kernel ``cross``.

        With a packed ``S`` (`pack_upper_triangular`), one product per column block over
        the rows where the block is not zero: the same nonzero terms, half the memory.
        """
        if self.tile == 0:
            return cross @ self.covar_cache
        n, tile = self.num_train, self.tile
        blocks = (n + tile - 1) // tile
        padded = torch.nn.functional.pad(cross, [0, blocks * tile - n])
        parts: list[Tensor] = []
        start = 0
        for block in range(blocks):
            rows = (block + 1) * tile
            parts.append(padded[..., :rows] @ self.covar_cache[..., start : start + rows, :])
            start += rows
        return torch.cat(parts, -1)[..., :n]

    def _latent_mean(self, x: Tensor, cross: Tensor) -> Tensor:
        mean = (cross @ self.mean_cache.unsqueeze(-1)).squeeze(-1)
        return mean + self.prior.prior_mean(x)

    def _noise(self, shape: list[int]) -> Tensor:
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


def add_to_diagonal(matrix: Tensor, values: Tensor) -> Tensor:
    """``matrix + diag_embed(values)``, the same numbers, as a select (no zeros-then-copy,
    which torch.onnx cannot export).

    Args:
        matrix: `(b) x n x n`.
        values: `(b) x n`.
    """
    n = matrix.size(-1)
    eye = torch.eye(n, dtype=torch.bool, device=matrix.device)
    return torch.where(eye, matrix + values.unsqueeze(-1), matrix)


def block_diagonal(blocks: list[Tensor]) -> Tensor:
    """The block-diagonal matrix of square ``blocks`` (``torch.block_diag``, which takes a
    list in TorchScript and separate tensors in Python)."""
    if torch.jit.is_scripting():
        return torch.block_diag(blocks)
    return _block_diag_eager(blocks)


@torch.jit.unused
def _block_diag_eager(blocks: list[Tensor]) -> Tensor:
    return torch.block_diag(*blocks)


# Roots of at least this many training points are packed (`pack_upper_triangular`), in
# column blocks this wide: ~(1 + tile/N)/2 of the `N x N` matrix is stored.
PACK_MIN_POINTS = 2048
PACK_TILE = 1024


def pack_upper_triangular(root: Tensor, tile: int = PACK_TILE) -> Tensor | None:
    """An upper-triangular `(m) x N x N` root in column blocks of ``tile`` columns, each cut
    to the rows above its last column (below, the root is zero), stacked: `(m) x R x tile`
    with ``R = tile * B (B + 1) / 2`` for ``B = ceil(N / tile)`` blocks (zero-padded to
    ``B * tile``). `ExactPosterior._root` multiplies by it block by block.

    Returns:
        The packed root, or None if ``root`` is not square and upper-triangular.
    """
    n = root.size(-1)
    if root.size(-2) != n or not torch.equal(root, root.triu()):
        return None
    blocks = (n + tile - 1) // tile
    packed = root.new_zeros(*root.shape[:-2], tile * blocks * (blocks + 1) // 2, tile)
    start = 0
    for block in range(blocks):
        rows, first = (block + 1) * tile, block * tile
        width, height = min(tile, n - first), min(rows, n)
        packed[..., start : start + height, :width] = root[..., :height, first : first + width]
        start += rows
    return packed


def train_x(model: ExactGP) -> Tensor:
    """The `(b) x N x d` inputs ``model`` is conditioned on, as it holds them (transformed).

    GPyTorch's ``train_inputs[0]``: GPyTorch has no type information, and BoTorch's typed
    models show its attributes to a type checker only as nn.Module's (tensor or module).
    """
    return model.train_inputs[0]


def check_model(
    model: Model,
    example_X: Tensor,
    *,
    num_inputs: int | None = None,
    output_batch: bool = False,
    example_note: str = "with q >= 1",
) -> None:
    """Refuse a model the engine cannot compile: float64, no batch dimensions, `q x d` points.

    Args:
        model: A model with ``train_inputs`` (an exact GP).
        example_X: The example input, expected `q x d` with ``q >= 1``.
        num_inputs: ``d`` (default: the width of the training inputs).
        output_batch: Whether the training inputs carry BoTorch's batched multi-output
            dimension (a multi-output ``SingleTaskGP``: `m x N x d`).
        example_note: How the expected example shape is described after `q x d`.

    Raises:
        ValueError: Naming what was expected and what was given.
    """
    inputs = train_x(model)
    if inputs.dtype != torch.float64:
        raise ValueError(f"expected a float64 model, got {inputs.dtype}")
    if inputs.dim() != (3 if output_batch else 2):
        raise ValueError(
            "expected a model without batch dimensions (train_X of shape N x d), "
            f"got train inputs of shape {tuple(inputs.shape)}"
        )
    d = inputs.size(-1) if num_inputs is None else num_inputs
    if example_X.dim() != 2 or example_X.size(-1) != d or example_X.size(0) < 1:
        raise ValueError(
            f"expected example_X of shape q x {d} {example_note}, got {tuple(example_X.shape)}"
        )


def training_inputs(model: ExactGP) -> list[Tensor]:
    """The model's raw (untransformed) `N x d` training inputs, as a one-item list."""
    inputs = train_x(model)
    if inputs.dim() == 3:
        inputs = inputs[0]
    transform = getattr(model, "input_transform", None)
    with torch.no_grad():
        return [inputs if transform is None else transform.untransform(inputs)]


def training_tensors(model: ExactGP) -> list[Tensor]:
    """The tensors the model was conditioned on (for a hash of the training data)."""
    return [model.train_inputs[0], model.train_targets]


def observation_noise(model: ExactGP) -> Tensor:
    """The observation noise eager adds to a single-task posterior, `(m) x 1` (or `1`).

    Raises:
        ValueError: If the likelihood is not a (fixed-noise) Gaussian one.
    """
    likelihood = model.likelihood
    if isinstance(likelihood, FixedNoiseGaussianLikelihood):
        return likelihood.noise.mean(dim=-1, keepdim=True).detach().clone()
    if isinstance(likelihood, GaussianLikelihood):
        return likelihood.noise.detach().clone()
    raise ValueError(
        "expected a GaussianLikelihood or FixedNoiseGaussianLikelihood, "
        f"got {type(likelihood).__name__}"
    )


def outcome_scale(model: Model, num_outputs: int | None = None) -> tuple[Tensor, Tensor]:
    """The means and standard deviations of the model's ``Standardize`` (`m` each).

    Args:
        model: The model.
        num_outputs: The ``m`` its ``Standardize`` must have (``MultiTaskGP``: 1); default
            the model's number of outputs, unchecked.

    Raises:
        ValueError: If the outcome transform is not such a ``Standardize`` (or none).
    """
    m = model.num_outputs if num_outputs is None else num_outputs
    transform = getattr(model, "outcome_transform", None)
    dtype = train_x(model).dtype
    if transform is None:
        return torch.zeros(m, dtype=dtype), torch.ones(m, dtype=dtype)
    if type(transform) is not Standardize or (
        num_outputs is not None and transform._m != num_outputs
    ):
        wanted = "Standardize" if num_outputs is None else f"Standardize(m={num_outputs})"
        raise ValueError(
            f"expected a {wanted} outcome transform or none, got {type(transform).__name__}"
        )
    return transform.means.detach().reshape(m), transform.stdvs.detach().reshape(m)


def tracing_points(example_X: Tensor, num_train: int = 0) -> Tensor:
    """Points to trace the prior terms at: never the training inputs themselves (the kernels'
    ``torch.equal(x1, x2)`` shortcut would be frozen in), at least 2 of them, and not
    ``num_train`` of them.

    Args:
        example_X: A `q x d` float64 example input (only its first row is used).
        num_train: ``N``, the number of training points.

    Returns:
        `3 x d` (`4 x d` when ``N`` is 3) points near ``example_X[0]``.
    """
    q = 4 if num_train == 3 else 3
    steps = torch.arange(q, dtype=torch.float64).unsqueeze(-1)
    return example_X[:1] + 0.1 * steps + 0.01 * steps.square()


def frozen_copy(model: ExactGP) -> ExactGP:
    """A detached copy of ``model`` in eval mode (the model itself is not modified).

    Tensors a module keeps from a computation on its parameters (a kernel's cached buffer,
    such as ``LCEAKernel``'s context covariance) are not graph leaves, which ``deepcopy``
    refuses: the copy holds them detached, with the same values.
    """
    memo: dict[int, object] = {}
    for module in model.modules():
        for value in (*module._buffers.values(), *vars(module).values()):
            if isinstance(value, Tensor) and value.grad_fn is not None:
                memo[id(value)] = value.detach().clone()
    frozen = copy.deepcopy(model, memo)
    frozen.requires_grad_(False)
    frozen.eval()  # (not chained: some models' eval returns None)
    return frozen


def exact_posterior(
    frozen: ExactGP,
    prior: PriorTermsModule,
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
        packed = None
        if covar_cache.size(-2) >= PACK_MIN_POINTS:
            packed = pack_upper_triangular(covar_cache)
    return ExactPosterior(
        prior=prior,
        mean_cache=mean_cache,
        covar_cache=covar_cache if packed is None else packed,
        noise=noise,
        y_mean=y_mean,
        y_std=y_std,
        num_train=frozen.train_inputs[0].size(-2),
        eager_kernel_size=gpytorch.settings.max_eager_kernel_size.value(),
        joint_test_covar=not hasattr(ExactGP, "_get_test_prior_mean_and_covariances"),
        min_variance=gpytorch.settings.min_variance.value(torch.float64),
        noise_tasks=noise_tasks,
        tile=0 if packed is None else PACK_TILE,
    )
