"""The exactness gate: a compiled posterior must equal eager BoTorch before it ships.

Every method of every format is compared with the eager posterior at fresh seeded points;
see docs/export.md, "Design: the corrected posterior".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from botorch.models.model import Model
from torch import Tensor

from gp_serve.handler import gp_artifact
from gp_serve.handler.gp_formats import PosteriorModule

TOLERANCE = 1e-8
GATE_SIZES = (1, 2, 7, 64, 257)
GATE_SEED = 1234


class ExportGateError(RuntimeError):
    """The compiled posterior differs from eager BoTorch beyond the tolerance."""


@dataclass
class GateReport:
    """Relative errors of every check; see `relative_error`."""

    tolerance: float
    checks: list[dict] = field(default_factory=list)

    @property
    def worst(self) -> dict:
        return max(self.checks, key=lambda check: check["relative_error"])

    def to_dict(self) -> dict:
        worst = self.worst
        return {
            "tolerance": self.tolerance,
            "max_relative_error": worst["relative_error"],
            "worst_case": describe(worst),
            "checks": [dict(check) for check in self.checks],
        }


def describe(check: dict) -> str:
    """``"<method> q=<q> <quantity>"``, then where its largest error is, if it was located
    (`locate`): ``" at point 3, output 1 (model.models.1)"``."""
    where = f" at {check['where']}" if check.get("where") else ""
    return f"{check['method']} q={check['q']} {check['quantity']}{where}"


def output_part(model: Model, output: int) -> str:
    """``"output <t>"``: the name of output ``t``'s part of a model (the default of a
    family's ``output_part``)."""
    return f"output {output}"


def locate(
    actual: Tensor, expected: Tensor, q: int, part: Callable[[int], str], joint: bool
) -> str | None:
    """Where ``actual`` differs most from ``expected``: the point(s) and output(s).

    Args:
        actual: `q x m` means or variances, or the `(q*m) x (q*m)` output-major covariance.
        expected: The same shape.
        q: The number of points.
        part: The name of an output's part of the model (``Family.output_part``).
        joint: Whether the tensors are covariances.

    Returns:
        ``"point i, <part of t>"`` (``"points i and j, <part of t> and <part of u>"`` for a
        covariance entry), or None where the error cannot be located (shapes differ, or
        the answer is not finite).
    """
    if actual.shape != expected.shape or not torch.isfinite(actual).all():
        return None
    flat = int((actual - expected).abs().argmax())
    if not joint:
        point, output = divmod(flat, actual.size(-1))
        return f"point {point}, {part(output)}"
    row, column = divmod(flat, actual.size(-1))
    (t, i), (u, j) = divmod(row, q), divmod(column, q)
    if (t, i) == (u, j):
        return f"point {i}, {part(t)}"
    outputs = part(t) if t == u else f"{part(t)} and {part(u)}"
    return f"points {i} and {j}, {outputs}"


def relative_error(actual: Tensor, expected: Tensor) -> float:
    """``max |actual - expected| / max |expected|`` (the max-norm relative error).

    Args:
        actual: Any shape.
        expected: The same shape as ``actual``.

    Returns:
        The relative error; ``inf`` if the shapes differ or anything is not finite.
    """
    if actual.shape != expected.shape or not torch.isfinite(actual).all():
        return float("inf")
    scale = expected.abs().max().item()
    error = (actual - expected).abs().max().item()
    return error / scale if scale > 0 else error


def sample_points(bounds: Tensor, q: int, seed: int) -> Tensor:
    """`q x d` points uniform in ``bounds`` widened by 10% on each side.

    Args:
        bounds: `d x 2` lower and upper bounds.
        q: Number of points.
        seed: Seed of the generator.
    """
    generator = torch.Generator().manual_seed(seed)
    lower, upper = bounds[:, 0], bounds[:, 1]
    width = (upper - lower).clamp_min(1e-12)
    unit = torch.rand(q, bounds.size(0), generator=generator, dtype=torch.float64)
    return lower - 0.1 * width + 1.2 * width * unit


