"""The Kronecker multi-task family: ``KroneckerMultiTaskGP`` (all outputs at the same points).

Served as the model's exact joint posterior (the one BoTorch samples from), not BoTorch's
closed-form ``posterior``, which is off for unequal task noises. See docs/export.md,
"Kronecker multi-task GP: which "eager" is served".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gpytorch
import torch
from botorch.models import KroneckerMultiTaskGP
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.distributions import MultitaskMultivariateNormal
from gpytorch.likelihoods import MultitaskGaussianLikelihood
from torch import Tensor

from gp_serve.export import engine
from gp_serve.export.compiler import TORCHSCRIPT, Compiled, Compiler
from gp_serve.export.prior_terms import trace_prior_terms


class KroneckerPosterior(engine.CompiledPosterior):
    """Exact posterior of a ``KroneckerMultiTaskGP`` with ``m`` outputs, for TorchScript.

    The prior over outputs ``t`` at points ``x`` is ``K_x(x, x') K_T[t, t']`` (task
    covariance ``K_T``, `m x m`) with observation noise ``I_N (x) S`` (task noise ``S``,
    `m x m`). With ``A = K_XX (x) K_T + I_N (x) S``, the posterior at `q` points is,
    output-major (row ``t*q + i``, non-zero cross-output blocks)::

        mean  = mu(x*) + K_*X alpha K_T                  (alpha = A^-1 (y - mu(X)), `N x m`)
        cov   = K_T (x) K_**  -  (K_T (x) K_*X) A^-1 (K_T (x) K_X*)

    as GPyTorch's exact prediction (``model(x)``) computes it. ``A^-1`` is never formed:
    with ``S = L L^T``, ``K_XX = U diag(l) U^T`` and ``L^-1 K_T L^-T = V diag(s) V^T``,
    ``A^-1 = (I (x) L^-T V) (U (x) I) D (U (x) I)^T (I (x) V^T L^-1)`` with `N x m` weights
    ``D[a, b] = 1 / (l_a s_b + 1)`` in ``(0, 1]``. The eigendecompositions are computed once
    at export; prediction costs one single-output GP per task eigenvector, `O(m q^2 N)`.
    """

    if TYPE_CHECKING:
        # (for the type checker only: TorchScript cannot resolve class-level annotations
        # written as strings; it types the attributes from their values when it compiles)
        prior: engine.PriorTermsModule
        alpha: Tensor
        task_covar: Tensor
        eigvecs: Tensor
        task_factor: Tensor
        weights: Tensor
        task_noise: Tensor
        y_mean: Tensor
        y_std: Tensor

    def __init__(
        self,
        prior: engine.PriorTermsModule,
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
            prior: The traced prior terms of the model's data kernel
                (``export.prior_terms.PriorTerms``, unbatched).
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
        for name, value in (
            ("alpha", alpha),
            ("task_covar", task_covar),
            ("eigvecs", eigvecs),
            ("task_factor", task_factor),
            ("weights", weights),
            ("task_noise", task_noise),
            ("y_mean", y_mean),
            ("y_std", y_std),
        ):
            self.register_buffer(name, value)
        self.num_outputs = y_mean.numel()
        self.min_variance = min_variance

    def _mean(self, x: Tensor, cross: Tensor) -> Tensor:
        latent = self.prior.prior_mean(x) + (cross @ self.alpha) @ self.task_covar
        return self.y_mean + self.y_std * latent

    def _joint(self, X: Tensor, noisy: bool) -> tuple[Tensor, Tensor]:
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
        rows = [torch.cat(update[s * m : (s + 1) * m].unbind(0), dim=1) for s in range(m)]
        update = torch.cat(rows, dim=0)
        covar = _kron(self.task_covar, self.prior.test_test(x)) - update
        if noisy:
            covar = covar + _kron(self.task_noise, torch.eye(q, dtype=x.dtype))
        scale = self.y_std.repeat_interleave(q)
        covar = (scale.unsqueeze(-1) * covar) * scale
        return self._mean(x, cross), covar

    def _marginal(self, X: Tensor, noisy: bool) -> tuple[Tensor, Tensor]:
        """Mean and variance, `q x m` each (`O(q (N + m))` memory)."""
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


def task_noise(model: KroneckerMultiTaskGP) -> Tensor:
    """The `m x m` noise covariance of one point's ``m`` observations (``S``)."""
    shape = torch.Size([1, model.num_outputs])
    return model.likelihood._shaped_noise_covar(shape).to_dense().detach()


