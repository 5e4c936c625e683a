"""Joint posterior samples and marginal quantiles from a served mean and covariance, pure torch.

Draws are ``mean + L z``, ``L`` the Cholesky factor eager BoTorch's ``rsample_from_base_samples``
takes, in the order of its sample vector (the family's ``sample_order``): the same base samples
give BoTorch's draws. Quantiles are ``posterior.quantile``'s, bit for bit. See docs/serving.md,
step 11.

Draws that have the served distribution but are not BoTorch's for the same base samples: the
Kronecker family's (BoTorch's are Matheron's rule on `(N + q) m + N m` base samples, `+ q m`
with noise, through eigendecomposition roots of the prior's factors: no factor of the
posterior covariance); a covariance that needs jitter on one side only (the served one equals
BoTorch's to about 1e-13), or so ill-conditioned that this moves its factor; one that fails
every jitter (BoTorch then takes an eigendecomposition root, `cholesky` raises). SAAS is refused
by the handler: its served moments are its mixture's, and the mixture is not Gaussian.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gp_serve.handler.gp_artifact import SampleOrder

# ``psd_safe_cholesky``'s first jitter per dtype (linear_operator ``settings.cholesky_jitter``:
# 1e-8 for float64, 1e-6 for float32, in 0.5.3 and 0.6.1 alike), multiplied by 10 per try (each
# increment rounded to torch's default dtype, float32 unless set, as upstream's is).
CHOLESKY_JITTER = {torch.float64: 1e-8, torch.float32: 1e-6}
# Its number of tries: linear_operator's ``settings.cholesky_max_tries`` is 3 (0.5.3 and 0.6.1),
# but ``import botorch`` sets it to 6 (0.12.0 and 0.18.1 alike), which eager BoTorch then uses:
# the last try adds 1e-3 to a float64 diagonal.
CHOLESKY_MAX_TRIES = 6


class NotPositiveDefinite(ValueError):
    """A joint covariance has no Cholesky factor, even with the most jitter `cholesky` adds."""


def standard_normal(n: int, seed: int, q: int, m: int) -> Tensor:
    """The base samples of a request ``{"samples": {"n": n, "seed": seed}}``.

    The values are those of torch's CPU generator (``torch.Generator()``, Mersenne Twister)
    seeded with ``seed``: the same on every worker, run and format.

    Args:
        n: The number of samples.
        seed: The generator's seed.
        q: The number of points.
        m: The number of outputs.

    Returns:
        `n x q x m` float64 standard normal values.
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, q, m, generator=generator, dtype=torch.float64)


def cholesky(covariance: Tensor, *, max_tries: int = CHOLESKY_MAX_TRIES) -> Tensor:
    """The lower Cholesky factor, as linear_operator's ``psd_safe_cholesky`` computes it.

    Where ``torch.linalg.cholesky_ex`` fails, jitter ``j * 10**i`` (``j`` =
    `CHOLESKY_JITTER`, ``i`` = 0, 1, ...) is put on the diagonal of the matrices that failed
    (added as increments over the previous try, as upstream does), up to ``max_tries`` times.

    Args:
        covariance: `... x N x N` symmetric matrices (float64 or float32).
        max_tries: The number of jitter tries (eager BoTorch's `CHOLESKY_MAX_TRIES`).

    Returns:
        `... x N x N` lower triangular factors.

    Raises:
        NotPositiveDefinite: When a matrix fails every try.
        ValueError: When a matrix has NaN entries, or is neither float64 nor float32.
    """
    factor, info = torch.linalg.cholesky_ex(covariance)
    if not torch.any(info):
        return factor
    if torch.isnan(covariance).any():
        raise ValueError(
            f"expected a covariance without NaN entries, got {int(torch.isnan(covariance).sum())}"
            f" of {covariance.numel()}"
        )
    if covariance.dtype not in CHOLESKY_JITTER:
        raise ValueError(f"expected a float64 or float32 covariance, got {covariance.dtype}")
    jitter = CHOLESKY_JITTER[covariance.dtype]
    jittered = covariance.clone()
    previous = 0.0
    added = jitter
    for i in range(max_tries):
        added = jitter * (10**i)
        # (upstream's expression, kept: its increment has torch's default dtype)
        increment = ((info > 0) * (added - previous)).unsqueeze(-1).expand(*jittered.shape[:-1])
        jittered.diagonal(dim1=-1, dim2=-2).add_(increment)
        previous = added
        factor, info = torch.linalg.cholesky_ex(jittered)
        if not torch.any(info):
            return factor
    raise NotPositiveDefinite(
        "the joint covariance of these points is not positive definite even with jitter "
        f"{added:.0e} added: expected points farther apart or observation_noise true"
    )


def _factor(covariance: Tensor) -> Tensor:
    """`cholesky`, with linear_operator's ``_cholesky`` scalar case (``clamp_min(0).sqrt()``)."""
    if covariance.size(-1) == 1:
        return covariance.clamp_min(0.0).sqrt()
    return cholesky(covariance)