def eager_moments(model: Model, X: Tensor, noisy: bool) -> dict[str, Tensor]:
    """Eager BoTorch's posterior mean, variance and covariance at ``X``, as dense tensors.

    For a fully Bayesian model (a mixture over MCMC samples) these are the mixture's
    (``mixture_mean``, ``mixture_variance``, ``mixture_covariance_matrix``).
    """
    with torch.no_grad():
        # (a GPyTorchPosterior, or a GaussianMixturePosterior with the mixture's moments)
        eager: Any = model.posterior(X, observation_noise=noisy)
        if hasattr(eager, "mixture_mean"):
            moments = {
                "mean": eager.mixture_mean,
                "variance": eager.mixture_variance,
                "covariance": eager.mixture_covariance_matrix,
            }
        else:
            moments = {
                "mean": eager.mean,
                "variance": eager.variance,
                "covariance": eager.distribution.covariance_matrix,
            }
    return {
        key: value.to_dense() if hasattr(value, "to_dense") else value
        for key, value in moments.items()
    }


def variance_of(covariance: Tensor, q: int) -> Tensor:
    """The `q x m` variances a full answer serves: its output-major `(q*m) x (q*m)`
    covariance's diagonal, clamped at the contract's ``MIN_VARIANCE`` as eager's are."""
    return covariance.diagonal().reshape(-1, q).t().clamp_min(gp_artifact.MIN_VARIANCE)


def check(
    module: PosteriorModule,
    model: Model,
    bounds: Tensor,
    sizes: tuple[int, ...] = GATE_SIZES,
    tolerance: float = TOLERANCE,
    reference: Callable[[Model, Tensor, bool], dict[str, Tensor]] = eager_moments,
    part: Callable[[Model, int], str] = output_part,
) -> GateReport:
    """Compare every method of ``module`` with the eager posterior (``reference``).

    Args:
        module: The compiled posterior in any format (ideally as loaded back from disk:
            a ScriptModule, or ``gp_formats``' pt2 and ONNX posteriors).
        model: The fitted model it was compiled from.
        bounds: `d x 2` input bounds for the fresh test points.
        sizes: Numbers of points to check.
        tolerance: Largest allowed `relative_error`.
        reference: The eager moments (default: ``model.posterior``'s, `eager_moments`;
            the export passes its family's, `export.families.eager_moments`).
        part: The name of an output's part of ``model``, for the report's ``where``
            (default `output_part`; the export passes its family's).

    Returns:
        The report of every check.

    Raises:
        ExportGateError: If any check exceeds the tolerance, naming the worst case.
    """
    report = GateReport(tolerance=tolerance)
    for q in sizes:
        X = sample_points(bounds, q, GATE_SEED + q)
        for noisy in (False, True):
            joint, marginal = (
                gp_artifact.method_name("full", noisy),
                gp_artifact.method_name("diag", noisy),
            )
            expected = reference(model, X, noisy)
            with torch.no_grad():
                mean, covariance = getattr(module, joint)(X)
                mv_mean, variance = getattr(module, marginal)(X)
            pairs = {
                (joint, "mean"): mean,
                (joint, "covariance"): covariance,
                (joint, "variance"): variance_of(covariance, q),
                (marginal, "mean"): mv_mean,
                (marginal, "variance"): variance,
            }
            for (method, quantity), actual in pairs.items():
                error = relative_error(actual, expected[quantity])
                where = locate(
                    actual,
                    expected[quantity],
                    q,
                    lambda t: part(model, t),
                    joint=quantity == "covariance",
                )
                report.checks.append(
                    {
                        "method": method,
                        "q": q,
                        "quantity": quantity,
                        "relative_error": error,
                        "where": where,
                    }
                )
    worst = report.worst
    if not worst["relative_error"] <= tolerance:
        raise ExportGateError(
            f"exactness gate failed: {describe(worst)} differs from eager BoTorch by "
            f"{worst['relative_error']:.3g} relative (tolerance {tolerance:g}); "
            "nothing was written"
        )
    return report
