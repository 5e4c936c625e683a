"""Capacity for scale-out: requests per second of one TorchServe worker on one core.

    .venv/bin/python -m benchmarks.capacity --out benchmarks/results/raw [--seconds 8] [--quick]

One TorchServe serving the exported model (``build/model``) with ONE worker and one torch
thread, on free loopback ports; ``CLIENTS`` loopback clients keep it saturated with fixed
requests (q = 1, 100, 1000; diag and full) for ``--seconds`` each. The worker process uses
one core; the frontend and the load generator share the other of this 2-core machine, so
the figures are per worker and per core. From them, the replicas (2 workers on 2 cores
each, as ``deploy/kserve/inferenceservice.yaml`` sizes a pod) needed for 1,000 and 10,000
requests per second at a 70% utilisation target (Knative's ``target-utilization-percentage``).
Written as the ``capacity`` section of the benchmark report (``benchmarks/report.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests
import torch
import yaml

from gp_serve.handler import gp_artifact
from gp_serve.serving.archive import MODEL_CONFIG, build_archive
from gp_serve.serving.local_server import BENCHMARK_SETTINGS, LocalTorchServe, write_config
from gp_serve.serving.properties import DEFAULT_CONFIG

CLIENTS = 4
WORKLOADS = ((1, "diag"), (1, "full"), (100, "diag"), (100, "full"), (1000, "diag"),
             (1000, "full"))
WORKERS_PER_REPLICA = 2
UTILISATION = 0.7
TARGETS = (1_000, 10_000)


def _saturate(url: str, body: bytes, clients: int, seconds: float) -> tuple[int, list[float], int]:
    """``clients`` threads posting ``body`` back to back; (answers, latencies, errors)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        session = requests.Session()
        while time.monotonic() < deadline:
            started = time.monotonic()
            response = session.post(url, data=body, timeout=120,
                                    headers={"Content-Type": "application/json"})
            with lock:
                if response.status_code == 200:
                    latencies.append(time.monotonic() - started)
                else:
                    errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies), latencies, errors[0]


def measure(model_dir: Path, seconds: float, workloads=WORKLOADS) -> dict:
    """Serve ``model_dir`` with one worker and measure every workload; the report section."""
    metadata = gp_artifact.load_metadata(model_dir)
    bounds = torch.tensor(metadata.input_bounds, dtype=torch.float64)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gp-capacity-") as tmp:
        root = Path(tmp)
        config = yaml.safe_load(MODEL_CONFIG.read_text())
        config.update(minWorkers=1, maxWorkers=1)
        config["handler"]["torch_threads"] = 1
        (root / "model-config.yaml").write_text(yaml.safe_dump(config))
        (root / "store").mkdir()
        build_archive(model_dir, root / "store", model_config=root / "model-config.yaml")
        server = LocalTorchServe(write_config(DEFAULT_CONFIG, root / "config.properties",
                                              str(root / "store"), **BENCHMARK_SETTINGS), root / "store", root / "logs")
        server.start()
        try:
            server.wait_ready()
            generator = torch.Generator().manual_seed(0)
            for q, mode in workloads:
                unit = torch.rand(q, bounds.size(0), generator=generator, dtype=torch.float64)
                X = bounds[:, 0] + unit * (bounds[:, 1] - bounds[:, 0])
                body = json.dumps({"inputs": X.tolist(), "covariance": mode}).encode()
                _saturate(server.predict_url, body, CLIENTS, min(2.0, seconds))  # warm-up
                count, latencies, errors = _saturate(server.predict_url, body, CLIENTS, seconds)
                rate = count / seconds
                per_replica = rate * WORKERS_PER_REPLICA * UTILISATION
                ordered = sorted(latencies)
                rows.append([
                    q, mode, 1, CLIENTS, round(rate, 1),
                    round(statistics.median(ordered) * 1e3, 2),
                    round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e3, 2),
                    *(math.ceil(target / per_replica) if per_replica > 0 else None
                      for target in TARGETS),
                    errors,
                ])
        finally:
            server.stop()
    return {
        "section": "capacity",
        "title": "Capacity: one TorchServe worker on one core (for scale-out)",
        "columns": ["q", "covariance", "workers", "clients", "req/s per worker-core",
                    "p50 ms", "p99 ms", "replicas for 1,000 req/s",
                    "replicas for 10,000 req/s", "errors"],
        "rows": rows,
        "notes": [
            f"{CLIENTS} loopback clients keep one worker (1 torch thread) saturated for "
            f"{seconds:g} s per row, after a warm-up; fixed request bodies, answers checked "
            "for HTTP 200.",
            f"Replicas: {WORKERS_PER_REPLICA} workers on {WORKERS_PER_REPLICA} cores each (the "
            f"InferenceService's requests/limits), at {UTILISATION:.0%} utilisation: "
            "ceil(target / (req/s x workers x utilisation)). Linear scaling across replicas "
            "is an assumption (replicas share nothing); the frontend's own cost is inside "
            "the measured rate.",
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capacity",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path("build/model"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--quick", action="store_true", help="q=1 only, 2 s per row")
    args = parser.parse_args(argv)
    workloads = WORKLOADS[:2] if args.quick else WORKLOADS
    section = measure(args.model_dir, 2.0 if args.quick else args.seconds, workloads)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "capacity.json").write_text(json.dumps(section, indent=1))
    for row in section["rows"]:
        print(dict(zip(section["columns"], row)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
