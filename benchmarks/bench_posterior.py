"""Eager BoTorch vs the exported TorchScript posterior, side by side.

    .venv/bin/python -m benchmarks.bench_posterior [--repeats 30]

Prints, for the default model (BraninCurrin, N=64, m=2) and q points, the median
wall time of eager ``model.posterior(X)`` (mean, variance, covariance) and of the
TorchScript ``forward`` and ``mean_var``, and their ratios. One process, one run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from export import trace_posterior
from export.data import default_data
from export.fit import fit_model


def median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def eager(model, X):
    with torch.no_grad():
        posterior = model.posterior(X)
        return posterior.mean, posterior.variance, posterior.distribution.covariance_matrix


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = fit_model(default_data())
    module = trace_posterior(model, torch.rand(4, 2, dtype=torch.float64))
    print(f"torch {torch.__version__}, 1 thread, median of {args.repeats}")
    print(f"{'q':>6} {'eager ms':>10} {'forward ms':>11} {'mean_var ms':>12} "
          f"{'eager/forward':>14} {'eager/mean_var':>15}")
    for q in (1, 10, 100, 1000):
        X = torch.rand(q, 2, dtype=torch.float64)
        t_eager = median_seconds(lambda: eager(model, X), args.repeats)
        t_forward = median_seconds(lambda: module(X), args.repeats)
        t_mean_var = median_seconds(lambda: module.mean_var(X), args.repeats)
        print(f"{q:>6} {t_eager * 1e3:>10.3f} {t_forward * 1e3:>11.3f} {t_mean_var * 1e3:>12.3f} "
              f"{t_eager / t_forward:>14.1f} {t_eager / t_mean_var:>15.1f}")


if __name__ == "__main__":
    main()
