"""Measure TorchServe workers x batching x torch threads for the GP handler.

    .venv/bin/python -m benchmarks.workers_batching [--model-dir build/model]

For every configuration the model is archived with a modified copy of
``handler/model-config.yaml`` and served by a real TorchServe on free loopback
ports; 8 concurrent clients then send fixed workloads, several rounds each. The
table gives, per configuration and workload, the median throughput and median
latency over the rounds, and their ratios to the first configuration, side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import torch
import yaml

from gp_serve.serving.archive import MODEL_CONFIG, build_archive
from gp_serve.serving.local_server import BENCHMARK_SETTINGS, LocalTorchServe, write_config
from gp_serve.serving.properties import DEFAULT_CONFIG

# (workers, batchSize, torch threads per worker); the first is TorchServe's default
# on this 2-core machine (a worker per core, no batching, torch's default threads).
CONFIGS = [(2, 1, 2), (1, 1, 1), (2, 1, 1), (2, 4, 1), (2, 8, 1)]
# name -> (points per request, covariance mode)
WORKLOADS = {"q=1 diag": (1, "diag"), "q=64 full": (64, "full"), "q=2000 diag": (2000, "diag")}
CLIENTS = 8


def _session_post(url: str, bodies: list[str]) -> list[float]:
    session = requests.Session()
    latencies = []
    for body in bodies:
        start = time.perf_counter()
        response = session.post(url, data=body, headers={"Content-Type": "application/json"},
                                timeout=120)
        latencies.append(time.perf_counter() - start)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
    return latencies


def run_round(url: str, q: int, mode: str, requests_per_client: int, seed: int) -> tuple[float, float]:
    """One round: ``CLIENTS`` clients in parallel; returns (requests/s, median latency s)."""
    generator = torch.Generator().manual_seed(seed)
    bodies = [
        [json.dumps({"inputs": torch.rand(q, 2, generator=generator, dtype=torch.float64).tolist(),
                     "covariance": mode}) for _ in range(requests_per_client)]
        for _ in range(CLIENTS)
    ]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        latencies = [t for result in pool.map(lambda b: _session_post(url, b), bodies) for t in result]
    elapsed = time.perf_counter() - start
    return len(latencies) / elapsed, statistics.median(latencies)


def measure(model_dir: Path, workdir: Path, config: tuple[int, int, int], rounds: int,
            requests_per_client: int) -> dict[str, tuple[float, float]]:
    """Serve ``model_dir`` with one configuration; median (req/s, latency) per workload."""
    workers, batch, threads = config
    model_config = yaml.safe_load(MODEL_CONFIG.read_text())
    model_config.update(minWorkers=workers, maxWorkers=workers, batchSize=batch, maxBatchDelay=5)
    model_config["handler"]["torch_threads"] = threads
    (workdir / "model_store").mkdir(parents=True)
    (workdir / "model-config.yaml").write_text(yaml.safe_dump(model_config))
    build_archive(model_dir, workdir / "model_store", model_config=workdir / "model-config.yaml")
    config_path = write_config(DEFAULT_CONFIG, workdir / "config.properties",
                               str(workdir / "model_store"), **BENCHMARK_SETTINGS)
    server = LocalTorchServe(config_path, workdir / "model_store", workdir / "logs")
    server.start()
    try:
        server.wait_ready()
        results = {}
        for name, (q, mode) in WORKLOADS.items():
            count = requests_per_client if q < 1000 else max(2, requests_per_client // 10)
            run_round(server.predict_url, q, mode, 5, seed=0)  # warm-up
            rounds_out = [run_round(server.predict_url, q, mode, count, seed=r + 1)
                          for r in range(rounds)]
            results[name] = (statistics.median(r[0] for r in rounds_out),
                             statistics.median(r[1] for r in rounds_out))
        return results
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    """Run every configuration and print the table (Markdown)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers_batching", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default="build/model", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=40, help="per client per round")
    args = parser.parse_args(argv)
    table = {}
    with tempfile.TemporaryDirectory(prefix="gp-bench-") as tmp:
        for i, config in enumerate(CONFIGS):
            table[config] = measure(args.model_dir, Path(tmp) / str(i), config, args.rounds,
                                    args.requests)
    base = table[CONFIGS[0]]
    print(f"{CLIENTS} concurrent clients, median of {args.rounds} rounds; "
          "ratios are to the first row (throughput: higher is better; latency: lower)\n")
    header = "| workers | batchSize | threads/worker |" + "".join(
        f" {w} req/s | x | {w} p50 ms | x |" for w in WORKLOADS)
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
