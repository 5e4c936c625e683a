"""Soak: many loopback clients of mixed sizes and modes against a real TorchServe, for a while.

    gp-serve soak [--seconds 300] [--clients 16] [--model-dir build/model]

(``make soak``.) Archives the exported model, serves it with a fresh TorchServe on free
127.0.0.1 ports, warms it up, then lets ``--clients`` threads send a seeded mix of JSON
(full, diag, none; q from 1 to 2000) and CSV requests for ``--seconds``. Every answer is
checked against the in-process TorchScript module. Prints requests, errors, p50/p99
latency and the workers' resident memory growth; exits 1 on any error, a worker restart
or memory growth of 10% or more.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests
import torch

from gp_serve.handler import gp_artifact
from gp_serve.serving.archive import MODEL_NAME, build_archive
from gp_serve.serving.local_server import LocalTorchServe, write_config
from gp_serve.serving.properties import DEFAULT_CONFIG

MAX_RSS_GROWTH = 0.10
REQUEST_TIMEOUT_S = 60.0
# (weight, q, mode): mostly small requests, some large; "csv" is a CSV body.
MIX = [(40, 1, "diag"), (15, 1, "full"), (15, 10, "full"), (10, 100, "full"),
       (8, 100, "none"), (6, 500, "csv"), (4, 2000, "diag"), (2, 2000, "csv")]


@dataclass
class LoadResult:
    """What a load run saw. ``errors`` holds one line per failed or wrong answer."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def requests(self) -> int:
        return len(self.latencies) + len(self.errors)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


def _request(rng: random.Random, bounds: list[list[float]]) -> tuple[torch.Tensor, str, bytes, str]:
    q, mode = rng.choices([(q, mode) for _, q, mode in MIX], [w for w, _, _ in MIX])[0]
    X = torch.tensor([[rng.uniform(lo, hi) for lo, hi in bounds] for _ in range(q)],
                     dtype=torch.float64)
    if mode == "csv":
        return X, mode, "".join(",".join(map(repr, row)) + "\n" for row in X.tolist()).encode(), \
            "text/csv"
    return X, mode, json.dumps({"inputs": X.tolist(), "covariance": mode}).encode(), \
        "application/json"


def _wrong(response: requests.Response, X: torch.Tensor, mode: str, module) -> str | None:
    """Why an answer differs from the module's, or None."""
    mean = module.mean_var(X)[0]
    if mode == "csv":
        rows = response.text.splitlines()[1:]
        got = torch.tensor([[float(v) for v in row.split(",")[::2]] for row in rows],
                           dtype=torch.float64)
    else:
        answer = response.json()
        got = torch.tensor(answer["mean"], dtype=torch.float64)
        if ("covariance" in answer) != (mode == "full"):
            return f"covariance {'missing' if mode == 'full' else 'sent'} for {mode}"
    if got.shape != mean.shape:
        return f"mean of shape {tuple(got.shape)}, expected {tuple(mean.shape)}"
    error = ((got - mean).abs().max() / mean.abs().max()).item()
    return None if error <= 1e-9 else f"mean differs by {error:.3g} (relative)"


def run_load(url: str, module, bounds: list[list[float]], clients: int, seconds: float,
             seed: int = 0, stop: threading.Event | None = None,
             headers: dict[str, str] | None = None) -> LoadResult:
    """``clients`` threads sending the `MIX` to ``url`` for ``seconds`` (or until ``stop``),
    each request with ``headers`` (the inference key) besides its Content-Type."""
    result, stop = LoadResult(), stop or threading.Event()
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        rng, session = random.Random(seed * 1000 + index), requests.Session()
        while time.monotonic() < deadline and not stop.is_set():
            X, mode, body, content_type = _request(rng, bounds)
            started = time.monotonic()
            try:
                response = session.post(url, data=body, timeout=REQUEST_TIMEOUT_S,
                                        headers={"Content-Type": content_type, **(headers or {})})
                elapsed = time.monotonic() - started
                problem = (f"HTTP {response.status_code}: {response.text[:200]}"
                           if response.status_code != 200 else _wrong(response, X, mode, module))
            except requests.RequestException as e:
                elapsed, problem = time.monotonic() - started, f"{type(e).__name__}: {e}"
            with result.lock:
                if problem:
                    result.errors.append(f"client {index}, q={X.size(0)} {mode}, "
                                         f"after {elapsed:.1f}s: {problem}")
                else:
                    result.latencies.append(elapsed)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result


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
            f"{load.requests} requests in {self.seconds:.0f} s ({load.requests / self.seconds:.1f}/s),"
            f" {len(load.errors)} errors",
            f"latency p50 {load.percentile(50) * 1e3:.1f} ms, p99 {load.percentile(99) * 1e3:.1f} ms",
            f"worker RSS {sum(self.rss_before.values()) / 2**20:.1f} -> "
            f"{sum(self.rss_after.values()) / 2**20:.1f} MiB ({self.rss_growth:+.1%}), "
            f"workers {'RESTARTED' if self.restarted else 'unchanged'} ({sorted(self.rss_after)})",
        ]
        return "\n".join(lines + [f"  error: {e}" for e in load.errors[:20]])


def soak(server: LocalTorchServe, module, seconds: float, clients: int = 16,
         warmup: float = 10.0) -> SoakReport:
    """Warm up, then soak ``server`` and measure the workers' memory around it."""
    bounds = server.metadata().input_bounds
    run_load(server.predict_url, module, bounds, clients, warmup, seed=1,
             headers=server.headers())
    before = worker_memory(server)
    started = time.monotonic()
    load = run_load(server.predict_url, module, bounds, clients, seconds, seed=2,
                    headers=server.headers())
    elapsed = time.monotonic() - started
    after = worker_memory(server)
    return SoakReport(load, elapsed, before, after)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The soak command's options (``gp-serve soak``)."""
    parser.add_argument("--seconds", type=float, default=300.0,
                        help="how long the clients send (default: 300)")
    parser.add_argument("--clients", type=int, default=16,
                        help="concurrent loopback clients (default: 16)")
    parser.add_argument("--model-dir", type=Path, default=Path("build/model"),
                        help="the exported artifact to serve (default: build/model)")


def run(args: argparse.Namespace) -> int:
    """Soak and print the report; 1 on any error, a worker restart or memory growth."""
    module = torch.jit.load(gp_artifact.check_posterior(args.model_dir))
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="gp-soak-") as tmp:
        root = Path(tmp)
        build_archive(args.model_dir, root / "store")
        config = write_config(DEFAULT_CONFIG, root / "config.properties", str(root / "store"))
        server = LocalTorchServe(config, root / "store", root / "logs")
        server.start()
        try:
            server.wait_ready()
            print(f"soaking {server.predict_url}: {args.clients} clients, {args.seconds:.0f} s "
                  "(after 10 s of warm-up)", flush=True)
            report = soak(server, module, args.seconds, args.clients)
        finally:
            server.stop()
    print(report.summary())
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    """``gp-serve soak``: see the module docstring."""
    from gp_serve.cli import module_main

    return module_main(__name__, "gp-serve soak", argv)


if __name__ == "__main__":
    sys.exit(main())
