"""TorchServe workers x batching x torch threads for the GP handler: throughput and median
latency of 8 concurrent clients per configuration, as a Markdown table.

    .venv/bin/python -m benchmarks.workers_batching [--model-dir build/model]

See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from benchmarks.servers import archive_with
from gp_serve.serving.load import closed_loop
from gp_serve.serving.local_server import BENCHMARK_SETTINGS, served

# (workers, batchSize, torch threads per worker); the first is TorchServe's default
# on this 2-core machine (a worker per core, no batching, torch's default threads).
CONFIGS = [(2, 1, 2), (1, 1, 1), (2, 1, 1), (2, 4, 1), (2, 8, 1)]
# name -> (points per request, covariance mode)
WORKLOADS = {"q=1 diag": (1, "diag"), "q=64 full": (64, "full"), "q=2000 diag": (2000, "diag")}
CLIENTS = 8


def run_round(
    url: str, q: int, mode: str, requests_per_client: int, seed: int
) -> tuple[float, float]:
    """One round: ``CLIENTS`` clients in parallel, each sending its own ``requests_per_client``
    bodies; returns (requests/s, median latency s)."""
    generator = torch.Generator().manual_seed(seed)
    bodies = [
        json.dumps(
            {
                "inputs": torch.rand(q, 2, generator=generator, dtype=torch.float64).tolist(),
                "covariance": mode,
            }
        ).encode()
        for _ in range(CLIENTS * requests_per_client)
    ]
    load = closed_loop(url, bodies, CLIENTS, requests=requests_per_client)
    if load.errors:
        raise RuntimeError(load.errors[0])
    return load.rate, statistics.median(load.latencies)


def measure(
    model_dir: Path,
    workdir: Path,
    config: tuple[int, int, int],
    rounds: int,
    requests_per_client: int,
) -> dict[str, tuple[float, float]]:
    """Serve ``model_dir`` with one configuration; median (req/s, latency) per workload."""
    workers, batch, threads = config
    workdir.mkdir(parents=True)
    store = archive_with(
        model_dir,
        workdir,
        torch_threads=threads,
        minWorkers=workers,
        maxWorkers=workers,
        batchSize=batch,
        maxBatchDelay=5,
    )
    with served(store, workdir, **BENCHMARK_SETTINGS) as server:
        results = {}
        for name, (q, mode) in WORKLOADS.items():
            count = requests_per_client if q < 1000 else max(2, requests_per_client // 10)
            run_round(server.predict_url, q, mode, 5, seed=0)  # warm-up
            rounds_out = [
                run_round(server.predict_url, q, mode, count, seed=r + 1) for r in range(rounds)
            ]
            results[name] = (
                statistics.median(r[0] for r in rounds_out),
                statistics.median(r[1] for r in rounds_out),
            )
        return results


def main(argv: list[str] | None = None) -> int:
    """Run every configuration and print the table (Markdown)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.workers_batching",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-dir", default="build/model", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=40, help="per client per round")
    args = parser.parse_args(argv)
    table = {}
    with tempfile.TemporaryDirectory(prefix="gp-bench-") as tmp:
        for i, config in enumerate(CONFIGS):
            table[config] = measure(
                args.model_dir, Path(tmp) / str(i), config, args.rounds, args.requests
            )
    base = table[CONFIGS[0]]
    print(
        f"{CLIENTS} concurrent clients, median of {args.rounds} rounds; "
        "ratios are to the first row (throughput: higher is better; latency: lower)\n"
    )
    header = "| workers | batchSize | threads/worker |" + "".join(
        f" {w} req/s | x | {w} p50 ms | x |" for w in WORKLOADS
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for config, results in table.items():
        cells = "".join(
            f" {rps:.1f} | {rps / base[w][0]:.2f} | {lat * 1000:.1f} | {lat / base[w][1]:.2f} |"
            for w, (rps, lat) in results.items()
        )
        print(f"| {config[0]} | {config[1]} | {config[2]} |{cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
