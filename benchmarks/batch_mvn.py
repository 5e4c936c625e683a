"""Eager GPyTorch: an m-output posterior assembled by ``from_batch_mvn`` vs
``from_independent_mvns`` (BoTorch issue #2591; the ``batch_mvn`` section, ``make bench``).

    .venv/bin/python -m benchmarks.batch_mvn --out benchmarks/results/raw [--quick]

See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from gpytorch.distributions import MultitaskMultivariateNormal, MultivariateNormal
from torch import Tensor

from benchmarks.inprocess import Timing, single_task_model, test_points, time_calls
from benchmarks.sections import write_section
from gp_serve.export.gate import relative_error
from gp_serve.export.kronecker import output_major

Q_SIZES = (1, 10, 100, 1000)
M_SIZES = (1, 2, 4, 8)
QUICK = {"q": (1, 10), "m": (1, 2)}
N_TRAIN = 50
COLUMNS = [
    "q",
    "m",
    "from_batch_mvn ms",
    "from_independent_mvns ms",
    "ratio",
    "layout batch",
    "layout independent",
    "max rel diff",
]


def layout(mvn: MultitaskMultivariateNormal) -> str:
    """``interleaved`` (row ``i*m + t``) or ``output-major`` (row ``t*q + i``)."""
    return "interleaved" if mvn._interleaved else "output-major"


def posterior_batch(m: int, q: int) -> tuple[Tensor, Tensor]:
    """The latent posterior of an m-output ``SingleTaskGP`` at q points, as BoTorch
    computes it before assembling: mean `m x q` and dense covariance `m x q x q`."""
    model = single_task_model(N_TRAIN, m, seed=m)
    X = test_points(q, q)
    with torch.no_grad():  # as BoTorch's posterior: X with an output dimension, `1 x q x d`
        mvn = model(model.transform_inputs(X).unsqueeze(0))
        mean, covariance = mvn.mean.detach().clone(), mvn.covariance_matrix.detach().clone()
    assert mean.shape == (m, q) and covariance.shape == (m, q, q)
    return mean, covariance


def by_batch(mean: Tensor, covariance: Tensor) -> dict[str, Tensor | str]:
    """``from_batch_mvn(batch, task_dim=0)`` and its mean, variance, dense covariance."""
    mtmvn = MultitaskMultivariateNormal.from_batch_mvn(
        MultivariateNormal(mean, covariance), task_dim=0
    )
    return {
        "mean": mtmvn.mean,
        "variance": mtmvn.variance,
        "covariance": mtmvn.covariance_matrix,
        "layout": layout(mtmvn),
    }


def by_independent(mean: Tensor, covariance: Tensor) -> dict[str, Tensor | str]:
    """BoTorch's eager path: one MVN per output indexed out of the batch MVN, then
    ``from_independent_mvns``; its mean, variance and dense covariance."""
    batch = MultivariateNormal(mean, covariance)
    mean_x, covar_x = batch.mean, batch.lazy_covariance_matrix
    mvns = [
        MultivariateNormal(mean_x.select(dim=0, index=t), covar_x[t]) for t in range(mean.size(0))
    ]
    mtmvn = MultitaskMultivariateNormal.from_independent_mvns(mvns=mvns)
    return {
        "mean": mtmvn.mean,
        "variance": mtmvn.variance,
        "covariance": mtmvn.covariance_matrix,
        "layout": layout(mtmvn),
    }


def to_output_major(result: dict, q: int, m: int) -> Tensor:
    """The dense covariance of ``result`` in the output-major layout."""
    if result["layout"] == "interleaved":
        return output_major(result["covariance"], q, m)
    return result["covariance"]


def compare(batch: dict, independent: dict, q: int, m: int) -> float:
    """Max relative difference of mean, variance and (same-layout) covariance."""
    return max(
        relative_error(batch["mean"], independent["mean"]),
        relative_error(batch["variance"], independent["variance"]),
        relative_error(to_output_major(batch, q, m), to_output_major(independent, q, m)),
    )


def run(q_sizes: tuple[int, ...], m_sizes: tuple[int, ...]) -> dict:
    """The sweep, as the section's JSON object."""
    torch.set_num_threads(1)
    rows: list[list] = []
    notes = [
        "Eager GPyTorch, one thread, float64. Per cell: one warm-up call, then repeats "
        "(as in the inprocess section); times cover building the MultitaskMultivariateNormal "
        "from a fresh dense batch MVN and reading .mean, .variance and .covariance_matrix.",
        "ratio: from_batch_mvn / from_independent_mvns (medians; < 1: from_batch_mvn faster).",
        "max rel diff: max |a - b| / max |b| over mean, variance and the covariance, "
        "from_batch_mvn's interleaved covariance permuted to output-major first.",
    ]
    for m in m_sizes:
        for q in q_sizes:
            mean, covariance = posterior_batch(m, q)
            # (each lambda is timed at once, in its own iteration: late binding cannot bite)
            batch: Timing = time_calls(lambda: by_batch(mean, covariance))  # noqa: B023
            row: list = [q, m, batch.median_ms, None, None, batch.result["layout"], None, None]
            if m >= 2:
                independent = time_calls(lambda: by_independent(mean, covariance))  # noqa: B023
                row[3:5] = [independent.median_ms, batch.median_ms / independent.median_ms]
                row[6] = independent.result["layout"]
                row[7] = compare(batch.result, independent.result, q, m)
            rows.append(row)
    if 1 in m_sizes:
        notes.append(
            "m=1: from_independent_mvns raises ValueError (it needs at least 2 "
            "MVNs); BoTorch does not assemble a one-output posterior."
        )
    return {
        "section": "batch_mvn",
        "title": "MultitaskMultivariateNormal.from_batch_mvn(task_dim=0) vs "
        "from_independent_mvns, eager (BoTorch issue #2591)",
        "columns": COLUMNS,
        "rows": rows,
        "notes": notes,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/raw"))
    parser.add_argument("--quick", action="store_true", help="a tiny sweep (smoke test)")
    args = parser.parse_args(argv)
    sizes = (QUICK["q"], QUICK["m"]) if args.quick else (Q_SIZES, M_SIZES)
    section = run(*sizes)
    section["command"] = " ".join(
        ["python -m benchmarks.batch_mvn", *(sys.argv[1:] if argv is None else argv)]
    )
    print(write_section(section, args.out))


if __name__ == "__main__":
    main()
