"""Traced (TorchScript) vs eager BoTorch posteriors, side by side in one process, for every family
(the ``inprocess`` section, ``make bench``).

    .venv/bin/python -m benchmarks.inprocess --out benchmarks/results/raw [--quick]

See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from botorch.models import KroneckerMultiTaskGP, ModelListGP, MultiTaskGP, SingleTaskGP
from botorch.models.model import Model
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from botorch.posteriors.gpytorch import GPyTorchPosterior
from gpytorch.distributions import MultitaskMultivariateNormal
from torch import Tensor

from benchmarks.sections import write_section
from gp_serve.export.families import eager_moments, trace_posterior
from gp_serve.export.gate import relative_error

D = 6
M = 2
SIZES_N = (100, 1000, 5000)
Q_BOTH = (1, 10, 100, 1000)
Q_DIAG = Q_BOTH + (100_000,)
FAMILY_NAMES = ("single", "list", "multitask", "kronecker", "saas")
QUICK = {"families": ("single", "kronecker"), "sizes": (100,), "q_full": (1, 10), "q_diag": (1, 10)}
# Caps: an eager cell predicted to take longer than EAGER_CAP_S (warm-up and repeats) is
# skipped; a traced one longer than TRACED_CAP_S; any cell predicted to need more than
# MEMORY_CAP_BYTES of tensors, too.
EAGER_CAP_S = 20.0
TRACED_CAP_S = 30.0
MEMORY_CAP_BYTES = 4 * 2**30
# Repeats: until REPEAT_BUDGET_S spent or MAX_REPEATS, at least MIN_REPEATS; a call
# over ONCE_ABOVE_S is timed once (its warm-up call is the measurement: the traced module
# has had its profiling runs and the eager model its caches, so nothing is first-call).
REPEAT_BUDGET_S = 0.3
MAX_REPEATS = 30
MIN_REPEATS = 3
ONCE_ABOVE_S = 1.0
COLUMNS = [
    "family",
    "N",
    "q",
    "method",
    "eager median ms",
    "eager p99 ms",
    "traced median ms",
    "traced p99 ms",
    "eager/traced",
    "max rel error",
]
SAAS_NOTE = (
    "saas (SaasFullyBayesianSingleTaskGP): not measured: needs BoTorch's fully "
    "Bayesian extra (JAX, NumPyro)"
)


# --- models -------------------------------------------------------------------------


def _perturbed(model: Model, generator: torch.Generator) -> Model:
    """``model`` in eval mode, its raw hyperparameters (not the noises) moved by N(0, 0.3²)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "raw_" in name and "noise" not in name:
                param.add_(0.3 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    model.eval()
    return model


def _smooth_data(n: int, m: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """`n x D` inputs in the unit cube and `n x m` smooth outputs of different scales."""
    X = torch.rand(n, D, generator=generator, dtype=torch.float64)
    W = torch.randn(D, m, generator=generator, dtype=torch.float64)
    Y = torch.sin(2 * X @ W) * torch.linspace(1, 10, m, dtype=torch.float64) + 3
    return X, Y + 0.05 * torch.randn(n, m, generator=generator, dtype=torch.float64)


def _single(X: Tensor, Y: Tensor, generator: torch.Generator) -> SingleTaskGP:
    model = SingleTaskGP(
        X, Y, input_transform=Normalize(D), outcome_transform=Standardize(Y.size(-1))
    )
    return _perturbed(model, generator)


def single_task_model(n: int, m: int, seed: int = 0) -> SingleTaskGP:
    """An unfitted float64 ``SingleTaskGP`` with ``m`` outputs on N=``n`` points in d=`D`."""
    generator = torch.Generator().manual_seed(seed * 7919 + n)
    return _single(*_smooth_data(n, m, generator), generator)


def make_model(family: str, n: int, seed: int = 0) -> Model:
    """An unfitted float64 model of ``family`` on N=``n`` points in d=`D` (see module doc).

    Raises:
        ImportError: For ``saas`` when this BoTorch needs its fully Bayesian extra.
        ValueError: For an unknown family.
    """
    generator = torch.Generator().manual_seed(seed * 7919 + n)
    if family == "single":
        return single_task_model(n, M, seed)
    if family == "list":
        X, Y = _smooth_data(n, M, generator)
        return ModelListGP(*(_single(X, Y[:, t : t + 1], generator) for t in range(M))).eval()
    if family == "multitask":
        X, Y = _smooth_data(n, M, generator)
        task = torch.randint(0, M, (n,), generator=generator)
        train_X = torch.cat([X, task.unsqueeze(-1).to(X)], dim=-1)
        model = MultiTaskGP(
            train_X,
            Y[torch.arange(n), task].unsqueeze(-1),
            task_feature=-1,
            input_transform=Normalize(D + 1, indices=list(range(D))),
            outcome_transform=Standardize(1),
        )
        return _perturbed(model, generator)
    if family == "kronecker":
        X, Y = _smooth_data(n, M, generator)
        model = KroneckerMultiTaskGP(
            X, Y, input_transform=Normalize(D), outcome_transform=Standardize(M)
        )
        return _perturbed(model, generator)
    if family == "saas":
        return _saas(n, generator)
    raise ValueError(f"unknown family {family!r}")


def _saas(n: int, generator: torch.Generator) -> Model:
    """A ``SaasFullyBayesianSingleTaskGP`` (one output) with 4 seeded MCMC samples."""
    from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP

    X, Y = _smooth_data(n, 1, generator)
    model = SaasFullyBayesianSingleTaskGP(
        X, Y, input_transform=Normalize(D), outcome_transform=Standardize(1)
    )
    samples = 4

    def draw(*shape: int, low: float, width: float) -> Tensor:
        return low + width * torch.rand(*shape, generator=generator, dtype=torch.float64)

    model.load_mcmc_samples(
        {
            "lengthscale": draw(samples, 1, D, low=0.5, width=1.0),
            "outputscale": draw(samples, low=0.5, width=1.0),
            "mean": draw(samples, low=-0.1, width=0.2),
            "noise": draw(samples, low=1e-3, width=1e-2),
        }
    )
    model.eval()
    return model


def test_points(q: int, seed: int) -> Tensor:
    """`q x D` raw test points, uniform in the unit cube widened by 10% on each side."""
    generator = torch.Generator().manual_seed(10_000 + seed)
    return torch.rand(q, D, generator=generator, dtype=torch.float64) * 1.2 - 0.1


# --- eager and traced calls ----------------------------------------------------------


def eager_mean_var(model: Model, X: Tensor) -> dict[str, Tensor]:
    """The eager reference's `q x m` mean and variance only (no dense covariance).

    ``model.posterior(X)``'s ``mean`` and ``variance`` (a fully Bayesian model's mixture
    moments), as `export.gate.eager_moments` takes them; for ``KroneckerMultiTaskGP`` the
    exact posterior's (`export.kronecker.eager_moments`'s path: GPyTorch's exact prediction
    untransformed by the outcome transform), whose ``variance`` that function returns too.
    """
    with torch.no_grad():
        if isinstance(model, KroneckerMultiTaskGP):
            model.eval()
            latent = model(model.transform_inputs(X))
            posterior = GPyTorchPosterior(
                MultitaskMultivariateNormal(
                    latent.mean, latent.lazy_covariance_matrix, interleaved=True
                )
            )
            transform = getattr(model, "outcome_transform", None)
            if transform is not None:
                posterior = transform.untransform_posterior(posterior)
            return {"mean": posterior.mean, "variance": posterior.variance}
        posterior = model.posterior(X)
        if hasattr(posterior, "mixture_mean"):
            return {"mean": posterior.mixture_mean, "variance": posterior.mixture_variance}
        return {"mean": posterior.mean, "variance": posterior.variance}


def eager_call(model: Model, method: str) -> Callable[[Tensor], dict[str, Tensor]]:
    """The eager side of ``method`` (``full`` or ``diag``) as a function of `q x d` ``X``."""
    if method == "full":
        return lambda X: eager_moments(model, X, False)
    return lambda X: eager_mean_var(model, X)


def traced_call(
    module: torch.jit.ScriptModule, method: str
) -> Callable[[Tensor], dict[str, Tensor]]:
    """The traced side of ``method``: ``forward`` (mean, covariance) or ``mean_var``."""

    def full(X: Tensor) -> dict[str, Tensor]:
        mean, covariance = module(X)
        return {"mean": mean, "covariance": covariance}

    def diag(X: Tensor) -> dict[str, Tensor]:
        mean, variance = module.mean_var(X)
        return {"mean": mean, "variance": variance}

    return full if method == "full" else diag


def warm_up(module: torch.jit.ScriptModule) -> None:
    """TorchScript's profiling runs, as the served handler does them at load: the
    executor profiles a method's first calls and then optimises it (tens of ms)."""
    with torch.no_grad():
        for q in (1, 1, 2, 2, 3):
            X = test_points(q, 0)
            module(X)
            module.mean_var(X)


def max_relative_error(traced: dict[str, Tensor], eager: dict[str, Tensor]) -> float:
    """The worst `relative_error` over the quantities the traced side returns."""
    return max(relative_error(value, eager[key]) for key, value in traced.items())


# --- timing ------------------------------------------------------------------------


@dataclass
class Timing:
    """Seconds of each timed call of one side of one cell, and the warm-up's result."""

    seconds: list[float]
    result: Any = None

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1e3

    @property
    def p99_ms(self) -> float:
        return percentile(self.seconds, 99) * 1e3


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile, linear interpolation between order statistics."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def repeats_for(call_s: float) -> int:
    """Timed calls after the warm-up for a call of ``call_s`` seconds (0: the warm-up
    call itself is the one measurement)."""
    if call_s > ONCE_ABOVE_S:
        return 0
    return max(MIN_REPEATS, min(MAX_REPEATS, math.ceil(REPEAT_BUDGET_S / max(call_s, 1e-9))))


def time_calls(fn: Callable[[], Any]) -> Timing:
    """One warm-up call, then repeats until `REPEAT_BUDGET_S` spent or `MAX_REPEATS`
    (at least `MIN_REPEATS`); a warm-up over `ONCE_ABOVE_S` is the only measurement.

    Returns:
        The timed seconds and the warm-up call's result.
    """
    with torch.no_grad():
        start = time.perf_counter()
        result = fn()
        warm_up = time.perf_counter() - start
        if warm_up > ONCE_ABOVE_S:
            return Timing([warm_up], result)
        seconds: list[float] = []
        while len(seconds) < MAX_REPEATS and (
            len(seconds) < MIN_REPEATS or sum(seconds) < REPEAT_BUDGET_S
        ):
            start = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - start)
    return Timing(seconds, result)


def estimate_seconds(history: list[tuple[int, float]], q: int) -> float | None:
    """Predicted wall time of a whole cell (warm-up and repeats) at ``q`` points.

    Extrapolates the same side's medians at smaller q (``history``: (q, seconds), q
    ascending) as ``t ∝ q^k``, k fitted to the last two points and kept in [1, 3] (at
    least linear: small q are dominated by fixed overheads).

    Returns:
        Seconds, or None when nothing has been measured yet.
    """
    if not history:
        return None
    q_last, t_last = history[-1]
    k = 1.0
    if len(history) >= 2 and history[-2][0] < q_last:
        q_prev, t_prev = history[-2]
        k = math.log(max(t_last, 1e-9) / max(t_prev, 1e-9)) / math.log(q_last / q_prev)
        k = min(3.0, max(1.0, k))
    call = t_last * (q / q_last) ** k
    return call * (1 + repeats_for(call))


def estimate_bytes(side: str, method: str, q: int, n: int, m: int) -> int:
    """Tensor memory a call is predicted to need (float64), the larger terms only.

    Both sides form the `(m) x q x N` cross-covariance and a product of the same size.
    The full covariance is `(q*m) x (q*m)` (and a few temporaries of that size); eager
    GPyTorch 1.15's variance materialises the `q x q` test covariance per output too
    (4.7 GB peak at q=16,000 and m=2 in a probe), so eager ``diag`` counts it as well.
    """
    cross = 2 * m * q * n
    dense = 3 * (m * q) ** 2 if (method == "full" or side == "eager") else 0
    return 8 * (cross + dense)


# --- the sweep ---------------------------------------------------------------------


@dataclass
class Sweep:
    """The rows and notes of the section being measured."""

    rows: list[list] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _measure_side(
    fn: Callable[[], Any],
    history: list[tuple[int, float]],
    q: int,
    cap_s: float,
    predicted_bytes: int,
) -> Timing | str:
    """A side's `Timing`, or the reason it was not run."""
    if predicted_bytes > MEMORY_CAP_BYTES:
        return f"skipped (est. {predicted_bytes / 2**30:.3g} GiB)"
    predicted = estimate_seconds(history, q)
    if predicted is not None and predicted > cap_s:
        return f"skipped (est. {predicted:.3g} s)"
    timing = time_calls(fn)
    history.append((q, statistics.median(timing.seconds)))
    return timing


def measure_model(
    family: str, n: int, sweep: Sweep, q_full: tuple[int, ...], q_diag: tuple[int, ...]
) -> None:
    """Build, trace and measure one family at one N, appending rows and notes."""
    start = time.perf_counter()
    model = make_model(family, n)
    built = time.perf_counter() - start
    m = model.num_outputs
    start = time.perf_counter()
    with torch.no_grad():  # the eager caches (the traced copy reuses them)
        eager_moments(model, test_points(1, 0), False)
    cached = time.perf_counter() - start
    start = time.perf_counter()
    module = trace_posterior(model, test_points(4, 1))
    warm_up(module)
    traced = time.perf_counter() - start
    log(
        f"{family} N={n}: build {built:.2f} s, first eager call {cached:.2f} s, "
        f"trace {traced:.2f} s"
    )
    sweep.notes.append(
        f"setup {family} N={n}: build {built:.2f} s, first eager call "
        f"(caches) {cached:.2f} s, trace and profiling runs {traced:.2f} s"
    )
    first_eager: list[tuple[int, float]] = []
    for method, sizes in (("full", q_full), ("diag", q_diag)):
        # (diag's first eager estimate: full's smallest call, which it costs at least)
        eager_history: list[tuple[int, float]] = list(first_eager)
        traced_history: list[tuple[int, float]] = []
        eager_fn, traced_fn = eager_call(model, method), traced_call(module, method)
        for q in sizes:
            X = test_points(q, q)
            t = _measure_side(
                partial(traced_fn, X),
                traced_history,
                q,
                TRACED_CAP_S,
                estimate_bytes("traced", method, q, n, m),
            )
            e = _measure_side(
                partial(eager_fn, X),
                eager_history,
                q,
                EAGER_CAP_S,
                estimate_bytes("eager", method, q, n, m),
            )
            row: list = [family, n, q, method, None, None, None, None, None, None]
            if isinstance(e, Timing):
                row[4:6] = [e.median_ms, e.p99_ms]
            else:
                sweep.skipped.append(f"{family} N={n} q={q} {method} eager: {e}")
            if isinstance(t, Timing):
                row[6:8] = [t.median_ms, t.p99_ms]
            else:
                sweep.skipped.append(f"{family} N={n} q={q} {method} traced: {t}")
            if isinstance(e, Timing) and isinstance(t, Timing):
                row[8] = e.median_ms / t.median_ms
                error = max_relative_error(t.result, e.result)
                row[9] = error if math.isfinite(error) else None
                if not math.isfinite(error):
                    sweep.skipped.append(
                        f"{family} N={n} q={q} {method}: traced output "
                        "not finite or of another shape than eager's"
                    )
            if not first_eager and isinstance(e, Timing):
                first_eager.append((q, statistics.median(e.seconds)))
            sweep.rows.append(row)
            log(
                "  "
                + " ".join(
                    "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)
                    for v in row
                )
            )
            del X, t, e
            gc.collect()
        del eager_fn, traced_fn
    del model, module
    gc.collect()


def run(
    families: tuple[str, ...],
    sizes: tuple[int, ...],
    q_full: tuple[int, ...],
    q_diag: tuple[int, ...],
) -> dict:
    """The whole sweep, as the section's JSON object."""
    torch.set_num_threads(1)
    sweep = Sweep()
    start = time.perf_counter()
    for family in families:
        for n in sizes:
            try:
                measure_model(family, n, sweep, q_full, q_diag)
            except ImportError:
                if family != "saas":
                    raise
                sweep.notes.append(SAAS_NOTE)
                break
    wall = time.perf_counter() - start
    notes = [
        f"One process, torch.set_num_threads(1), float64, d={D}; m=2 outputs (list: 2 "
        "SingleTaskGP; multitask: 2 tasks, N rows with one task each); unfitted models, "
        "seeded perturbed hyperparameters, Normalize inputs, Standardize outcomes.",
        "full: module.forward(X) vs export.families.eager_moments (mean, variance, "
        "output-major covariance); diag: module.mean_var(X) vs the eager mean and variance "
        "only (Kronecker: its exact posterior, export.kronecker's path).",
        f"Per cell and side: one warm-up call, then repeats until {REPEAT_BUDGET_S} s or "
        f"{MAX_REPEATS} calls (at least {MIN_REPEATS}); a call over {ONCE_ABOVE_S:g} s is "
        "timed once (its warm-up). p99 interpolates between order statistics (with under "
        "100 calls: near the max). Traced and eager run one after the other. The traced "
        "module first gets TorchScript's profiling runs as the handler gives them at load "
        "(q = 1, 1, 2, 2, 3 through forward and mean_var).",
        f"Caps: eager cells predicted over {EAGER_CAP_S:g} s, traced over {TRACED_CAP_S:g} s "
        f"(extrapolated from smaller q), or over {MEMORY_CAP_BYTES / 2**30:g} GiB of tensors "
        "are not run (null).",
        "max rel error: max |traced - eager| / max |eager| over mean and covariance (full) "
        "or mean and variance (diag).",
        *sweep.notes,
        *sweep.skipped,
        f"sweep wall time {wall:.1f} s",
    ]
    return {
        "section": "inprocess",
        "title": "Traced (TorchScript) vs eager BoTorch posterior, in process, one thread",
        "columns": COLUMNS,
        "rows": sweep.rows,
        "notes": notes,
    }


def log(line: str) -> None:
    """Progress on stderr (the results go to the JSON file)."""
    print(line, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/raw"))
    parser.add_argument("--quick", action="store_true", help="a tiny sweep (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        section = run(QUICK["families"], QUICK["sizes"], QUICK["q_full"], QUICK["q_diag"])
    else:
        section = run(FAMILY_NAMES, SIZES_N, Q_BOTH, Q_DIAG)
    section["command"] = " ".join(
        ["python -m benchmarks.inprocess", *(sys.argv[1:] if argv is None else argv)]
    )
    print(write_section(section, args.out))


if __name__ == "__main__":
    main()
