"""Soak: loopback clients of mixed sizes and modes against a fresh TorchServe for a while, every
answer checked against the in-process module (``gp-serve soak``, ``make soak``).

Exits 1 on any error, a worker restart or worker memory growth of 10% or more; docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

from gp_serve.handler import gp_artifact
from gp_serve.serving.archive import MODEL_NAME, build_archive
from gp_serve.serving.load import Answer, LoadResult, Request, closed_loop
from gp_serve.serving.local_server import LocalTorchServe, served

MAX_RSS_GROWTH = 0.10
REQUEST_TIMEOUT_S = 60.0
# (weight, q, mode): mostly small requests, some large; "csv" is a CSV body.
MIX = [
    (40, 1, "diag"),
    (15, 1, "full"),
    (15, 10, "full"),
    (10, 100, "full"),
    (8, 100, "none"),
    (6, 500, "csv"),
    (4, 2000, "diag"),
    (2, 2000, "csv"),
]


def mixed_requests(rng: random.Random, bounds: list[list[float]]) -> Iterator[Request]:
    """Requests drawn from `MIX` without end, each with its points and mode as ``expected``."""
    while True:
        q, mode = rng.choices([(q, mode) for _, q, mode in MIX], [w for w, _, _ in MIX])[0]
        X = torch.tensor(
            [[rng.uniform(lo, hi) for lo, hi in bounds] for _ in range(q)], dtype=torch.float64
        )
        if mode == "csv":
            body = "".join(",".join(map(repr, row)) + "\n" for row in X.tolist())
            yield Request(body.encode(), "text/csv", f"q={q} {mode}", (X, mode))
        else:
            yield Request(
                json.dumps({"inputs": X.tolist(), "covariance": mode}).encode(),
                note=f"q={q} {mode}",
                expected=(X, mode),
            )


def wrong(answer: Answer, request: Request, module) -> str | None:
    """Why an answer differs from the module's, or None."""
    X, mode = request.expected
    mean = module.mean_var(X)[0]
    if mode == "csv":
        rows = answer.text.splitlines()[1:]
        got = torch.tensor(
            [[float(v) for v in row.split(",")[::2]] for row in rows], dtype=torch.float64
        )
    else:
        document = answer.json()
        got = torch.tensor(document["mean"], dtype=torch.float64)
        if ("covariance" in document) != (mode == "full"):
            return f"covariance {'missing' if mode == 'full' else 'sent'} for {mode}"
    if got.shape != mean.shape:
        return f"mean of shape {tuple(got.shape)}, expected {tuple(mean.shape)}"
    error = ((got - mean).abs().max() / mean.abs().max()).item()
    return None if error <= 1e-9 else f"mean differs by {error:.3g} (relative)"


def run_load(
    url: str,
    module,
    bounds: list[list[float]],
    clients: int,
    seconds: float,
    seed: int = 0,
    stop: threading.Event | None = None,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """``clients`` threads sending the `MIX` to ``url`` for ``seconds`` (or until ``stop``),
    each request with ``headers`` (the inference key) besides its Content-Type."""
    return closed_loop(
        url,
        lambda index: mixed_requests(random.Random(seed * 1000 + index), bounds),
        clients,
        seconds,
        lambda answer, request: wrong(answer, request, module),
        stop=stop,
        headers=headers,
        timeout=REQUEST_TIMEOUT_S,
    )


def worker_memory(server: LocalTorchServe, model: str = MODEL_NAME) -> dict[int, int]:
    """Resident memory (bytes) of each of ``model``'s worker processes, by pid."""
    return {pid: psutil.Process(pid).memory_info().rss for pid in server.worker_pids(model)}


@dataclass
class SoakReport:
    load: LoadResult
    seconds: float
    rss_before: dict[int, int]
    rss_after: dict[int, int]

    @property
    def restarted(self) -> bool:
        return set(self.rss_before) != set(self.rss_after)

    @property
    def rss_growth(self) -> float:
        return sum(self.rss_after.values()) / sum(self.rss_before.values()) - 1.0

    @property
    def ok(self) -> bool:
        return not self.load.errors and not self.restarted and self.rss_growth < MAX_RSS_GROWTH

    def summary(self) -> str:
        load = self.load
        lines = [
            f"{load.requests} requests in {self.seconds:.0f} s "
            f"({load.requests / self.seconds:.1f}/s),"
            f" {len(load.errors)} errors",
            f"latency p50 {load.percentile(50) * 1e3:.1f} ms, "
            f"p99 {load.percentile(99) * 1e3:.1f} ms",
            f"worker RSS {sum(self.rss_before.values()) / 2**20:.1f} -> "
            f"{sum(self.rss_after.values()) / 2**20:.1f} MiB ({self.rss_growth:+.1%}), "
            f"workers {'RESTARTED' if self.restarted else 'unchanged'} ({sorted(self.rss_after)})",
        ]
        return "\n".join(lines + [f"  error: {e}" for e in load.errors[:20]])


def soak(
    server: LocalTorchServe, module, seconds: float, clients: int = 16, warmup: float = 10.0
) -> SoakReport:
    """Warm up, then soak ``server`` and measure the workers' memory around it."""
    bounds = server.metadata().input_bounds
    run_load(server.predict_url, module, bounds, clients, warmup, seed=1, headers=server.headers())
    before = worker_memory(server)
    load = run_load(
        server.predict_url, module, bounds, clients, seconds, seed=2, headers=server.headers()
    )
    return SoakReport(load, load.seconds, before, worker_memory(server))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The soak command's options (``gp-serve soak``)."""
    parser.add_argument(
        "--seconds", type=float, default=300.0, help="how long the clients send (default: 300)"
    )
    parser.add_argument(
        "--clients", type=int, default=16, help="concurrent loopback clients (default: 16)"
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path("build/model"),
        help="the exported artifact to serve (default: build/model)",
    )


def run(args: argparse.Namespace) -> int:
    """Soak and print the report; 1 on any error, a worker restart or memory growth."""
    module = torch.jit.load(gp_artifact.check_posterior(args.model_dir))
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="gp-soak-") as tmp:
        root = Path(tmp)
        build_archive(args.model_dir, root / "store")
        with served(root / "store", root) as server:
            print(
                f"soaking {server.predict_url}: {args.clients} clients, {args.seconds:.0f} s "
                "(after 10 s of warm-up)",
                flush=True,
            )
            report = soak(server, module, args.seconds, args.clients)
    print(report.summary())
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    """``gp-serve soak``: see the module docstring."""
    from gp_serve.cli import module_main

    return module_main(__name__, "gp-serve soak", argv)


if __name__ == "__main__":
    sys.exit(main())
