"""Analytic acquisition values per point (BoTorch's, one point each) from a served posterior's
mean and variance, in pure torch: eager BoTorch's to 1e-8 relative; log-values to 1e-8 absolute
(the value's own relative error), 1e-10 relative below -100. Not for SAAS: BoTorch computes it
per MCMC sample, not from the mixture's moments. See docs/serving.md, step 11.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from gp_serve.handler.codecs.bounded_json import describe
from gp_serve.handler.codecs.budget import RequestError, clip

UCB = "UpperConfidenceBound"
EI = "ExpectedImprovement"
LOG_EI = "LogExpectedImprovement"
PI = "ProbabilityOfImprovement"
LOG_PI = "LogProbabilityOfImprovement"
POSTERIOR_MEAN = "PosteriorMean"
POSTERIOR_STD = "PosteriorStandardDeviation"
LOG_CEI = "LogConstrainedExpectedImprovement"
NAMES = (UCB, EI, LOG_EI, PI, LOG_PI, POSTERIOR_MEAN, POSTERIOR_STD, LOG_CEI)
# The acquisitions whose values are logarithms (compared absolutely, see the module docstring).
LOG_NAMES = (LOG_EI, LOG_PI, LOG_CEI)

_COMMON_KEYS = ("name", "maximize")
_OBJECTIVE_KEYS = ("output", "weights", "offset")
# The keys each acquisition accepts, besides `_COMMON_KEYS`.
_KEYS = {
    UCB: ("beta", *_OBJECTIVE_KEYS),
    EI: ("best_f", *_OBJECTIVE_KEYS),
    LOG_EI: ("best_f", *_OBJECTIVE_KEYS),
    PI: ("best_f", *_OBJECTIVE_KEYS),
    LOG_PI: ("best_f", *_OBJECTIVE_KEYS),
    POSTERIOR_MEAN: _OBJECTIVE_KEYS,
    POSTERIOR_STD: _OBJECTIVE_KEYS,
    LOG_CEI: ("best_f", "objective", "constraints"),
}
# Model output names quoted in a message: at most this many, each cut to this many characters.
_QUOTED_NAMES = 8
_NAME_CHARS = 24

# BoTorch's `AnalyticAcquisitionFunction._mean_and_sigma(min_var=1e-12)` clamp of the variance,
# after GPyTorch's float64 `settings.min_variance` (1e-10) clamp of `MultivariateNormal.variance`
# (the variance of a scalarized posterior is clamped there too).
MIN_VAR = 1e-12
GPYTORCH_MIN_VARIANCE = 1e-10

# BoTorch's constants, as it defines them (bit for bit: -(2**-0.5) != -1 / math.sqrt(2)).
_neg_inv_sqrt2 = -(2**-0.5)  # analytic.py
_log_sqrt_pi_div_2 = math.log(math.pi / 2) / 2  # analytic.py
_log_2 = math.log(2)  # utils/probability/utils.py (and safe_math's _log2)
_inv_sqrt_2pi = 1 / math.sqrt(2 * math.pi)
_neg_inv_sqrt_2 = -(1 / math.sqrt(2))
_log_sqrt_2pi = math.log(2 * math.pi) / 2


@dataclass(frozen=True)
class Acquisition:
    """A validated acquisition request (`parse`), evaluated by `evaluate`.

    Exactly one of ``output``, ``weights`` and ``objective_index`` is set: the objective is one
    output, a linear combination of outputs (BoTorch's ``ScalarizedPosteriorTransform(weights,
    offset)``), or, for ``LogConstrainedExpectedImprovement``, its ``objective_index``.

    Attributes:
        name: One of `NAMES`.
        maximize: Whether larger objective values are better (BoTorch's ``maximize``).
        beta: ``UpperConfidenceBound``'s ``beta`` (its value is ``mean + sqrt(beta) * std``).
        best_f: The best objective value so far (the improvement-based acquisitions).
        output: The objective's output index, or None.
        weights: `m` weights over the outputs (0 for those not named), or None.
        offset: Added to the weighted sum (``weights`` only; 0 otherwise).
        objective_index: ``LogConstrainedExpectedImprovement``'s objective output, or None.
        constraints: Its constrained outputs: index -> (lower, upper), None where unbounded.
    """

    name: str
    maximize: bool = True
    beta: float | None = None
    best_f: float | None = None
    output: int | None = None
    weights: tuple[float, ...] | None = None
    offset: float = 0.0
    objective_index: int | None = None
    constraints: dict[int, tuple[float | None, float | None]] = field(default_factory=dict)

    @property
    def is_log(self) -> bool:
        """Whether its values are logarithms (``Log...``)."""
        return self.name in LOG_NAMES


# --------------------------------------------------------------------------------------------
# Parsing the request field "acquisition".


def _quote(text: str) -> str:
    return '"' + clip(text) + '"'


def _names(names: list[str]) -> str:
    """The model's output names for a message: Python-list style, cut (`_QUOTED_NAMES`)."""
    shown = ", ".join(repr(clip(name, _NAME_CHARS)) for name in names[:_QUOTED_NAMES])
    more = f", ... ({len(names)} in all)" if len(names) > _QUOTED_NAMES else ""
    return f"[{shown}{more}]"


def _number(value: Any, where: str, expected: str = "a finite number") -> float:
    """``value`` as a finite float (not a boolean), or a `RequestError` saying ``expected``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if math.isfinite(number):
            return number
    raise RequestError(f"{where}: expected {expected}, got {describe(value)}")


def _output_index(value: Any, where: str, output_names: list[str]) -> int:
    if isinstance(value, str) and value in output_names:
        return output_names.index(value)
    raise RequestError(
        f"{where}: expected an output name, one of {_names(output_names)}, got {describe(value)}"
    )


def _unknown_keys(spec: dict, name: str) -> None:
    allowed = [*_COMMON_KEYS, *_KEYS[name]]
    unknown = sorted(str(key) for key in spec if key not in allowed)
    if unknown:
        keys = ", ".join(_quote(key) for key in unknown[:3])
        more = f" (and {len(unknown) - 3} more)" if len(unknown) > 3 else ""
        raise RequestError(
            f"acquisition: unknown key{'s' if len(unknown) > 1 else ''} {keys}{more} for "
            f"{name}: expected keys among {allowed}"
        )


def _weights(value: Any, output_names: list[str]) -> tuple[float, ...]:
    where = "acquisition.weights"
    if not isinstance(value, dict):
        raise RequestError(
            f"{where}: expected an object of output names to numbers, got {describe(value)}"
        )
    if not value:
        raise RequestError(
            f"{where}: expected weights of outputs among {_names(output_names)}, "
            "got an empty object"
        )
    unknown = sorted(str(key) for key in value if key not in output_names)
    if unknown:
        raise RequestError(
            f"{where}: expected output names among {_names(output_names)}, got {_quote(unknown[0])}"
        )
    weights = [0.0] * len(output_names)
    for key, number in value.items():
        weights[output_names.index(key)] = _number(number, f"{where}.{key}")
    if not any(weights):
        raise RequestError(f"{where}: expected at least one non-zero weight, got only zeros")
    return tuple(weights)


def _objective(spec: dict, output_names: list[str]) -> dict[str, Any]:
    """The ``output``, ``weights`` and ``offset`` of `Acquisition` from ``spec``."""
    has_output, has_weights = "output" in spec, "weights" in spec
    if has_output and has_weights:
        raise RequestError('acquisition: expected "output" or "weights", got both')
    if "offset" in spec and not has_weights:
        raise RequestError(
            'acquisition.offset: expected only with "weights", got it without "weights"'
        )
    if has_weights:
        weights = _weights(spec["weights"], output_names)
        offset = _number(spec["offset"], "acquisition.offset") if "offset" in spec else 0.0
        return {"weights": weights, "offset": offset}
    if has_output:
        return {"output": _output_index(spec["output"], "acquisition.output", output_names)}
    if len(output_names) > 1:
        raise RequestError(
            f"acquisition: the model has {len(output_names)} outputs {_names(output_names)}: "
            'expected "output" or "weights"'
        )
    return {"output": 0}


def _bounds(value: Any, where: str) -> tuple[float | None, float | None]:
    if not isinstance(value, list) or len(value) != 2:
        raise RequestError(
            f"{where}: expected [lower, upper] (numbers or null), got {describe(value)}"
        )
    lower, upper = (
        None if bound is None else _number(bound, f"{where}[{k}]", "a finite number or null")
        for k, bound in enumerate(value)
    )
    if lower is None and upper is None:
        raise RequestError(f"{where}: expected at least one bound, got [null, null]")
    if lower is not None and upper is not None and not lower < upper:
        # (BoTorch refuses upper <= lower: "Upper bound is less than the lower bound.")
        raise RequestError(f"{where}: expected lower < upper, got [{lower!r}, {upper!r}]")
    return lower, upper


def _constrained(spec: dict, output_names: list[str]) -> dict[str, Any]:
    """``LogConstrainedExpectedImprovement``'s objective and constraints from ``spec``."""
    if len(output_names) < 2:
        raise RequestError(
            f"acquisition: {LOG_CEI} needs a model of 2 or more outputs (an objective and "
            f"constraints), got 1 output {_names(output_names)}"
        )
    if "objective" not in spec:
        raise RequestError(
            f"acquisition.objective: required by {LOG_CEI}: expected an output name, "
            f"one of {_names(output_names)}"
        )
    objective = _output_index(spec["objective"], "acquisition.objective", output_names)
    where = "acquisition.constraints"
    if "constraints" not in spec:
        raise RequestError(
            f"{where}: required by {LOG_CEI}: expected an object of output names to "
            '[lower, upper], e.g. {"y1": [null, 0.0]}'
        )
    value = spec["constraints"]
    if not isinstance(value, dict):
        raise RequestError(
            f"{where}: expected an object of output names to [lower, upper], got {describe(value)}"
        )
    if not value:
        raise RequestError(f"{where}: expected at least one constrained output, got none")
    unknown = sorted(str(key) for key in value if key not in output_names)
    if unknown:
        raise RequestError(
            f"{where}: expected output names among {_names(output_names)}, got {_quote(unknown[0])}"
        )
    constraints: dict[int, tuple[float | None, float | None]] = {}
    for key, bounds in value.items():
        index = output_names.index(key)
        if index == objective:
            raise RequestError(
                f"{where}.{key}: expected outputs other than the objective, got the "
                f"objective {_quote(key)}"
            )
        constraints[index] = _bounds(bounds, f"{where}.{key}")
    return {"objective_index": objective, "constraints": constraints}


def parse(value: Any, output_names: list[str]) -> Acquisition:
    """Validate the request field ``"acquisition"``.

    For example ``{"name": "ExpectedImprovement", "best_f": 0.3, "output": "y1"}``,
    ``{"name": "UpperConfidenceBound", "beta": 0.2, "weights": {"y0": 0.5, "y1": -1.0}}`` or
    ``{"name": "LogConstrainedExpectedImprovement", "objective": "y0", "constraints": {"y1":
    [null, 0.0]}, "best_f": 1.0}``; every acquisition takes ``"maximize"`` (default true).

    Args:
        value: The decoded JSON value of the field.
        output_names: The model's `m` output names, in order.

    Returns:
        The validated acquisition.

    Raises:
        RequestError: Naming the first invalid field, what was expected and what came.
    """
    if not isinstance(value, dict):
        raise RequestError(
            'acquisition: expected an object like {"name": "ExpectedImprovement", "best_f": '
            f"0.0}}, got {describe(value)}"
        )
    if "name" not in value:
        raise RequestError(f"acquisition.name: required: expected one of {list(NAMES)}")
    name = value["name"]
    if not isinstance(name, str) or name not in NAMES:
        raise RequestError(f"acquisition.name: expected one of {list(NAMES)}, got {describe(name)}")
    _unknown_keys(value, name)
    maximize = value.get("maximize", True)
    if not isinstance(maximize, bool):
        raise RequestError(
            f"acquisition.maximize: expected true or false, got {describe(maximize)}"
        )
    fields: dict[str, Any] = {"name": name, "maximize": maximize}
    if name == LOG_CEI:
        fields.update(_constrained(value, output_names))
    else:
        fields.update(_objective(value, output_names))
    if name == UCB:
        if "beta" not in value:
            raise RequestError(
                f"acquisition.beta: required by {UCB}: expected a finite non-negative number"
            )
        expected = "a finite non-negative number"
        beta = _number(value["beta"], "acquisition.beta", expected)
        if beta < 0:
            raise RequestError(
                f"acquisition.beta: expected {expected}, got {describe(value['beta'])}"
            )
        fields["beta"] = beta
    if "best_f" in _KEYS[name]:
        if "best_f" not in value:
            raise RequestError(f"acquisition.best_f: required by {name}: expected a finite number")
        fields["best_f"] = _number(value["best_f"], "acquisition.best_f")
    return Acquisition(**fields)


# --------------------------------------------------------------------------------------------
# What the handler computes for it.


def needs_output_covariance(spec: Acquisition, correlated_outputs: bool) -> bool:
    """Whether `evaluate` needs the per-point output covariance (`point_blocks`) for ``spec``.

    Only a combination of two or more outputs of a model whose outputs are correlated does: its
    variance is ``w^T B w`` with each point's `m x m` block ``B`` (else ``w^2 . variance``).
    ``LogConstrainedExpectedImprovement`` takes the outputs as independent, as BoTorch does.

    Args:
        spec: A parsed acquisition.
        correlated_outputs: Whether the model's outputs can be correlated (metadata's
            ``correlated_outputs``: the multitask and Kronecker families).
    """
    if not correlated_outputs or spec.weights is None:
        return False
    return sum(weight != 0 for weight in spec.weights) > 1


def point_blocks(covariance: Tensor, q: int, m: int) -> Tensor:
    """The per-point output blocks of an output-major covariance.

    Args:
        covariance: `(q*m) x (q*m)`, output-major (row ``t*q + i`` is output ``t`` at point
            ``i``), as a served module's ``forward`` returns it.
        q: The number of points.
        m: The number of outputs.

    Returns:
        `q x m x m`: entry ``[i, s, t]`` is the covariance of outputs ``s`` and ``t`` at point
        ``i``.

    Raises:
        ValueError: If ``covariance`` is not `(q*m) x (q*m)`.
    """
    if covariance.shape != (q * m, q * m):
        raise ValueError(
            f"expected a {q * m} x {q * m} covariance (q={q}, m={m}), got {tuple(covariance.shape)}"
        )
    # [s, i, t, j] -> the diagonal i == j, as [s, t, i] -> [i, s, t]
    return covariance.reshape(m, q, m, q).diagonal(dim1=1, dim2=3).permute(2, 0, 1)


def evaluate(
    spec: Acquisition, mean: Tensor, variance: Tensor, output_covariance: Tensor | None = None
) -> Tensor:
    """The acquisition's value at each point, as BoTorch's at ``X.unsqueeze(-2)`` (q = 1 each).

    For ``KroneckerMultiTaskGP`` the moments are its exact posterior's (what the module serves):
    BoTorch's own ``posterior`` refuses posterior transforms, and its closed-form variance,
    which its ``LogConstrainedExpectedImprovement`` uses, is off for unequal task noises
    (docs/export.md).

    Args:
        spec: A parsed acquisition.
        mean: `q x m` posterior mean (noiseless, as ``mean_var`` returns it).
        variance: `q x m` posterior variance (noiseless).
        output_covariance: `q x m x m` per-point output covariance (`point_blocks` of
            ``forward``'s covariance) when `needs_output_covariance`, else None (or ignored
            unless ``spec.weights`` is set).

    Returns:
        `q` float64 values (logarithms for ``Log...``).

    Raises:
        ValueError: If the shapes do not match each other or ``spec``.
    """
    mean, variance = mean.to(torch.float64), variance.to(torch.float64)
    if mean.dim() != 2 or variance.shape != mean.shape:
        raise ValueError(
            f"expected q x m mean and variance, got {tuple(mean.shape)} and {tuple(variance.shape)}"
        )
    q, m = mean.shape
    if spec.name == LOG_CEI:
        return _log_constrained_ei(spec, mean, variance)
    if spec.weights is not None:
        if len(spec.weights) != m:
            raise ValueError(f"expected {len(spec.weights)} outputs, got {m}")
        weights = torch.tensor(spec.weights, dtype=torch.float64, device=mean.device)
        # (botorch.posteriors.gpytorch.scalarize_posterior_gpytorch, q = 1)
        f_mean = spec.offset + mean @ weights
        if output_covariance is not None and m > 1:
            if output_covariance.shape != (q, m, m):
                raise ValueError(
                    f"expected a {q} x {m} x {m} output covariance, "
                    f"got {tuple(output_covariance.shape)}"
                )
            blocks = output_covariance.to(torch.float64)
            f_var = (weights.unsqueeze(-2) @ (blocks @ weights.unsqueeze(-1))).reshape(q)
        else:  # (scalarize_posterior's PosteriorList case: independent outputs)
            f_var = variance @ weights.square()
        f_var = f_var.clamp_min(GPYTORCH_MIN_VARIANCE)  # (MultivariateNormal.variance)
    else:
        if spec.output is None or not 0 <= spec.output < m:
            raise ValueError(f"expected an output index below {m}, got {spec.output}")
        f_mean, f_var = mean[:, spec.output], variance[:, spec.output]
    if spec.name == POSTERIOR_MEAN:
        return f_mean if spec.maximize else -f_mean
    sigma = _sigma(f_var)
    if spec.name == POSTERIOR_STD:
        return sigma if spec.maximize else -sigma
    if spec.name == UCB:
        assert spec.beta is not None
        beta = torch.tensor(spec.beta, dtype=torch.float64)
        return (f_mean if spec.maximize else -f_mean) + beta.sqrt() * sigma
    assert spec.best_f is not None
    u = _scaled_improvement(f_mean, sigma, spec.best_f, spec.maximize)
    if spec.name == EI:
        return sigma * _ei_helper(u)
    if spec.name == LOG_EI:
        return _log_ei_helper(u) + sigma.log()
    if spec.name == PI:
        return _ndtr(u)
    if spec.name == LOG_PI:
        return _log_ndtr(u)
    raise ValueError(f"expected one of {list(NAMES)}, got {spec.name!r}")


def _log_constrained_ei(spec: Acquisition, mean: Tensor, variance: Tensor) -> Tensor:
    # Mirrors botorch.acquisition.analytic.LogConstrainedExpectedImprovement.forward.
    assert spec.objective_index is not None and spec.best_f is not None
    m = mean.size(-1)
    if not 0 <= spec.objective_index < m or any(not 0 <= k < m for k in spec.constraints):
        raise ValueError(f"expected output indices below {m}, got {spec}")
    sigmas = _sigma(variance)
    ind = spec.objective_index
    mean_obj, sigma_obj = mean[..., ind], sigmas[..., ind]
    u = _scaled_improvement(mean_obj, sigma_obj, spec.best_f, spec.maximize)
    log_ei = _log_ei_helper(u) + sigma_obj.log()
    return log_ei + _log_prob_feas(spec.constraints, mean, sigmas)


# --------------------------------------------------------------------------------------------
# BoTorch's numerics, copied (MIT license, Copyright (c) Meta Platforms, Inc. and affiliates)
# from botorch/acquisition/analytic.py, botorch/utils/probability/utils.py and
# botorch/utils/safe_math.py of 0.18.1; 0.12.0 has the same formulas and clamps (its constants
# are 0-dim tensors, the same float64 arithmetic).
#
# Why log-values are compared absolutely: an absolute error of log(v) is the relative error of v
# itself, while a relative 1e-8 of a log-value of -1000 would let v be off by 1e-5. Below -100,
# relatively (1e-10): a log-value L ~ -x^2/2 of a standardized distance x carries 2|L| times the
# relative error of x (~1e-12, from moments that are eager's to ~1e-13), so its absolute error
# grows with |L|; v = exp(L) is then below 4e-44 (and below -745, beyond float64).
#
# Not a formula but an input: BoTorch keeps ``best_f``, ``beta`` and the constraint bounds given
# as Python floats with ``torch.as_tensor``, in torch's default dtype (float32 unless changed):
# ``ExpectedImprovement(model, best_f=0.3)`` uses 0.30000001192092896. Served values use the
# float64 numbers of the request, as BoTorch does given float64 tensors (``best_f=Y.max()``) or
# under ``torch.set_default_dtype(torch.float64)``.
#
# Why not SAAS: BoTorch's analytic acquisition on a fully Bayesian model is computed per MCMC
# sample (0.12 returns one value per sample, 0.18 their mean, ``logmeanexp`` for the log ones),
# which is not a function of the mixture's mean and variance that its served module answers.


def _sigma(variance: Tensor) -> Tensor:
    # Mirrors AnalyticAcquisitionFunction._mean_and_sigma: variance.clamp_min(min_var).sqrt().
    return variance.clamp_min(MIN_VAR).sqrt()


def _scaled_improvement(mean: Tensor, sigma: Tensor, best_f: float, maximize: bool) -> Tensor:
    # Mirrors botorch.acquisition.analytic._scaled_improvement.
    u = (mean - best_f) / sigma
    return u if maximize else -u


def _phi(x: Tensor) -> Tensor:
    # Mirrors botorch.utils.probability.utils.phi.
    return _inv_sqrt_2pi * (-0.5 * x.square()).exp()


def _ndtr(x: Tensor) -> Tensor:
    # Mirrors botorch.utils.probability.utils.ndtr (analytic.py's Phi).
    return 0.5 * torch.erfc(_neg_inv_sqrt_2 * x)


def _log_phi(x: Tensor) -> Tensor:
    # Mirrors botorch.utils.probability.utils.log_phi.
    return -0.5 * x.square() - _log_sqrt_2pi


def _log_erfc(x: Tensor) -> Tensor:
    # Mirrors botorch.utils.probability.utils.log_erfc.
    is_pos = x > 0
    x_pos = x.masked_fill(~is_pos, 0)
    x_neg = x.masked_fill(is_pos, 0)
    return torch.where(
        is_pos,
        torch.log(torch.special.erfcx(x_pos)) - x_pos.square(),
        torch.log(torch.special.erfc(x_neg)),
    )


def _log_ndtr(x: Tensor) -> Tensor:
    # Mirrors botorch.utils.probability.utils.log_ndtr (analytic.py's log_Phi).
    return _log_erfc(_neg_inv_sqrt_2 * x) - _log_2


def _log1mexp(x: Tensor) -> Tensor:
    # Mirrors botorch.utils.safe_math.log1mexp: log(1 - exp(x)) for x < 0.
    is_small = -_log_2 < x
    return torch.where(is_small, (-x.expm1()).log(), (-x.exp()).log1p())


def _logdiffexp(log_a: Tensor, log_b: Tensor) -> Tensor:
    # Mirrors botorch.utils.safe_math.logdiffexp: log(b - a) for b > a > 0.
    log_a, log_b = torch.broadcast_tensors(log_a, log_b)
    is_inf = log_b == -torch.inf
    return log_b + _log1mexp(log_a - log_b.masked_fill(is_inf, 0.0))


def _log_prob_normal_in(a: Tensor, b: Tensor) -> Tensor:
    # Mirrors botorch.utils.probability.utils.log_prob_normal_in: log(Phi(b) - Phi(a)), a < b
    # (BoTorch raises unless a < b everywhere; `_bounds` refuses lower >= upper, and where
    # a == b in float64 (a huge sigma) this returns -inf).
    rev_cond = b.abs() > a.abs()
    c = torch.where(rev_cond, -b, a)
    b = torch.where(rev_cond, -a, b)
    a = c
    return _logdiffexp(log_a=_log_ndtr(a), log_b=_log_ndtr(b))


def _ei_helper(u: Tensor) -> Tensor:
    # Mirrors botorch.acquisition.analytic._ei_helper: phi(u) + u * Phi(u).
    return _phi(u) + u * _ndtr(u)


def _log_abs_u_Phi_div_phi(u: Tensor) -> Tensor:  # noqa: N802 (BoTorch's name)
    # Mirrors botorch.acquisition.analytic._log_abs_u_Phi_div_phi, valid for u < 0.
    return torch.log(torch.special.erfcx(_neg_inv_sqrt2 * u) * u.abs()) + _log_sqrt_pi_div_2


def _log_ei_helper(u: Tensor) -> Tensor:
    # Mirrors botorch.acquisition.analytic._log_ei_helper: log(phi(u) + u * Phi(u)).
    bound = -1
    u_upper = u.masked_fill(u < bound, bound)
    log_ei_upper = _ei_helper(u_upper).log()
    neg_inv_sqrt_eps = -1e6  # (float64; BoTorch uses -1e3 for float32)
    u_lower = u.masked_fill(u > bound, bound)
    u_eps = u_lower.masked_fill(u < neg_inv_sqrt_eps, neg_inv_sqrt_eps)
    w = _log_abs_u_Phi_div_phi(u_eps)
    log_ei_lower = _log_phi(u) + torch.where(
        u > neg_inv_sqrt_eps, _log1mexp(w), -2 * u_lower.abs().log()
    )
    return torch.where(u > bound, log_ei_upper, log_ei_lower)


def _log_prob_feas(
    constraints: dict[int, tuple[float | None, float | None]], means: Tensor, sigmas: Tensor
) -> Tensor:
    # Mirrors botorch.utils.probability.utils.compute_log_prob_feas_from_bounds (0.18; 0.12:
    # analytic._compute_log_prob_feas, the same sums) with the grouping of
    # ConstrainedAnalyticAcquisitionFunctionMixin._preprocess_constraint_bounds.
    lower_inds = [k for k, (lo, up) in constraints.items() if lo is not None and up is None]
    upper_inds = [k for k, (lo, up) in constraints.items() if lo is None and up is not None]
    both_inds = [k for k, (lo, up) in constraints.items() if lo is not None and up is not None]
    log_prob = torch.zeros_like(means[..., 0])
    if lower_inds:
        i = torch.tensor(lower_inds, device=means.device)
        con_lower = torch.tensor(
            [constraints[k][0] for k in lower_inds], dtype=means.dtype, device=means.device
        )
        dist_l = (con_lower - means[..., i]) / sigmas[..., i]
        log_prob = log_prob + _log_ndtr(-dist_l).sum(dim=-1)
    if upper_inds:
        i = torch.tensor(upper_inds, device=means.device)
        con_upper = torch.tensor(
            [constraints[k][1] for k in upper_inds], dtype=means.dtype, device=means.device
        )
        dist_u = (con_upper - means[..., i]) / sigmas[..., i]
        log_prob = log_prob + _log_ndtr(dist_u).sum(dim=-1)
    if both_inds:
        i = torch.tensor(both_inds, device=means.device)
        con_both = torch.tensor(
            [list(constraints[k]) for k in both_inds], dtype=means.dtype, device=means.device
        )
        dist_l = (con_both[:, 0] - means[..., i]) / sigmas[..., i]
        dist_u = (con_both[:, 1] - means[..., i]) / sigmas[..., i]
        log_prob = log_prob + _log_prob_normal_in(a=dist_l, b=dist_u).sum(dim=-1)
    return log_prob