def kronecker_posterior(
    frozen: KroneckerMultiTaskGP, prior: engine.PriorTermsModule
) -> KroneckerPosterior:
    """The caches of a frozen model, computed once (see `KroneckerPosterior`)."""
    with torch.no_grad():
        train_x = engine.train_x(frozen)
        n, m = train_x.size(-2), frozen.num_outputs
        task_covar = frozen._task_covar_matrix.to_dense().detach()
        noise = task_noise(frozen)
        data_covar = frozen.covar_module.data_covar_module(train_x).to_dense()
        eigvals, eigvecs = torch.linalg.eigh(data_covar)
        lower = torch.linalg.cholesky(noise)
        whitened = torch.linalg.solve_triangular(
            lower, torch.linalg.solve_triangular(lower, task_covar, upper=False).t(), upper=False
        )
        task_eigvals, task_eigvecs = torch.linalg.eigh((whitened + whitened.t()) / 2)
        # L^-T V, so that B = K_T L^-T V and the noise whitening folds into it
        whitening = torch.linalg.solve_triangular(lower.t(), task_eigvecs, upper=True)
        weights = 1 / (eigvals.unsqueeze(-1) * task_eigvals + 1)  # N x m
        residual = frozen.train_targets - frozen.mean_module(train_x)  # N x m
        # A^-1 vec(R) = vec(U ((U^T R L^-T V) * D) (L^-T V)^T)
        inner = (eigvecs.t() @ residual @ whitening) * weights
        alpha = eigvecs @ inner @ whitening.t()
        y_mean, y_std = engine.outcome_scale(frozen)
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


def trace_kronecker(
    model: KroneckerMultiTaskGP, example_X: Tensor, compiler: Compiler = TORCHSCRIPT
) -> Compiled:
    """Compile the exact posterior of a fitted ``KroneckerMultiTaskGP`` into TorchScript.

    The model is not modified: a detached copy is compiled.

    Args:
        model: A fitted float64 ``KroneckerMultiTaskGP`` without batch dimensions, any
            input transform, a ``Standardize`` outcome transform or none, a
            ``MultitaskGaussianLikelihood`` of any rank.
        example_X: A `q x d` example input (raw), any q >= 1.
        compiler: See `export.compiler`.

    Returns:
        A ScriptModule (or eager module) with ``forward``/``forward_noisy`` (mean `q x m`,
        output-major covariance `(q*m) x (q*m)`) and ``mean_var``/``mean_var_noisy``
        (`q x m` each).
    """
    engine.check_model(model, example_X)
    if not isinstance(model.likelihood, MultitaskGaussianLikelihood):
        raise ValueError(
            f"expected a MultitaskGaussianLikelihood, got {type(model.likelihood).__name__}"
        )
    frozen = engine.frozen_copy(model)
    points = engine.tracing_points(example_X.detach().double(), frozen.train_inputs[0].size(-2))
    # (one batch: the data kernel's, shared by the outputs)
    prior = trace_prior_terms(
        frozen, points, batch=1, kernel=frozen.covar_module.data_covar_module, compiler=compiler
    )
    return compiler.finish(kronecker_posterior(frozen, prior))


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
        posterior = GPyTorchPosterior(
            MultitaskMultivariateNormal(
                latent.mean, latent.lazy_covariance_matrix, interleaved=True
            )
        )
        transform = getattr(model, "outcome_transform", None)
        if transform is not None:
            posterior = transform.untransform_posterior(posterior)
        q, m = X.size(-2), model.num_outputs
        covariance = posterior.distribution.covariance_matrix
        return {
            "mean": posterior.mean,
            "variance": posterior.variance,
            "covariance": output_major(covariance, q, m),
        }
