"""The fully Bayesian family: ``SaasFullyBayesianSingleTaskGP`` (SAAS priors, MCMC samples).

The engine's `ExactPosterior` over the batch of ``S`` MCMC samples, and the moments of
their equal-weight mixture scripted with eager's formulas (``mixture_mean``, ...); the
artifact needs neither BoTorch nor the MCMC libraries. See docs/export.md, "Model families".
"""

from __future__ import annotations

import torch
from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP
from torch import Tensor

from gp_serve.export import engine
from gp_serve.export.compiler import TORCHSCRIPT, Compiled, Compiler
from gp_serve.export.prior_terms import trace_prior_terms


class MixturePosterior(engine.CompiledPosterior):
    """The moments of the equal-weight mixture of ``S`` single-output GP posteriors."""

    def __init__(
        self, samples: engine.ExactPosterior | torch.jit.ScriptModule, num_samples: int
    ) -> None:
        """
        Args:
            samples: An `ExactPosterior` over the ``S`` samples (its "outputs").
            num_samples: ``S``.
        """
        super().__init__()
        self.samples = samples
        self.num_samples = num_samples

    def _marginal(self, X: Tensor, noisy: bool) -> tuple[Tensor, Tensor]:
        """Mixture mean and variance, both `q x 1`, from the per-sample `q x S` moments as
        ``GaussianMixturePosterior`` computes them."""
        means, variances = self.samples.mean_var_noisy(X) if noisy else self.samples.mean_var(X)
        s = self.num_samples
        t1 = variances.sum(dim=-1) / s
        t2 = means.pow(2).sum(dim=-1) / s
        t3 = -(means.sum(dim=-1) / s).pow(2)
        return means.mean(dim=-1).unsqueeze(-1), (t1 + t2 + t3).unsqueeze(-1)

    def _joint(self, X: Tensor, noisy: bool) -> tuple[Tensor, Tensor]:
        """Mixture mean `q x 1` and covariance `q x q`."""
        means, blocks = self.samples.blocks(X, noisy)  # q x S, S x q x q
        mean = means.mean(dim=-1)
        t1 = blocks.sum(dim=0) / self.num_samples
        diff = (means - mean.unsqueeze(-1)).transpose(0, 1).unsqueeze(-1)  # S x q x 1
        t2 = torch.matmul(diff, diff.transpose(-1, -2)).sum(dim=0) / self.num_samples
        return mean.unsqueeze(-1), t1 + t2


def trace_fully_bayesian(
    model: SaasFullyBayesianSingleTaskGP, example_X: Tensor, compiler: Compiler = TORCHSCRIPT
) -> Compiled:
    """Compile the mixture posterior of a fitted (MCMC-sampled) SAAS GP.

    Args:
        model: A ``SaasFullyBayesianSingleTaskGP`` with its MCMC samples loaded
            (``fit_fully_bayesian_model_nuts`` or ``load_mcmc_samples``), float64.
        example_X: A `q x d` example input (raw), any q >= 1.
        compiler: See `export.compiler`.

    Returns:
        A ScriptModule with the four methods (one output: mean `q x 1`, covariance `q x q`).
    """
    engine.check_model(model, example_X)
    if model.num_outputs != 1:
        raise ValueError(
            f"expected a single-output fully Bayesian model, got {model.num_outputs} outputs"
        )
    try:
        batch = model.batch_shape
    except RuntimeError:  # BoTorch raises "Model has not been fitted" before its samples
        batch = torch.Size()
    if len(batch) != 1:
        raise ValueError(
            "expected a fitted fully Bayesian model (a batch of MCMC samples), "
            f"got batch shape {tuple(batch)}: fit it or load its samples first"
        )
    num_samples = batch[0]
    frozen = engine.frozen_copy(model)
    example_X = example_X.detach().to(torch.float64)
    y_mean, y_std = engine.outcome_scale(frozen)  # (one output: shared by the samples)
    points = engine.tracing_points(example_X, frozen.train_inputs[0].size(-2))
    prior = trace_prior_terms(frozen, points, batch=num_samples, compiler=compiler)
    samples = engine.exact_posterior(
        frozen,
        prior,
        example_X,
        engine.observation_noise(frozen),
        y_mean.expand(num_samples).clone(),
        y_std.expand(num_samples).clone(),
    )
    return compiler.finish(MixturePosterior(compiler.finish(samples), num_samples))
