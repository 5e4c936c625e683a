"""The Kronecker multi-task family: ``KroneckerMultiTaskGP`` (all outputs at the same points).

The model's prior over outputs ``t`` at points ``x`` is ``K_x(x, x') K_T[t, t']`` with a
learned task covariance ``K_T`` (`m x m`) and observation noise ``I_N (x) S`` with a task
noise covariance ``S`` (`m x m`). Its exact posterior at `q` test points is, output-major
(row ``t*q + i``), with ``A = K_XX (x) K_T + I_N (x) S``::

    mean  = mu(x*) + K_*X alpha K_T                      (alpha = A^-1 (y - mu(X)), `N x m`)
    cov   = K_T (x) K_**  -  (K_T (x) K_*X) A^-1 (K_T (x) K_X*)

which is what GPyTorch's exact prediction (``model(x)``) computes and the joint
covariance BoTorch's ``MultitaskGPPosterior`` draws its samples from. ``A^-1`` is never
formed: with ``S = L L^T``, ``K_XX = U diag(l) U^T`` and ``L^-1 K_T L^-T = V diag(s) V^T``,
``A^-1 = (I (x) L^-T V) (U (x) I) D (U (x) I)^T (I (x) V^T L^-1)`` with the `N x m` weights
``D[a, b] = 1 / (l_a s_b + 1)`` (all in ``(0, 1]``: the whitened form is well conditioned).
The eigendecompositions are computed once at export; at prediction the cost is that of a
single-output GP per task eigenvector, `O(m q^2 N)` for the covariance.

BoTorch's own ``posterior`` for this class is not used as the reference: its closed-form
variance treats the task noise as diagonal in the task covariance's eigenbasis, which holds
only when every task has the same noise (otherwise it differs from its own samples by tens
of percent), and BoTorch 0.12's posterior mean ignores an input transform's effect on its
cached training terms. See docs/export.md, "Kronecker multi-task GP".
"""

from __future__ import annotations

from typing import Tuple

import gpytorch
import torch
from botorch.models import KroneckerMultiTaskGP
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.distributions import MultitaskMultivariateNormal
from gpytorch.likelihoods import MultitaskGaussianLikelihood
from gpytorch.settings import lazily_evaluate_kernels, trace_mode
from torch import Tensor, nn

from gp_serve.export import posterior as single_task
from gp_serve.export.compiler import TORCHSCRIPT, Compiler


class KroneckerPriorTerms(nn.Module):
    """Input transform, prior mean and data-kernel blocks of a ``KroneckerMultiTaskGP``.

    The model is held outside the module tree, so tracing bakes its fitted
    hyperparameters and transformed training inputs in as constants.
    """

    def __init__(self, model: KroneckerMultiTaskGP) -> None:
        super().__init__()
        self.__dict__["_model"] = model
        self._train_x: Tensor = model.train_inputs[0].detach()

    def inputs(self, X: Tensor) -> Tensor:
        """`q x d` raw points to the model's `q x d` test inputs."""
        return self._model.transform_inputs(X)

    def prior_mean(self, x: Tensor) -> Tensor:
        """Prior mean, `q x m`."""
        return self._model.mean_module(x)

    def cross(self, x: Tensor) -> Tensor:
        """Data kernel between test and training points, `q x N`."""
        return self._kernel(x, self._train_x)

    def test_test(self, x: Tensor) -> Tensor:
        """Data kernel among the test points, `q x q`."""
        return self._kernel(x, x)

    def diag(self, x: Tensor) -> Tensor:
        """Diagonal of the test data kernel, `q`."""
        return self._model.covar_module.data_covar_module(x, x, diag=True)

    def _kernel(self, x1: Tensor, x2: Tensor) -> Tensor:
        with lazily_evaluate_kernels(False):
            return self._model.covar_module.data_covar_module(x1, x2).to_dense()


