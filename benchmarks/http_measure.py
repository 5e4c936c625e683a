"""The HTTP benchmark's measurements (`benchmarks.http` runs them): the peer's agreement with gp,
sequential latency, closed-loop throughput (`gp_serve.serving.load.closed_loop`) and CSV batch
scoring. See docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.servers import PEER_WORKERS
from gp_serve.client.score_csv import score_csv
from gp_serve.serving.archive import MODEL_NAME
from gp_serve.serving.load import Connection, LoadResult, closed_loop
from gp_serve.serving.local_server import LocalTorchServe

AGREEMENT_TOLERANCE = 1e-6
ANSWER_TOLERANCE = 1e-9
SEED = 0


@dataclass(frozen=True)
class Plan:
    """What to measure (full run or ``--quick``)."""

    sizes: tuple[int, ...]
    requests: dict[int, int]  # q -> timed requests per server
    warmup: dict[int, int]  # q -> untimed requests per server first
    rounds: int  # interleaved blocks per latency cell
    clients: tuple[int, ...]
    seconds: float  # per throughput cell and server
    csv_rows: tuple[int, ...]
    peer_csv_rows: int  # the largest CSV the peer is also timed on
    csv_sample: int  # rows checked against the module in larger files
    stock_peer: bool = False  # also time a stock `uvicorn --workers 2` peer (q=1 diag)
    peer_workers: int = PEER_WORKERS  # the peer's uvicorn processes (each fits the model)
    # (q, covariance) -> (timed, warm-up) where it differs from requests/warmup
    overrides: dict[tuple[int, str], tuple[int, int]] = field(default_factory=dict)

    def counts(self, q: int, covariance: str) -> tuple[int, int]:
        """Timed and warm-up requests per server for a latency cell."""
        return self.overrides.get((q, covariance), (self.requests[q], self.warmup[q]))


FULL = Plan(
    sizes=(1, 10, 100, 1000),
    requests={1: 300, 10: 300, 100: 100, 1000: 30},
    warmup={1: 20, 10: 20, 100: 20, 1000: 5},
    rounds=3,
    clients=(1, 4, 16, 64),
    seconds=5.0,
    csv_rows=(10**5, 10**6),
    peer_csv_rows=10**5,
    csv_sample=10**5,
    stock_peer=True,
    overrides={(1000, "full"): (20, 2)},
)
QUICK = Plan(
    sizes=(1, 10),
    requests={1: 20, 10: 20},
    warmup={1: 3, 10: 3},
    rounds=2,
    clients=(1, 4),
    seconds=1.0,
    csv_rows=(10**3,),
    peer_csv_rows=10**3,
    csv_sample=10**5,
    peer_workers=1,
)


# --- bodies and checks ---------------------------------------------------------------------


def random_points(bounds: list[list[float]], count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` uniform points in the input box (float64, `count x d`)."""
    lower, upper = np.array(bounds, dtype=np.float64).T
    return rng.uniform(lower, upper, size=(count, len(bounds)))


def json_body(points: np.ndarray, covariance: str) -> bytes:
    """A gp-serve JSON request (full float64 precision)."""
    return json.dumps(
        {"inputs": points.tolist(), "covariance": covariance, "observation_noise": False}
    ).encode()


