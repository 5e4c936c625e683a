"""HTTP benchmarks: gp-serve's TorchServe against its own floor (echo) and a FastAPI peer.

    .venv/bin/python -m benchmarks.http --out benchmarks/results/raw [--model-dir build/model]
    .venv/bin/python -m benchmarks.http --out /tmp/raw --quick     # smoke test (a minute)

(The HTTP half of ``make bench``, after ``make export archive``.) Starts, on free 127.0.0.1
ports, from a temporary directory:

- one TorchServe serving ``gp`` (the exported model, archived with
  `serving.archive.build_archive` and ``handler/model-config.yaml``) and ``echo``
  (`benchmarks.echo_handler`: answers each body unchanged, TorchServe's own floor) with the
  same workers and batching settings;
- the peer a user would write instead (`benchmarks.peer.app`: FastAPI, uvicorn
  ``--workers 2``, eager BoTorch, the same model fitted at startup, the same JSON contract).

It first checks that the peer's answers equal gp's (<= 1e-6 relative), then measures, the
servers interleaved within each cell:

a. ``http_latency.json``: one client, sequential requests on a keep-alive connection, q in
   {1, 10, 100, 1000} points, full and diag covariance; p50/p99 per server, gp/echo and
   peer/gp ratios.
b. ``throughput.json``: 1, 4, 16 and 64 concurrent clients (client processes x threads on the
   same machine), q=1 diag and full, a fixed duration per cell; requests/s and p50/p99.
c. ``csv_batch.json``: 10^5 and 10^6 CSV rows scored through gp with
   `client.score_csv.score_csv`; rows/s, the gp workers' peak resident memory and a check of
   the scores against the TorchScript module in process (the peer's CSV time in the notes).

Every file has ``section``, ``title``, ``columns``, ``rows``, ``notes`` and ``versions``.
Exits 1 if an answer check failed or a request errored. Every server is stopped at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
import yaml

from gp_serve.client.score_csv import score_csv
from gp_serve.handler import gp_artifact
from gp_serve.serving.archive import MODEL_CONFIG, MODEL_NAME, build_archive
from gp_serve.serving.local_server import BENCHMARK_SETTINGS, LocalTorchServe, free_ports, write_config
from gp_serve.serving.properties import DEFAULT_CONFIG

REPO = Path(__file__).resolve().parents[1]
ECHO_HANDLER = Path(__file__).resolve().with_name("echo_handler.py")
ECHO_MODEL = "echo"
PEER_APP = "benchmarks.peer.app:app"
PEER_WORKERS = 2
READY_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 120.0
AGREEMENT_TOLERANCE = 1e-6
ANSWER_TOLERANCE = 1e-9
SEED = 0
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"


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
    # (q, covariance) -> (timed, warm-up) where it differs from requests/warmup
    overrides: dict[tuple[int, str], tuple[int, int]] = field(default_factory=dict)

    def counts(self, q: int, covariance: str) -> tuple[int, int]:
        """Timed and warm-up requests per server for a latency cell."""
        return self.overrides.get((q, covariance), (self.requests[q], self.warmup[q]))


FULL = Plan(sizes=(1, 10, 100, 1000), requests={1: 300, 10: 300, 100: 100, 1000: 30},
            warmup={1: 20, 10: 20, 100: 20, 1000: 5}, rounds=3, clients=(1, 4, 16, 64),
            seconds=5.0, csv_rows=(10**5, 10**6), peer_csv_rows=10**5, csv_sample=10**5,
            stock_peer=True, overrides={(1000, "full"): (20, 2)})
QUICK = Plan(sizes=(1, 10), requests={1: 40, 10: 40}, warmup={1: 5, 10: 5}, rounds=2,
             clients=(1, 4), seconds=2.0, csv_rows=(10**3,), peer_csv_rows=10**3,
             csv_sample=10**5)


# --- HTTP client ---------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection to a server (``http.client``: little client CPU)."""

    def __init__(self, url: str, timeout: float = REQUEST_TIMEOUT_S) -> None:
        """
        Args:
            url: The endpoint, ``http://127.0.0.1:<port>/<path>``.
            timeout: Socket timeout in seconds.
        """
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname, parts.port, parts.path
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes, content_type: str = JSON_TYPE) -> tuple[int, bytes]:
        """POST ``body``; reconnects once if the server had closed the idle connection.

        Returns:
            The status and the whole answer body.
        """
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request("POST", self.path, body, {"Content-Type": content_type})
                response = self._conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, ConnectionError) as e:
                self.close()
                if attempt:
                    raise e

    def close(self) -> None:
        """Close the socket (a later `post` reconnects)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _load_process(url: str, bodies: list[bytes], threads: int, start_at: float,
                  seconds: float) -> tuple[list[float], int, list[str]]:
    """One client process: ``threads`` keep-alive clients from ``start_at`` for ``seconds``.

    Runs in a pool process. Only requests that complete inside the window are counted.

    Returns:
        Latencies (s) of the 200 answers, the number of failed requests, up to 5 reasons.
    """
    deadline = start_at + seconds
    latencies: list[float] = []
    problems: list[str] = []
    errors = [0]
    lock = threading.Lock()

    def client(index: int) -> None:
        connection = Connection(url)
        mine: list[float] = []
        failed, reasons = 0, []
        try:
            connection.post(bodies[index % len(bodies)])  # connect (untimed)
        except (OSError, http.client.HTTPException):
            connection.close()
        time.sleep(max(0.0, start_at - time.monotonic()))
        i = index
        while True:
            body = bodies[i % len(bodies)]
            i += 1
            started = time.monotonic()
            if started >= deadline:
                break
            try:
                status, answer = connection.post(body)
                problem = None if status == 200 else f"HTTP {status}: {answer[:200]!r}"
            except (OSError, http.client.HTTPException) as e:
                problem = f"{type(e).__name__}: {e}"
                connection.close()
            ended = time.monotonic()
            if ended > deadline:
                break
            if problem:
                failed += 1
                reasons.append(problem)
            else:
                mine.append(ended - started)
        connection.close()
        with lock:
            latencies.extend(mine)
            errors[0] += failed
            problems.extend(reasons[:5])

    pool = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return latencies, errors[0], problems[:5]


def _noop(_: int = 0) -> int:
    return os.getpid()


# --- servers -------------------------------------------------------------------------------


def _model_settings() -> dict[str, Any]:
    """gp's TorchServe settings (``handler/model-config.yaml`` without the handler's own)."""
    settings = yaml.safe_load(MODEL_CONFIG.read_text())
    settings.pop("handler", None)
    return settings


def build_echo_archive(store: Path, workdir: Path) -> Path:
    """Archive `benchmarks.echo_handler` as ``<store>/echo.mar`` with gp's worker settings.

    Args:
        store: The model store.
        workdir: Where to write its ``model-config.yaml``.

    Returns:
        The archive's path.
    """
    config = workdir / "echo-model-config.yaml"
    config.write_text(yaml.safe_dump(_model_settings()))
    subprocess.run(
        [str(Path(sys.executable).with_name("torch-model-archiver")),
         "--model-name", ECHO_MODEL, "--version", "1.0", "--force",
         "--handler", str(ECHO_HANDLER), "--config-file", str(config),
         "--export-path", str(store)],
        check=True, timeout=300,
    )
    return store / f"{ECHO_MODEL}.mar"


def _wait_answer(url: str, body: bytes, timeout: float, what: str,
                 process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    error = "no answer yet"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        connection = Connection(url, timeout=10)
        try:
            status, answer = connection.post(body)
            if status == 200:
                return
            error = f"HTTP {status}: {answer[:300]!r}"
        except (OSError, http.client.HTTPException) as e:
            error = f"{type(e).__name__}: {e}"
        finally:
            connection.close()
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer at {url}: {error}")


class Peer:
    """The FastAPI peer (`benchmarks.peer.app`) under uvicorn, as a child process group."""

    def __init__(self, workdir: Path, workers: int = PEER_WORKERS, stock: bool = False) -> None:
        """
        Args:
            workdir: Where its log (``peer.log``, ``peer-stock.log``) goes.
            workers: uvicorn worker processes.
            stock: Leave uvicorn's ``--workers`` socket without ``TCP_NODELAY``
                (``GP_PEER_STOCK_UVICORN=1``; see `benchmarks.peer.app`).
        """
        self.port = free_ports(1)[0]
        self.workers, self.stock = workers, stock
        self.url = f"http://127.0.0.1:{self.port}/predictions/{MODEL_NAME}"
        self.log = workdir / ("peer-stock.log" if stock else "peer.log")
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Launch ``uvicorn benchmarks.peer.app:app --host 127.0.0.1 --workers N``."""
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
            GP_PEER_STOCK_UVICORN="1" if self.stock else "0")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).with_name("uvicorn")), PEER_APP, "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", str(self.workers)],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def wait_ready(self, body: bytes, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until a prediction answers and every worker has answered ``/ping``.

        Raises:
            RuntimeError: If uvicorn exits or does not answer in time (with its log's tail).
        """
        try:
            _wait_answer(self.url, body, timeout, "the peer", self.process)
            ping = f"http://127.0.0.1:{self.port}/ping"
            seen: set[int] = set()
            deadline = time.monotonic() + timeout
            while len(seen) < self.workers and time.monotonic() < deadline:
                parts = urlsplit(ping)
                connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
                try:
                    connection.request("GET", parts.path)
                    seen.add(json.loads(connection.getresponse().read())["pid"])
                except (OSError, http.client.HTTPException, ValueError, KeyError):
                    time.sleep(0.2)
                finally:
                    connection.close()
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n--- {self.log} ---\n{self.log_tail()}") from e

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of uvicorn's output."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM uvicorn (it stops its workers); SIGKILL its process group after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


# --- bodies and checks ---------------------------------------------------------------------


def random_points(bounds: list[list[float]], count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` uniform points in the input box (float64, `count x d`)."""
    lower, upper = np.array(bounds, dtype=np.float64).T
    return rng.uniform(lower, upper, size=(count, len(bounds)))


def json_body(points: np.ndarray, covariance: str) -> bytes:
    """A gp-serve JSON request (full float64 precision)."""
    return json.dumps({"inputs": points.tolist(), "covariance": covariance,
                       "observation_noise": False}).encode()


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
    keys = ["model", "version", "outputs", "observation_noise", "covariance_layout",
            "extrapolation"]
    if set(gp) != set(other) or any(gp[k] != other[k] for k in keys):
        return float("inf")
    return max(relative_error(other[k], gp[k])
               for k in ("mean", "variance", "covariance") if k in gp)


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


def measure_latency(urls: dict[str, str], bounds: list[list[float]], plan: Plan,
                    log: Any = print) -> tuple[list[list[Any]], list[str]]:
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
                bodies = [json_body(random_points(bounds, q, rng), covariance)
                          for _ in range(count + warmup)]
                reopen = json_body(random_points(bounds, 1, rng), covariance)
                latencies: dict[str, list[float]] = {name: [] for name in urls}
                failed: dict[str, int] = {name: 0 for name in urls}
                names = list(urls)
                for name in names:  # warm-up
                    for body in bodies[count:]:
                        connections[name].post(body)
                blocks = np.array_split(np.arange(count), plan.rounds)
                for r, block in enumerate(blocks):
                    order = names[r % len(names):] + names[: r % len(names)]
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
                                    problems.append(f"q={q} {covariance} {name}: HTTP {status}: "
                                                    f"{answer[:200]!r}")
                cells = {name: _percentiles(latencies[name]) for name in names}
                row = [q, covariance, *cells["gp"], *cells["echo"], *cells["peer"],
                       _ratio(cells["gp"][0], cells["echo"][0]),
                       _ratio(cells["peer"][0], cells["gp"][0])]
                rows.append(row)
                log(f"  latency q={q} {covariance}: gp p50 {row[2]} ms, echo {row[4]} ms, "
                    f"peer {row[6]} ms")
    finally:
        for connection in connections.values():
            connection.close()
    return rows, problems


def measure_stock_peer(url: str, bounds: list[list[float]], count: int = 100,
                       warmup: int = 10) -> tuple[float | None, float | None]:
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


def measure_throughput(urls: dict[str, str], bounds: list[list[float]], plan: Plan,
                       log: Any = print) -> tuple[list[list[Any]], list[str]]:
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
                    futures = [pool.submit(_load_process, urls[name], bodies, threads, start_at,
                                           plan.seconds) for threads in client_layout(clients)]
                    latencies, errors = [], 0
                    for future in futures:
                        got, failed, reasons = future.result()
                        latencies += got
                        errors += failed
                        problems += [f"{clients} clients {covariance} {name}: {r}"
                                     for r in reasons[:2]]
                    cells[name] = (len(latencies) / plan.seconds, *_percentiles(latencies),
                                   errors)
                gp, peer = cells["gp"], cells["peer"]
                rows.append([clients, covariance, round(gp[0], 1), round(peer[0], 1),
                             _ratio(gp[0], peer[0]), gp[1], gp[2], peer[1], peer[2],
                             gp[3] + peer[3]])
                log(f"  throughput {clients} clients q=1 {covariance}: gp {gp[0]:.0f} req/s, "
                    f"peer {peer[0]:.0f} req/s, errors {gp[3] + peer[3]}")
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
            f.write("".join(",".join(map(repr, row)) + "\n"
                            for row in points[start:start + step].tolist()))


def check_scores(path: Path, points: np.ndarray, module: Any, sample: int,
                 rng: np.random.Generator) -> tuple[bool, str]:
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
    rows = (np.sort(rng.choice(len(points), sample, replace=False)) if len(points) > sample
            else np.arange(len(points)))
    with torch.inference_mode():
        mean, variance = module.mean_var(torch.from_numpy(points[rows]))
    expected = torch.stack([mean, variance.sqrt()], -1).flatten(1).numpy()
    got = scores[rows]
    error = max(relative_error(got[:, j], expected[:, j]) for j in range(expected.shape[1]))
    where = "all rows" if len(rows) == len(points) else f"{len(rows)} random rows"
    ok = error <= ANSWER_TOLERANCE
    return ok, f"{'ok' if ok else 'FAILED'}: max rel. error {error:.2g} ({where})"


def measure_csv(server: LocalTorchServe, peer_url: str, module: Any, input_names: list[str],
                bounds: list[list[float]], plan: Plan, workdir: Path,
                log: Any = print) -> tuple[list[list[Any]], list[str], bool]:
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
        rows.append([count, chunk, round(seconds, 3), round(count / seconds, 1),
                     round(peak_mb, 1), check])
        log(f"  csv {count} rows: {seconds:.1f} s ({count / seconds:.0f} rows/s), worker peak "
            f"RSS {peak_mb:.0f} MB, {check}")
        if count == plan.peer_csv_rows:
            peer_target = workdir / f"peer-scores-{count}.csv"
            started = time.perf_counter()
            score_csv(source, peer_target, peer_url, chunk, progress=False)
            peer_seconds = time.perf_counter() - started
            peer_ok, peer_check = check_scores(peer_target, points, module, plan.csv_sample, rng)
            ok &= peer_ok
            notes.append(
                f"Peer (FastAPI + eager BoTorch, CSV in posterior calls of 1000 points: eager "
                f"posterior(X).variance builds the q x q covariance) on the same {count} rows "
                f"in chunks of {chunk}: {peer_seconds:.2f} s ({count / peer_seconds:.0f} rows/s, "
                f"gp/peer rows/s {peer_seconds / seconds:.2f}); answer check {peer_check}.")
            log(f"  csv {count} rows via the peer: {peer_seconds:.1f} s, {peer_check}")
        for path in (source, target):
            path.unlink(missing_ok=True)
    hwm = {pid: RssSampler.status_kb(pid, "VmHWM") / 1024 for pid in pids}
    notes += [
        f"Scored with client.score_csv.score_csv (one keep-alive session, chunks of 'chunk "
        f"rows' rows as text/csv) against gp through TorchServe; {len(pids)} gp workers.",
        "Worker peak RSS: the largest VmRSS of any gp worker sampled every 20 ms from "
        "/proc/<pid>/status during that file's scoring (VmHWM, each worker's lifetime peak, "
        "which includes the latency section's largest answers: "
        + ", ".join(f"{mb:.0f} MB" for mb in hwm.values()) + ").",
        f"Answer check: the scores file against the TorchScript module's mean_var in process, "
        f"per column max |diff| / max |expected| <= {ANSWER_TOLERANCE:g}; files of more than "
        f"{plan.csv_sample} rows are checked on a random sample of that many rows.",
    ]
    if len(plan.csv_rows) > 1:
        notes.append(f"The peer is timed on the {plan.peer_csv_rows}-row file only (time).")
    return rows, notes, ok


# --- the run -------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """Versions of everything on the measured path."""
    names = ("torch", "botorch", "gpytorch", "torchserve", "fastapi", "uvicorn", "starlette",
             "pydantic", "orjson")
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def write_section(out: Path, name: str, title: str, columns: list[str], rows: list[list[Any]],
                  notes: list[str], found: dict[str, str]) -> Path:
    """Write ``<out>/<name>.json`` in the benchmark results schema."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    document = {"section": name, "title": title, "columns": columns, "rows": rows,
                "notes": notes, "versions": found}
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


LATENCY_COLUMNS = ["q", "covariance", "gp p50 ms", "gp p99 ms", "echo p50 ms", "echo p99 ms",
                   "peer p50 ms", "peer p99 ms", "gp/echo p50", "peer/gp p50"]
THROUGHPUT_COLUMNS = ["clients", "covariance", "gp req/s", "peer req/s", "gp/peer req/s",
                      "gp p50 ms", "gp p99 ms", "peer p50 ms", "peer p99 ms", "errors"]
CSV_COLUMNS = ["rows", "chunk rows", "seconds", "rows/s", "worker peak RSS MB", "answer check"]


def run(model_dir: Path, out: Path, plan: Plan, log: Any = print) -> bool:
    """Start the servers, measure every section, write the JSON files, stop the servers.

    Args:
        model_dir: The exported model (``posterior.pt``, ``metadata.json``).
        out: Where the JSON files go.
        plan: `FULL` or `QUICK`.
        log: Progress printer.

    Returns:
        Whether every check passed and no request failed.
    """
    started = time.monotonic()
    found = versions()
    metadata = gp_artifact.load_metadata(model_dir)
    bounds, input_names = metadata.input_bounds, metadata.input_names
    module = torch.jit.load(gp_artifact.check_posterior(model_dir))
    cores = os.cpu_count()
    settings = _model_settings()
    machine = (f"{cores} cores shared by the TorchServe frontend, {settings['maxWorkers']} gp "
               f"and {settings['maxWorkers']} echo workers, {PEER_WORKERS} peer worker "
               "processes and the load generator")
    ok = True
    with tempfile.TemporaryDirectory(prefix="gp-bench-http-") as tmp:
        root = Path(tmp)
        store = root / "model_store"
        build_archive(model_dir, store)
        build_echo_archive(store, root)
        config = write_config(DEFAULT_CONFIG, root / "config.properties", str(store), **BENCHMARK_SETTINGS)
        server = LocalTorchServe(config, store, root / "logs",
                                 models=f"{MODEL_NAME}={MODEL_NAME}.mar "
                                        f"{ECHO_MODEL}={ECHO_MODEL}.mar")
        peer = Peer(root)
        stock = Peer(root, stock=True) if plan.stock_peer else None
        try:
            peer.start()  # fits while TorchServe starts
            if stock is not None:
                stock.start()
            server.start()
            server.wait_ready(model=MODEL_NAME)
            probe = json_body(np.array([metadata.centre()]), "diag")
            echo_url = f"{server.inference_url}/predictions/{ECHO_MODEL}"
            _wait_answer(echo_url, probe, READY_TIMEOUT_S, "echo")
            peer.wait_ready(probe)
            log(f"servers up after {time.monotonic() - started:.0f} s: gp {server.predict_url}, "
                f"echo {echo_url}, peer {peer.url}")
            worst = agreement(server.predict_url, peer.url, module, bounds)
            agreed = worst <= AGREEMENT_TOLERANCE
            ok &= agreed
            log(f"  agreement: peer vs gp max relative difference {worst:.3g}")
            agreement_note = (
                f"agreement: peer vs gp max relative difference {worst:.3g} (tolerance "
                f"{AGREEMENT_TOLERANCE:g}; {'ok' if agreed else 'FAILED'}): mean, variance and "
                "output-major covariance, q in {1, 3, 8, 20}, full and diag; the peer refits "
                "export.fit.fit_model(default_data(), 'single') at startup"
                + ("" if metadata.document.get("data_sha256") == _default_sha256() else
                   " (WARNING: the artifact was not fitted on the default data)") + ".")

            urls = {"gp": server.predict_url, "echo": echo_url, "peer": peer.url}
            rows, problems = measure_latency(urls, bounds, plan, log)
            ok &= not problems
            stock_note = []
            if stock is not None:
                stock.wait_ready(probe)
                p50, p99 = measure_stock_peer(stock.url, bounds)
                stock.stop()
                diag = next((row for row in rows if row[:2] == [1, "diag"]), None)
                log(f"  stock uvicorn peer q=1 diag: p50 {p50} ms, p99 {p99} ms")
                stock_note = [
                    f"The peer above has TCP_NODELAY restored (benchmarks/peer/app.py): stock "
                    f"`uvicorn --workers 2` leaves Nagle's algorithm on for every connection on "
                    f"Linux (Kludex/uvicorn#3149), so each keep-alive request after the first "
                    f"waits for the client's delayed ACK. Measured here, q=1 diag, 100 "
                    f"sequential keep-alive requests: stock p50 {p50} ms, p99 {p99} ms "
                    f"(patched: p50 {diag[6] if diag else None} ms, p99 "
                    f"{diag[7] if diag else None} ms)."]
            counts = ", ".join(f"q={q} {cov}: {'%d (+%d warm-up)' % plan.counts(q, cov)}"
                               for q in plan.sizes for cov in ("full", "diag"))
            write_section(out, "http_latency", "HTTP latency, one sequential client: gp-serve "
                          "(TorchServe) vs TorchServe's floor (echo) vs FastAPI + eager BoTorch",
                          LATENCY_COLUMNS, rows, [
                              "One client, sequential POSTs on a persistent keep-alive "
                              "connection (http.client), the whole answer read; latency is the "
                              "client's wall time per request.",
                              f"Requests per server and cell: {counts}; the three servers take "
                              f"turns in {plan.rounds} interleaved blocks per cell. p99 is "
                              "numpy's interpolated percentile: with under 100 requests it is "
                              "close to the maximum.",
                              "Same bodies to all three: echo (a TorchServe handler returning "
                              "the body unchanged, gp's workers and batching settings) receives "
                              "gp's request and answers it back, so gp/echo is the GP handler's "
                              "own cost over TorchServe's floor.",
                              "Peer: FastAPI + uvicorn (2 worker processes, 1 torch thread each),"
                              " eager BoTorch model.posterior under torch.no_grad, answers "
                              "encoded by json.dumps. Answers are not decoded while timed.",
                              *stock_note, agreement_note, f"Machine: {machine}.",
                              *problems], found)

            rows, problems = measure_throughput({"gp": server.predict_url, "peer": peer.url},
                                                bounds, plan, log)
            ok &= not problems and all(row[-1] == 0 for row in rows)
            layouts = "; ".join(f"{c} clients: {len(client_layout(c))} process(es) x "
                                f"{'/'.join(map(str, sorted(set(client_layout(c)))))} thread(s)"
                                for c in plan.clients)
            write_section(out, "throughput", "HTTP throughput, q=1, concurrent clients: gp-serve "
                          "(TorchServe) vs FastAPI + eager BoTorch", THROUGHPUT_COLUMNS, rows, [
                              f"Closed loop: each client sends its next request when the answer "
                              f"arrives, for {plan.seconds:g} s per server and cell (gp and "
                              "peer alternate, the first of each pair alternating by row); "
                              "requests/s counts the answers completed in the window.",
                              f"Load generator: {layouts}; keep-alive http.client connections. "
                              f"It runs on the same machine ({machine}), so at 16 and 64 clients "
                              "it competes with the servers for the cores.",
                              "errors: failed requests (non-200 or connection errors), gp and "
                              "peer together.", agreement_note, *problems], found)

            rows, notes, csv_ok = measure_csv(server, peer.url, module, input_names, bounds,
                                              plan, root, log)
            ok &= csv_ok
            write_section(out, "csv_batch", "Batch scoring of CSV files through gp-serve "
                          "(client/score_csv.py)", CSV_COLUMNS, rows,
                          [*notes, f"Machine: {machine}."], found)
        finally:
            try:
                peer.stop()
                if stock is not None:
                    stock.stop()
            finally:
                server.stop()
    log(f"benchmarks.http: done in {time.monotonic() - started:.0f} s, wrote {out}")
    return ok


def _default_sha256() -> str:
    from gp_serve.export.data import default_data

    return default_data().sha256()


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.http``; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.http", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON files")
    parser.add_argument("--model-dir", type=Path, default=REPO / "build" / "model")
    parser.add_argument("--quick", action="store_true",
                        help="q in {1, 10}, 1 and 4 clients, 2 s per cell, 10^3 CSV rows")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.monotonic()
    ok = run(args.model_dir, args.out, QUICK if args.quick else FULL,
             log=lambda line: print(f"[{time.monotonic() - started:4.0f} s] {line}", flush=True))
    if not ok:
        print("benchmarks.http: a check failed or requests errored (see the notes)",
              file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