class KroneckerPosterior(nn.Module):
    """Exact posterior of a ``KroneckerMultiTaskGP`` with ``m`` outputs, for TorchScript.

    Covariances are output-major (entry ``t*q + i`` is output ``t`` at point ``i``), with
    non-zero cross-output blocks.
    """

    def __init__(
        self,
        prior: nn.Module,
        alpha: Tensor,
        task_covar: Tensor,
        eigvecs: Tensor,
        task_factor: Tensor,
        weights: Tensor,
        task_noise: Tensor,
        y_mean: Tensor,
        y_std: Tensor,
        min_variance: float,
    ) -> None:
        """
        Args:
            prior: The traced `KroneckerPriorTerms` of the model.
            alpha: `N x m`, ``A^-1 (y - mu(X))`` in the model's interleaved order.
            task_covar: `m x m`, the task covariance ``K_T``.
            eigvecs: `N x N`, ``U`` (eigenvectors of the training data kernel).
            task_factor: `m x m`, ``B = K_T L^-T V``.
            weights: `N x m`, ``D``.
            task_noise: `m x m`, the task noise covariance ``S``.
            y_mean: `m`, the outcome transform's means (zeros without one).
            y_std: `m`, its standard deviations (ones without one).
            min_variance: GPyTorch's ``min_variance`` for float64.
        """
        super().__init__()
        self.prior = prior
        for name, value in (("alpha", alpha), ("task_covar", task_covar), ("eigvecs", eigvecs),
                            ("task_factor", task_factor), ("weights", weights),
                            ("task_noise", task_noise), ("y_mean", y_mean), ("y_std", y_std)):
            self.register_buffer(name, value)
        self.num_outputs = y_mean.numel()
        self.min_variance = min_variance

    def forward(self, X: Tensor) -> Tuple[Tensor, Tensor]:
        """Posterior mean `q x m` and output-major covariance `(q*m) x (q*m)` at `q x d` ``X``."""
        return self._mean_covariance(X, False)

    @torch.jit.export
    def forward_noisy(self, X: Tensor) -> Tuple[Tensor, Tensor]:
        """As `forward`, with observation noise (``observation_noise=True``)."""
        return self._mean_covariance(X, True)

    @torch.jit.export
    def mean_var(self, X: Tensor) -> Tuple[Tensor, Tensor]:
        """Posterior mean and variance, both `q x m` (`O(q (N + m))` memory)."""
        return self._mean_variance(X, False)

    @torch.jit.export
    def mean_var_noisy(self, X: Tensor) -> Tuple[Tensor, Tensor]:
        """As `mean_var`, with observation noise (``observation_noise=True``)."""
        return self._mean_variance(X, True)

    def _mean(self, x: Tensor, cross: Tensor) -> Tensor:
        latent = self.prior.prior_mean(x) + (cross @ self.alpha) @ self.task_covar
        return self.y_mean + self.y_std * latent

    def _mean_covariance(self, X: Tensor, noisy: bool) -> Tuple[Tensor, Tensor]:
        x = self.prior.inputs(X)
        q = x.size(-2)
        m = self.num_outputs
        cross = self.prior.cross(x)
        root = cross @ self.eigvecs  # q x N
        # per task eigenvector b: root diag(D[:, b]) root^T, `m x q x q`
        blocks = (root.unsqueeze(0) * self.weights.transpose(0, 1).unsqueeze(1)) @ root.t()
        pairs = (self.task_factor.unsqueeze(1) * self.task_factor.unsqueeze(0)).reshape(m * m, m)
        update = (pairs @ blocks.flatten(1)).unflatten(1, (q, q))  # (m*m) x q x q
        # block (s, t) of the output-major `(m*q) x (m*q)` update is update[s*m + t]
        # (assembled by concatenation: a permute-and-reshape defeats torch.export's sizes)
        rows = [torch.cat(update[s * m:(s + 1) * m].unbind(0), dim=1) for s in range(m)]
        update = torch.cat(rows, dim=0)
        covar = _kron(self.task_covar, self.prior.test_test(x)) - update
        if noisy:
            covar = covar + _kron(self.task_noise, torch.eye(q, dtype=x.dtype))
        scale = self.y_std.repeat_interleave(q)
        covar = (scale.unsqueeze(-1) * covar) * scale
        return self._mean(x, cross), covar

    def _mean_variance(self, X: Tensor, noisy: bool) -> Tuple[Tensor, Tensor]:
        x = self.prior.inputs(X)
        cross = self.prior.cross(x)
        root = cross @ self.eigvecs
        update = ((root * root) @ self.weights) @ (self.task_factor * self.task_factor).t()
        prior = self.prior.diag(x).unsqueeze(-1) * torch.diagonal(self.task_covar)
        variance = prior - update
        if noisy:
            variance = variance + torch.diagonal(self.task_noise)
        variance = (self.y_std * variance) * self.y_std
        return self._mean(x, cross), variance.clamp_min(self.min_variance)