def relative_error(got: Any, expected: Any) -> float:
    """``max |got - expected| / max |expected|`` (inf if the shapes differ)."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if got.shape != expected.shape:
        return float("inf")
    scale = float(np.abs(expected).max()) or 1.0
    return float(np.abs(got - expected).max()) / scale


def _answer_error(gp: dict, other: dict) -> float:
    """The largest relative difference of ``other`` from ``gp`` over the posterior keys;
    inf if the keys or the layout differ."""
    keys = [
        "model",
        "version",
        "outputs",
        "observation_noise",
        "covariance_layout",
        "extrapolation",
    ]
    if set(gp) != set(other) or any(gp[k] != other[k] for k in keys):
        return float("inf")
    return max(
        relative_error(other[k], gp[k]) for k in ("mean", "variance", "covariance") if k in gp
    )


def agreement(gp_url: str, peer_url: str, module: Any, bounds: list[list[float]]) -> float:
    """Peer vs gp (and gp vs the in-process module) at a few points, full and diag.

    Returns:
        The largest relative difference between the peer's and gp's answers.

    Raises:
        RuntimeError: If gp's own answers differ from the module's by more than
            `ANSWER_TOLERANCE`, or a server refuses a request.
    """
    rng = np.random.default_rng(SEED + 1)
    gp, peer = Connection(gp_url), Connection(peer_url)
    worst = 0.0
    try:
        for q in (1, 1, 3, 8, 20):
            points = random_points(bounds, q, rng)
            for covariance in ("full", "diag"):
                body = json_body(points, covariance)
                answers = []
                for connection in (gp, peer):
                    status, raw = connection.post(body)
                    if status != 200:
                        raise RuntimeError(f"HTTP {status} from {connection.port}: {raw[:300]!r}")
                    answers.append(json.loads(raw))
                X = torch.from_numpy(points)
                if covariance == "full":
                    mean, cov = module.forward(X)
                    expected = {"mean": mean, "covariance": cov}
                else:
                    mean, variance = module.mean_var(X)
                    expected = {"mean": mean, "variance": variance}
                gp_error = max(relative_error(answers[0][k], v) for k, v in expected.items())
                if gp_error > ANSWER_TOLERANCE:
                    raise RuntimeError(f"gp's answer differs from the module's by {gp_error:.3g}")
                worst = max(worst, _answer_error(answers[0], answers[1]))
    finally:
        gp.close()
        peer.close()
    return worst


# --- a. latency ----------------------------------------------------------------------------


def _percentiles(latencies: list[float]) -> tuple[float | None, float | None]:
    if not latencies:
        return None, None
    p50, p99 = np.percentile(np.array(latencies) * 1e3, [50, 99])
    return round(float(p50), 3), round(float(p99), 3)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def measure_latency(
    urls: dict[str, str], bounds: list[list[float]], plan: Plan, log: Any = print
) -> tuple[list[list[Any]], list[str]]:
    """Sequential single-client latency per (q, covariance), servers interleaved.

    Args:
        urls: ``{"gp": ..., "echo": ..., "peer": ...}`` endpoints.
        bounds: The input box the points are drawn in.
        plan: Sizes and request counts.
        log: Progress printer.

    Returns:
        The table's rows and notes on failures (empty if none).
    """
    rng = np.random.default_rng(SEED + 2)
    connections = {name: Connection(url) for name, url in urls.items()}
    rows, problems = [], []
    try:
        for q in plan.sizes:
            for covariance in ("full", "diag"):
                count, warmup = plan.counts(q, covariance)
                bodies = [
                    json_body(random_points(bounds, q, rng), covariance)
                    for _ in range(count + warmup)
                ]
                reopen = json_body(random_points(bounds, 1, rng), covariance)
                latencies: dict[str, list[float]] = {name: [] for name in urls}
                failed: dict[str, int] = {name: 0 for name in urls}
                names = list(urls)
                for name in names:  # warm-up
                    for body in bodies[count:]:
                        connections[name].post(body)
                blocks = np.array_split(np.arange(count), plan.rounds)
                for r, block in enumerate(blocks):
                    order = names[r % len(names) :] + names[: r % len(names)]
                    for name in order:
                        connection = connections[name]
                        connection.post(reopen)  # untimed: reopen an idle connection
                        for i in block:
                            started = time.perf_counter()
                            status, answer = connection.post(bodies[i])
                            elapsed = time.perf_counter() - started
                            if status == 200:
                                latencies[name].append(elapsed)
                            else:
                                failed[name] += 1
                                if failed[name] == 1:
                                    problems.append(
                                        f"q={q} {covariance} {name}: HTTP {status}: "
                                        f"{answer[:200]!r}"
                                    )
                cells = {name: _percentiles(latencies[name]) for name in names}
                row = [
                    q,
                    covariance,
                    *cells["gp"],
                    *cells["echo"],
                    *cells["peer"],
                    _ratio(cells["gp"][0], cells["echo"][0]),
                    _ratio(cells["peer"][0], cells["gp"][0]),
                ]
                rows.append(row)
                log(
                    f"  latency q={q} {covariance}: gp p50 {row[2]} ms, echo {row[4]} ms, "
                    f"peer {row[6]} ms"
                )
    finally:
        for connection in connections.values():
            connection.close()
    return rows, problems


def measure_stock_peer(
    url: str, bounds: list[list[float]], count: int = 100, warmup: int = 10
) -> tuple[float | None, float | None]:
    """p50/p99 (ms) of sequential q=1 diag requests on one keep-alive connection."""
    rng = np.random.default_rng(SEED + 5)
    bodies = [json_body(random_points(bounds, 1, rng), "diag") for _ in range(count + warmup)]
    connection, latencies = Connection(url), []
    try:
        for i, body in enumerate(bodies):
            started = time.perf_counter()
            status, _ = connection.post(body)
            if status == 200 and i >= warmup:
                latencies.append(time.perf_counter() - started)
    finally:
        connection.close()
    return _percentiles(latencies)


# --- b. throughput -------------------------------------------------------------------------


def client_layout(clients: int, max_processes: int = 4) -> list[int]:
    """Threads per client process: ``clients`` spread over at most ``max_processes``."""
    processes = min(clients, max_processes)
    return [clients // processes + (1 if k < clients % processes else 0) for k in range(processes)]


def _noop(_: int = 0) -> int:
    return os.getpid()


def measure_throughput(
    urls: dict[str, str], bounds: list[list[float]], plan: Plan, log: Any = print
) -> tuple[list[list[Any]], list[str]]:
    """Closed-loop load from concurrent clients, gp and peer alternating per cell.

    Args:
        urls: ``{"gp": ..., "peer": ...}`` endpoints.
        bounds: The input box the points are drawn in.
        plan: Client counts and seconds per cell.
        log: Progress printer.

    Returns:
        The table's rows and notes on failures.
    """
    rng = np.random.default_rng(SEED + 3)
    rows, problems = [], []
    # fork on Linux: the client processes start at once (spawn would import torch in each);
    # they only run http.client, and this process has no threads of its own at this point.
    context = get_context("fork" if sys.platform == "linux" else "spawn")
    max_processes = max(len(client_layout(c)) for c in plan.clients)
    with ProcessPoolExecutor(max_workers=max_processes, mp_context=context) as pool:
        list(pool.map(_noop, range(max_processes * 4)))  # start the client processes first
        for n, clients in enumerate(plan.clients):
            for covariance in ("diag", "full"):
                bodies = [json_body(random_points(bounds, 1, rng), covariance) for _ in range(256)]
                names = ["gp", "peer"] if n % 2 == 0 else ["peer", "gp"]
                cells: dict[str, tuple[float, float | None, float | None, int]] = {}
                for name in names:
                    start_at = time.monotonic() + 0.5
                    futures = [
                        pool.submit(
                            closed_loop,
                            urls[name],
                            bodies,
                            threads,
                            plan.seconds,
                            start_at=start_at,
                            warm_up=True,
                        )
                        for threads in client_layout(clients)
                    ]
                    load = LoadResult.merge(future.result() for future in futures)
                    problems += [
                        f"{clients} clients {covariance} {name}: {error}"
                        for error in load.errors[:2]
                    ]
                    cells[name] = (load.rate, *_percentiles(load.latencies), len(load.errors))
                gp, peer = cells["gp"], cells["peer"]
                rows.append(
                    [
                        clients,
                        covariance,
                        round(gp[0], 1),
                        round(peer[0], 1),
                        _ratio(gp[0], peer[0]),
                        gp[1],
                        gp[2],
                        peer[1],
                        peer[2],
                        gp[3] + peer[3],
                    ]
                )
                log(
                    f"  throughput {clients} clients q=1 {covariance}: gp {gp[0]:.0f} req/s, "
                    f"peer {peer[0]:.0f} req/s, errors {gp[3] + peer[3]}"
                )
    return rows, problems


# --- c. CSV batch --------------------------------------------------------------------------


class RssSampler:
    """Samples the resident memory (``VmRSS``) of some processes in a thread; keeps the peak."""

    def __init__(self, pids: list[int], interval: float = 0.02) -> None:
        """
        Args:
            pids: The processes to watch.
            interval: Seconds between samples.
        """
        self.pids, self.interval = pids, interval
        self.peak_kb: dict[int, int] = {pid: 0 for pid in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def status_kb(pid: int, key: str) -> int:
        """``key`` (``VmRSS``, ``VmHWM``) of ``/proc/<pid>/status`` in kB (0 if gone)."""
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                self.peak_kb[pid] = max(self.peak_kb[pid], self.status_kb(pid, "VmRSS"))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def write_points_csv(path: Path, points: np.ndarray, input_names: list[str]) -> None:
    """A CSV of points with a header, every float in shortest round-trip form."""
    with open(path, "w") as f:
        f.write(",".join(input_names) + "\n")
        step = 100_000
        for start in range(0, len(points), step):
            f.write(
                "".join(
                    ",".join(map(repr, row)) + "\n" for row in points[start : start + step].tolist()
                )
            )


def check_scores(
    path: Path, points: np.ndarray, module: Any, sample: int, rng: np.random.Generator
) -> tuple[bool, str]:
    """Compare a scored CSV (``mean_<out>,std_<out>`` columns) with ``module.mean_var``.

    Args:
        path: The scored file.
        points: The points it scores, in order.
        module: The TorchScript posterior.
        sample: At most this many rows (drawn at random) are compared.
        rng: Draws the sample.

    Returns:
        Whether every compared column is within `ANSWER_TOLERANCE` (relative to the
        column's largest magnitude), and a one-line description.
    """
    scores = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if scores.shape[0] != len(points):
        return False, f"FAILED: {scores.shape[0]} rows scored, expected {len(points)}"
    rows = (
        np.sort(rng.choice(len(points), sample, replace=False))
        if len(points) > sample
        else np.arange(len(points))
    )
    with torch.inference_mode():
        mean, variance = module.mean_var(torch.from_numpy(points[rows]))
    expected = torch.stack([mean, variance.sqrt()], -1).flatten(1).numpy()
    got = scores[rows]
    error = max(relative_error(got[:, j], expected[:, j]) for j in range(expected.shape[1]))
    where = "all rows" if len(rows) == len(points) else f"{len(rows)} random rows"
    ok = error <= ANSWER_TOLERANCE
    return ok, f"{'ok' if ok else 'FAILED'}: max rel. error {error:.2g} ({where})"


def measure_csv(
    server: LocalTorchServe,
    peer_url: str,
    module: Any,
    input_names: list[str],
    bounds: list[list[float]],
    plan: Plan,
    workdir: Path,
    log: Any = print,
) -> tuple[list[list[Any]], list[str], bool]:
    """Score CSV files through gp (and the smaller one through the peer, for the notes).

    Returns:
        The table's rows, notes, and whether every answer check passed.
    """
    rng = np.random.default_rng(SEED + 4)
    rows, notes, ok = [], [], True
    pids = server.worker_pids(MODEL_NAME)
    for count in plan.csv_rows:
        chunk = 10_000 if count >= 10**5 else max(1, count // 4)
        points = random_points(bounds, count, rng)
        source, target = workdir / f"points-{count}.csv", workdir / f"scores-{count}.csv"
        write_points_csv(source, points, input_names)
        with RssSampler(pids) as sampler:
            started = time.perf_counter()
            scored = score_csv(source, target, server.predict_url, chunk, progress=False)
            seconds = time.perf_counter() - started
        passed, check = check_scores(target, points, module, plan.csv_sample, rng)
        passed = passed and scored == count
        ok &= passed
        peak_mb = max(sampler.peak_kb.values()) / 1024
        rows.append(
            [count, chunk, round(seconds, 3), round(count / seconds, 1), round(peak_mb, 1), check]
        )
        log(
            f"  csv {count} rows: {seconds:.1f} s ({count / seconds:.0f} rows/s), worker peak "
            f"RSS {peak_mb:.0f} MB, {check}"
        )
        if count == plan.peer_csv_rows:
            peer_target = workdir / f"peer-scores-{count}.csv"
            started = time.perf_counter()
            score_csv(source, peer_target, peer_url, chunk, progress=False)
            peer_seconds = time.perf_counter() - started
            peer_ok, peer_check = check_scores(peer_target, points, module, plan.csv_sample, rng)
            ok &= peer_ok
            notes.append(
                f"Peer on the same {count} rows in chunks of {chunk}: {peer_seconds:.2f} s "
                f"({count / peer_seconds:.0f} rows/s, gp/peer rows/s "
                f"{peer_seconds / seconds:.2f}); answer check {peer_check}."
            )
            log(f"  csv {count} rows via the peer: {peer_seconds:.1f} s, {peer_check}")
        for path in (source, target):
            path.unlink(missing_ok=True)
    hwm = {pid: RssSampler.status_kb(pid, "VmHWM") / 1024 for pid in pids}
    notes += [
        f"{len(pids)} gp workers; their VmHWM (lifetime peak, the latency section's largest "
        "answers included): " + ", ".join(f"{mb:.0f} MB" for mb in hwm.values()) + ".",
        f"Answer check: per column max |diff| / max |expected| <= {ANSWER_TOLERANCE:g}, on at "
        f"most {plan.csv_sample} random rows per file.",
    ]
    if len(plan.csv_rows) > 1:
        notes.append(f"The peer is timed on the {plan.peer_csv_rows}-row file only.")
    return rows, notes, ok
