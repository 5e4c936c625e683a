"""Capacity for scale-out: requests per second of one TorchServe worker on one core, and the
KServe replicas they imply (the ``capacity`` section, ``make bench``).

    .venv/bin/python -m benchmarks.capacity --out benchmarks/results/raw [--seconds 8] [--quick]

See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path

import torch

from benchmarks.sections import write_section
from benchmarks.servers import archive_with
from gp_serve.handler import gp_artifact
from gp_serve.serving.load import closed_loop
from gp_serve.serving.local_server import BENCHMARK_SETTINGS, served

CLIENTS = 4
WORKLOADS = ((1, "diag"), (1, "full"), (100, "diag"), (100, "full"), (1000, "diag"), (1000, "full"))
WORKERS_PER_REPLICA = 2
UTILISATION = 0.7
TARGETS = (1_000, 10_000)


def measure(model_dir: Path, seconds: float, workloads=WORKLOADS) -> dict:
    """Serve ``model_dir`` with one worker and measure every workload; the report section."""
    metadata = gp_artifact.load_metadata(model_dir)
    bounds = torch.tensor(metadata.input_bounds, dtype=torch.float64)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gp-capacity-") as tmp:
        root = Path(tmp)
        store = archive_with(model_dir, root, torch_threads=1, minWorkers=1, maxWorkers=1)
        with served(store, root, **BENCHMARK_SETTINGS) as server:
            generator = torch.Generator().manual_seed(0)
            for q, mode in workloads:
                unit = torch.rand(q, bounds.size(0), generator=generator, dtype=torch.float64)
                X = bounds[:, 0] + unit * (bounds[:, 1] - bounds[:, 0])
                body = json.dumps({"inputs": X.tolist(), "covariance": mode}).encode()
                closed_loop(server.predict_url, [body], CLIENTS, min(2.0, seconds))  # warm-up
                load = closed_loop(server.predict_url, [body], CLIENTS, seconds)
                per_replica = load.rate * WORKERS_PER_REPLICA * UTILISATION
                rows.append(
                    [
                        q,
                        mode,
                        1,
                        CLIENTS,
                        round(load.rate, 1),
                        round(statistics.median(load.latencies) * 1e3, 2),
                        round(load.percentile(99) * 1e3, 2),
                        *(
                            math.ceil(target / per_replica) if per_replica > 0 else None
                            for target in TARGETS
                        ),
                        len(load.errors),
                    ]
                )
    return {
        "section": "capacity",
        "title": "Capacity: one TorchServe worker on one core (for scale-out)",
        "columns": [
            "q",
            "covariance",
            "workers",
            "clients",
            "req/s per worker-core",
            "p50 ms",
            "p99 ms",
            "replicas for 1,000 req/s",
            "replicas for 10,000 req/s",
            "errors",
        ],
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
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.capacity", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--model-dir", type=Path, default=Path("build/model"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--quick", action="store_true", help="q=1 only, 2 s per row")
    args = parser.parse_args(argv)
    workloads = WORKLOADS[:2] if args.quick else WORKLOADS
    section = measure(args.model_dir, 2.0 if args.quick else args.seconds, workloads)
    write_section(section, args.out)
    for row in section["rows"]:
        print(dict(zip(section["columns"], row, strict=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