def _kron(a: Tensor, b: Tensor) -> Tensor:
    """``torch.kron(a, b)`` of `m x m` ``a`` and `q x q` ``b``: the same products, assembled
    block by block (``torch.kron``, or a broadcast product reshaped, defeats torch.export's
    symbolic sizes: it specialises ``q``)."""
    m = a.size(0)
    return torch.cat([torch.cat([a[s, t] * b for t in range(m)], dim=1) for s in range(m)], dim=0)


def _check_model(model: KroneckerMultiTaskGP, example_X: Tensor) -> None:
    train_x = model.train_inputs[0]
    if train_x.dtype != torch.float64:
        raise ValueError(f"expected a float64 model, got {train_x.dtype}")
    if train_x.dim() != 2:
        raise ValueError(
            "expected a model without batch dimensions (train_X of shape N x d), "
            f"got train inputs of shape {tuple(train_x.shape)}"
        )
    if not isinstance(model.likelihood, MultitaskGaussianLikelihood):
        raise ValueError(
            f"expected a MultitaskGaussianLikelihood, got {type(model.likelihood).__name__}")
    d = train_x.size(-1)
    if example_X.dim() != 2 or example_X.size(-1) != d or example_X.size(0) < 1:
        raise ValueError(
            f"expected example_X of shape q x {d} with q >= 1, got {tuple(example_X.shape)}")


def task_noise(model: KroneckerMultiTaskGP) -> Tensor:
    """The `m x m` noise covariance of one point's ``m`` observations (``S``)."""
    shape = torch.Size([1, model.num_outputs])
    return model.likelihood._shaped_noise_covar(shape).to_dense().detach()


def _trace_terms(model: KroneckerMultiTaskGP, example_X: Tensor, compiler: Compiler
                 ) -> nn.Module:
    terms = KroneckerPriorTerms(model)
    points = single_task._tracing_points(example_X, model)
    x = terms.inputs(points)
    methods = {name: x for name in ("prior_mean", "cross", "test_test", "diag")}
    methods["inputs"] = points
    # (see export.prior_terms.trace_prior_terms: the same reasons)
    return compiler.terms(terms, methods, lambda: trace_mode(True))