def draw(mean: Tensor, covariance: Tensor, base_samples: Tensor, order: SampleOrder) -> Tensor:
    """Joint samples ``mean + L z``, as eager BoTorch draws them from the same base samples.

    ``L`` is the lower Cholesky factor of the covariance in ``order`` and ``z`` the base
    samples read in that order: output-major (entry ``t*q + i`` is ``base_samples[:, i, t]``)
    or point-major (entry ``i*m + t``). BoTorch reads its base samples (the served ones,
    reshaped to ``posterior.base_sample_shape``) the same way: a non-interleaved
    ``MultitaskMultivariateNormal`` (output-major) has them transposed to its order
    (``_reshape_base_samples_non_interleaved``), an interleaved one (point-major) reads them
    as they are, and ``MultivariateNormal.rsample`` returns ``root @ z + loc`` with
    ``root_decomposition()`` a Cholesky factor at every size (``rsample_from_base_samples``
    turns the Lanczos root off). An output-major covariance whose cross-output blocks are
    all exactly zero is factored one `q x q` block per output (jitter only where a block
    needs it), as BoTorch's ``BlockDiagLinearOperator`` (the "single" and "list" families)
    is; a `1 x 1` one is ``clamp_min(0).sqrt()``, as linear_operator's ``_cholesky``.

    Args:
        mean: `q x m`, the served mean.
        covariance: `(q*m) x (q*m)`, the served covariance (output-major).
        base_samples: `n x q x m` standard normal values (`standard_normal`).
        order: The family's ``sample_order`` (`gp_artifact.SAMPLE_ORDERS`).

    Returns:
        `n x q x m` samples.

    Raises:
        NotPositiveDefinite: When the covariance has no Cholesky factor (`cholesky`).
        ValueError: When the shapes do not agree or ``order`` is unknown.
    """
    if mean.dim() != 2:
        raise ValueError(f"expected a q x m mean, got shape {tuple(mean.shape)}")
    q, m = mean.shape
    if covariance.shape != (q * m, q * m):
        raise ValueError(
            f"expected a {q * m} x {q * m} covariance, got shape {tuple(covariance.shape)}"
        )
    if base_samples.dim() != 3 or base_samples.shape[1:] != (q, m):
        raise ValueError(
            f"expected n x {q} x {m} base samples, got shape {tuple(base_samples.shape)}"
        )
    n = base_samples.size(0)
    if order == "point-major":
        # entry (i*m + t, j*m + s) is the served (t*q + i, s*q + j)
        interleaved = covariance.view(m, q, m, q).permute(1, 0, 3, 2).reshape(q * m, q * m)
        root = _factor(interleaved)
        z = base_samples.reshape(n, q * m).t()
        samples = root @ z + mean.reshape(q * m, 1)
        return samples.t().reshape(n, q, m)
    if order != "output-major":
        raise ValueError(f"expected order 'output-major' or 'point-major', got {order!r}")
    blocks = covariance.view(m, q, m, q)
    loc = mean.t().reshape(m * q, 1)
    z = base_samples.transpose(1, 2).reshape(n, m * q).t()
    off_diagonal = ~torch.eye(m, dtype=torch.bool).view(m, 1, m, 1).expand(m, q, m, q)
    if m > 1 and not torch.any(blocks[off_diagonal]):
        diagonal = blocks.diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # m x q x q
        root = _factor(diagonal)
        samples = (root @ z.view(m, q, n)).reshape(m * q, n) + loc
    else:
        samples = _factor(covariance) @ z + loc
    return samples.t().reshape(n, m, q).transpose(1, 2)


def quantiles(mean: Tensor, variance: Tensor, probabilities: Tensor) -> Tensor:
    """Marginal quantiles, as ``GPyTorchPosterior.quantile`` computes them (bit for bit).

    That is ``Normal(mean, variance.sqrt()).icdf(p)``: ``mean + sqrt(variance) *
    erfinv(2 p - 1) * sqrt(2)``, in the dtype of ``probabilities`` for ``erfinv`` (as
    BoTorch's, given the same tensor: pass float64 for float64 quantiles).

    Args:
        mean: `q x m`, the served mean.
        variance: `q x m`, the served variance (of ``mean_var`` or ``mean_var_noisy``).
        probabilities: `len`, each in ``(0, 1)``.

    Returns:
        `len x q x m` quantiles (row ``k`` for ``probabilities[k]``).

    Raises:
        ValueError: When ``probabilities`` is not a non-empty vector of values in ``(0, 1)``.
    """
    if probabilities.dim() != 1 or probabilities.numel() == 0:
        raise ValueError(
            f"expected a non-empty vector of probabilities, got shape {tuple(probabilities.shape)}"
        )
    inside = (probabilities > 0) & (probabilities < 1)
    if not bool(inside.all()):
        outside = probabilities[~inside].tolist()
        raise ValueError(f"expected probabilities in (0, 1), got {outside}")
    value = probabilities.view(-1, 1, 1)
    return mean + variance.sqrt() * torch.erfinv(2 * value - 1) * math.sqrt(2)
