"""Eager BoTorch vs the exported TorchScript posterior, side by side, per model family.

    .venv/bin/python -m benchmarks.bench_posterior [--repeats 30]

For the default data (BraninCurrin, N=64, m=2) fitted as each family (``single``,
``list``, ``multitask``, ``kronecker``, ``saas`` where it can be fitted; see ``export/fit.py``) and q points, prints the median wall time
of eager ``model.posterior(X)`` (mean, variance, covariance) and of the TorchScript
``forward`` and ``mean_var``, and their ratios. One process, one thread, one run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from export import trace_posterior
from export.families import eager_moments
from export.data import default_data
from export.fit import MODELS, fit_model


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def eager(model, X):
    """The eager posterior the export gate compares with (``model.posterior``'s moments;
    for ``KroneckerMultiTaskGP`` GPyTorch's exact prediction, see export/kronecker.py)."""
    return eager_moments(model, X, False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = default_data()
    print(f"torch {torch.__version__}, 1 thread, median of {args.repeats}")
    print(f"{'model':>10} {'q':>6} {'eager ms':>10} {'forward ms':>11} {'mean_var ms':>12} "
          f"{'eager/forward':>14} {'eager/mean_var':>15}")
    for family in MODELS:
        try:
            model = fit_model(data, family)
        except (ImportError, ValueError) as e:  # saas: one output, and its extra on 0.13+
            print(f"{family:>10} skipped: {str(e).split(';')[0]}")
            continue
        module = trace_posterior(model, torch.rand(4, 2, dtype=torch.float64))
        for q in (1, 10, 100, 1000):
            X = torch.rand(q, 2, dtype=torch.float64)
            t_eager = median_seconds(lambda: eager(model, X), args.repeats)  # noqa: B023
            t_forward = median_seconds(lambda: module(X), args.repeats)  # noqa: B023
            t_mean_var = median_seconds(lambda: module.mean_var(X), args.repeats)  # noqa: B023
            print(f"{family:>10} {q:>6} {t_eager * 1e3:>10.3f} {t_forward * 1e3:>11.3f} "
                  f"{t_mean_var * 1e3:>12.3f} {t_eager / t_forward:>14.1f} "
                  f"{t_eager / t_mean_var:>15.1f}")


if __name__ == "__main__":
    main()