def kronecker_posterior(frozen: KroneckerMultiTaskGP, prior: nn.Module) -> KroneckerPosterior:
    """The caches of a frozen model, computed once (see the module docstring)."""
    with torch.no_grad():
        train_x = frozen.train_inputs[0]
        n, m = train_x.size(-2), frozen.num_outputs
        task_covar = frozen._task_covar_matrix.to_dense().detach()
        noise = task_noise(frozen)
        data_covar = frozen.covar_module.data_covar_module(train_x).to_dense()
        eigvals, eigvecs = torch.linalg.eigh(data_covar)
        lower = torch.linalg.cholesky(noise)
        whitened = torch.linalg.solve_triangular(
            lower, torch.linalg.solve_triangular(lower, task_covar, upper=False).t(), upper=False)
        task_eigvals, task_eigvecs = torch.linalg.eigh((whitened + whitened.t()) / 2)
        # L^-T V, so that B = K_T L^-T V and the noise whitening folds into it
        whitening = torch.linalg.solve_triangular(lower.t(), task_eigvecs, upper=True)
        weights = 1 / (eigvals.unsqueeze(-1) * task_eigvals + 1)  # N x m
        residual = frozen.train_targets - frozen.mean_module(train_x)  # N x m
        # A^-1 vec(R) = vec(U ((U^T R L^-T V) * D) (L^-T V)^T)
        inner = (eigvecs.t() @ residual @ whitening) * weights
        alpha = eigvecs @ inner @ whitening.t()
        y_mean, y_std = single_task._outcome_scale(frozen)
    return KroneckerPosterior(
        prior=prior,
        alpha=alpha.reshape(n, m),
        task_covar=task_covar,
        eigvecs=eigvecs,
        task_factor=task_covar @ whitening,
        weights=weights,
        task_noise=noise,
        y_mean=y_mean,
        y_std=y_std,
        min_variance=gpytorch.settings.min_variance.value(torch.float64),
    )


def trace_kronecker(model: KroneckerMultiTaskGP, example_X: Tensor,
                    compiler: Compiler = TORCHSCRIPT) -> nn.Module:
    """Compile the exact posterior of a fitted ``KroneckerMultiTaskGP`` into TorchScript.

    The model is not modified: a detached copy is compiled.

    Args:
        model: A fitted float64 ``KroneckerMultiTaskGP`` without batch dimensions, any
            input transform, a ``Standardize`` outcome transform or none, a
            ``MultitaskGaussianLikelihood`` of any rank.
        example_X: A `q x d` example input (raw), any q >= 1.
        compiler: See `export.compiler`.

    Returns:
        A ScriptModule (or eager module) with ``forward``/``forward_noisy`` (mean `q x m`, output-major
        covariance `(q*m) x (q*m)`) and ``mean_var``/``mean_var_noisy`` (`q x m` each).
    """
    _check_model(model, example_X)
    frozen = single_task.frozen_copy(model)
    posterior = kronecker_posterior(
        frozen, _trace_terms(frozen, example_X.detach().double(), compiler))
    return compiler.finish(posterior)


def output_major(covariance: Tensor, q: int, m: int) -> Tensor:
    """An interleaved (point-major, ``i*m + t``) `(q*m) x (q*m)` covariance, output-major."""
    return covariance.reshape(q, m, q, m).permute(1, 0, 3, 2).reshape(q * m, q * m)


def eager_moments(model: KroneckerMultiTaskGP, X: Tensor, noisy: bool) -> dict[str, Tensor]:
    """The exact posterior by eager GPyTorch and BoTorch: the reference for the gate.

    GPyTorch's exact prediction (``model(x)``, with the likelihood for observation
    noise) on the transformed inputs, untransformed by the model's own outcome
    transform (``untransform_posterior``), the covariance made output-major.
    """
    with torch.no_grad():
        model.eval()
        latent = model(model.transform_inputs(X))
        if noisy:
            latent = model.likelihood(latent)
        posterior = GPyTorchPosterior(MultitaskMultivariateNormal(
            latent.mean, latent.lazy_covariance_matrix, interleaved=True))
        transform = getattr(model, "outcome_transform", None)
        if transform is not None:
            posterior = transform.untransform_posterior(posterior)
        q, m = X.size(-2), model.num_outputs
        covariance = posterior.distribution.covariance_matrix
        return {"mean": posterior.mean, "variance": posterior.variance,
                "covariance": output_major(covariance, q, m)}


def training_tensors(model: KroneckerMultiTaskGP) -> list[Tensor]:
    """The tensors the model was conditioned on (for a hash of the training data)."""
    return [model.train_inputs[0], model.train_targets]
