"""Served products vs the client's own: 64 joint posterior samples served (JSON, v2 binary) vs the
full covariance downloaded and sampled on the client, and acquisition values for 10^5 CSV rows
(the ``products`` section, ``make bench``).

    .venv/bin/python -m benchmarks.products --out benchmarks/results/raw [--model-dir DIR] [--quick]

See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.http_measure import random_points, relative_error
from benchmarks.sections import versions, write_section
from gp_serve.handler import acquisition, gp_artifact, sampling
from gp_serve.serving.archive import MODEL_NAME, build_archive
from gp_serve.serving.load import Connection
from gp_serve.serving.local_server import BENCHMARK_SETTINGS, served

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-8
SEED = 0
# The acquisition asked for in the CSV rows' ``GP-Acquisition`` header (on the model's last
# output: ``currin`` for the default model).
BEST_F = -10.0
# Everything on the measured path, recorded in the section.
VERSIONS = ("torch", "botorch", "gpytorch", "torchserve", "numpy", "orjson")
HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_TYPE = "application/octet-stream"
CSV_TYPE = "text/csv"
# The longest Unix socket path (sun_path less its NUL): TorchServe's workers fail to start,
# and are restarted forever, past it.
MAX_SOCKET_PATH = 107
# psd_safe_cholesky's float64 jitter (`sampling.CHOLESKY_JITTER`), times 10 per try: the
# client's numpy Cholesky retries the same way.
JITTER = sampling.CHOLESKY_JITTER[torch.float64]
JITTER_TRIES = sampling.CHOLESKY_MAX_TRIES
# The four ways to 64 joint draws: (label, wire), in the table's order.
WAYS = (
    ("served samples", "JSON"),
    ("served samples", "v2 binary"),
    ("full covariance + client draws", "JSON"),
    ("full covariance + client draws", "v2 binary"),
)
COLUMNS = [
    "q",
    "n",
    "way",
    "wire",
    "request median ms",
    "request p90 ms",
    "decode median ms",
    "client draws median ms",
    "total median ms",
    "total p90 ms",
    "answer bytes",
    "total / served",
    "bytes / served",
    "max rel error",
]
CSV_COLUMNS = [
    "request",
    "rows",
    "median s",
    "min s",
    "max s",
    "rows/s",
    "answer bytes",
    "time / moments only",
    "max rel error",
]


@dataclass(frozen=True)
class Plan:
    """What to measure (the full run or ``--quick``)."""

    sizes: tuple[int, ...]
    samples: int
    requests: dict[int, int]  # q -> timed requests per way
    warmup: int  # untimed requests per way and q first (one per worker)
    rounds: int  # interleaved blocks per q
    csv_rows: int
    csv_repeats: int
    csv_warmup: int


FULL = Plan(
    sizes=(100, 1000),
    samples=64,
    requests={100: 30, 1000: 8},
    warmup=2,
    rounds=2,
    csv_rows=100_000,
    csv_repeats=3,
    csv_warmup=2,
)
QUICK = Plan(
    sizes=(10, 50),
    samples=8,
    requests={10: 1, 50: 1},
    warmup=0,
    rounds=1,
    csv_rows=2000,
    csv_repeats=1,
    csv_warmup=0,
)


def log(line: str) -> None:
    """A progress line on stdout (flushed)."""
    print(line, flush=True)


# --- the client ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One request of a way: where it goes and what it sends."""

    url: str
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


def json_call(url: str, X: np.ndarray, products: dict[str, Any]) -> Call:
    """A gp-serve JSON request of the points ``X`` with ``products`` (covariance, samples)."""
    return Call(url, json.dumps({"inputs": X.tolist(), **products}).encode(), "application/json")


def v2_call(url: str, X: np.ndarray, parameters: dict[str, Any], outputs: list[str]) -> Call:
    """A v2 request with binary inputs, asking for ``outputs`` as binary tensors."""
    raw = X.astype("<f8").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "X",
                    "shape": list(X.shape),
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs],
            "parameters": {**parameters, "binary_data_output": True},
        }
    ).encode()
    return Call(url, header + raw, BINARY_TYPE, {HEADER_LENGTH: str(len(header))})


def v2_tensors(body: bytes, headers: dict[str, str]) -> dict[str, np.ndarray]:
    """A binary v2 answer's outputs, as float64 arrays of their shapes (views of ``body``).

    Raises:
        ValueError: If the answer has no binary part or its sizes do not add up.
    """
    if HEADER_LENGTH.lower() not in headers:
        raise ValueError(f"a v2 answer without {HEADER_LENGTH}: {body[:200]!r}")
    length = int(headers[HEADER_LENGTH.lower()])
    header = json.loads(body[:length])
    tensors, offset = {}, length
    for output in header["outputs"]:
        size = output["parameters"]["binary_data_size"]
        values = np.frombuffer(body, dtype="<f8", count=size // 8, offset=offset)
        tensors[output["name"]] = values.reshape(output["shape"])
        offset += size
    if offset != len(body):
        raise ValueError(f"a v2 answer of {len(body)} bytes, its tensors end at {offset}")
    return tensors


def client_cholesky(covariance: np.ndarray) -> tuple[np.ndarray, float]:
    """numpy's Cholesky factor of the whole matrix; where it fails, psd_safe_cholesky's
    jitter (`JITTER` x 10^i on the diagonal, up to `JITTER_TRIES` tries).

    Returns:
        The lower factor and the jitter added (0.0 if none).

    Raises:
        np.linalg.LinAlgError: If every try fails.
    """
    try:
        return np.linalg.cholesky(covariance), 0.0
    except np.linalg.LinAlgError:
        pass
    diagonal = np.arange(covariance.shape[0])
    for i in range(JITTER_TRIES):
        added = JITTER * 10**i
        jittered = covariance.copy()
        jittered[diagonal, diagonal] += added
        try:
            return np.linalg.cholesky(jittered), added
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError(f"not positive definite with jitter {added:g}")


def client_draws(mean: np.ndarray, factor: np.ndarray, base: np.ndarray) -> np.ndarray:
    """``mean + L z`` in the output-major order (entry ``t*q + i``), as `sampling.draw`.

    Args:
        mean: `q x m`.
        factor: `(q*m) x (q*m)` lower Cholesky factor of the output-major covariance.
        base: `n x q x m` standard normal values.

    Returns:
        `n x q x m` draws.
    """
    n, q, m = base.shape
    z = base.transpose(0, 2, 1).reshape(n, m * q)
    draws = z @ factor.T + mean.T.reshape(1, m * q)
    return draws.reshape(n, m, q).transpose(0, 2, 1)


# --- the samples table -----------------------------------------------------------------------


@dataclass
class WayResult:
    """One way's timings, answer sizes and worst error at one q."""

    request: list[float] = field(default_factory=list)
    decode: list[float] = field(default_factory=list)
    draws: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    answer_bytes: list[int] = field(default_factory=list)
    error: float = 0.0  # the check's (served numbers vs the module's)
    client_error: float = 0.0  # the client's draws from the served base samples vs them
    jitter: float = 0.0  # the most the client's Cholesky added


class SamplesBench:
    """The four ways to `plan.samples` joint draws at `q` points, against one server."""

    def __init__(
        self, inference_url: str, module: Any, metadata: gp_artifact.Metadata, plan: Plan
    ) -> None:
        self.json_url = f"{inference_url}/predictions/{MODEL_NAME}"
        self.v2_url = f"{inference_url}/v2/models/{MODEL_NAME}/infer"
        self.connections = {url: Connection(url) for url in (self.json_url, self.v2_url)}
        self.module, self.metadata, self.plan = module, metadata, plan
        self.m = len(metadata.output_names)
        self.problems: list[str] = []
        self.failures: dict[tuple[int, int], int] = {}

    def close(self) -> None:
        for connection in self.connections.values():
            connection.close()

    def call(self, way: int, X: np.ndarray, seed: int) -> Call:
        """The request of ``way`` (an index of `WAYS`) for the points ``X``."""
        n = self.plan.samples
        if way == 0:
            return json_call(
                self.json_url, X, {"covariance": "diag", "samples": {"n": n, "seed": seed}}
            )
        if way == 1:
            parameters = {"samples": {"n": n, "seed": seed}, "covariance": "diag"}
            return v2_call(self.v2_url, X, parameters, ["samples"])
        if way == 2:
            return json_call(self.json_url, X, {"covariance": "full"})
        return v2_call(self.v2_url, X, {"covariance": "full"}, ["mean", "covariance"])

    def expected(self, X: np.ndarray, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The in-process module's mean, covariance and `sampling.draw` from the seed's base
        samples, in the family's sample order."""
        q = X.shape[0]
        with torch.inference_mode():
            mean, covariance = self.module.forward(torch.from_numpy(X))
            base = sampling.standard_normal(self.plan.samples, seed, q, self.m)
            draws = sampling.draw(mean, covariance, base, self.metadata.sample_order)
        return mean, covariance, draws

    def once(self, way: int, X: np.ndarray, seed: int, result: WayResult | None) -> None:
        """Send one request; with ``result``, time it, decode it, draw on the client (the
        covariance ways) and check it against the module in process (untimed)."""
        call = self.call(way, X, seed)
        started = time.perf_counter()
        status, headers, body = self.connections[call.url].exchange(
            call.body, call.content_type, call.headers
        )
        requested = time.perf_counter()
        q, n = X.shape[0], self.plan.samples
        if status != 200:
            self.problem(q, way, f"HTTP {status}: {body[:300]!r}")
            return
        if result is None:
            return
        binary = WAYS[way][1] != "JSON"
        if way < 2:
            if binary:
                samples = v2_tensors(body, headers)["samples"]
            else:
                samples = np.asarray(json.loads(body)["samples"], dtype=np.float64)
            decoded = drawn = time.perf_counter()
        else:
            if binary:
                tensors = v2_tensors(body, headers)
                mean, covariance = tensors["mean"], tensors["covariance"]
            else:
                answer = json.loads(body)
                mean = np.asarray(answer["mean"], dtype=np.float64)
                covariance = np.asarray(answer["covariance"], dtype=np.float64)
            decoded = time.perf_counter()
            factor, jitter = client_cholesky(covariance)
            samples = client_draws(
                mean, factor, np.random.default_rng(seed).standard_normal((n, q, self.m))
            )
            drawn = time.perf_counter()
            result.jitter = max(result.jitter, jitter)
        result.request.append(requested - started)
        result.decode.append(decoded - requested)
        result.draws.append(drawn - decoded)
        result.total.append(drawn - started)
        result.answer_bytes.append(len(body))

        want_mean, want_covariance, want_draws = self.expected(X, seed)
        if way < 2:
            error = relative_error(samples, want_draws.numpy())
            what = "served samples differ from sampling.draw in process"
        else:
            error = max(
                relative_error(mean, want_mean.numpy()),
                relative_error(covariance, want_covariance.numpy()),
            )
            what = "the served mean and covariance differ from the module's"
            base = sampling.standard_normal(n, seed, q, self.m).numpy()
            client = relative_error(client_draws(mean, factor, base), want_draws.numpy())
            result.client_error = max(result.client_error, client)
        result.error = max(result.error, error)
        if not error <= TOLERANCE:
            self.problem(q, way, f"{what} by {error:.3g} (> {TOLERANCE:g})")

    def problem(self, q: int, way: int, text: str) -> None:
        """Record a failed request or check: the first of each q and way in the notes, the
        others counted."""
        key = (q, way)
        self.failures[key] = self.failures.get(key, 0) + 1
        if self.failures[key] == 1:
            self.problems.append(f"FAILED: q={q} {' '.join(WAYS[way])}: {text}")

    def measure(self, rng: np.random.Generator) -> tuple[list[list[Any]], list[str]]:
        """Every q of the plan, the ways interleaved in rotating blocks.

        Returns:
            The rows (`COLUMNS`) and notes (the client draws' differences, jitter).
        """
        rows, notes = [], []
        bounds = self.metadata.input_bounds
        for q in self.plan.sizes:
            count = self.plan.requests[q]
            results = [WayResult() for _ in WAYS]
            points = [
                [random_points(bounds, q, rng) for _ in range(count + self.plan.warmup)]
                for _ in WAYS
            ]
            for way in range(len(WAYS)):  # warm-up (one per worker)
                for k in range(count, count + self.plan.warmup):
                    self.once(way, points[way][k], k, None)
            blocks = np.array_split(np.arange(count), self.plan.rounds)
            for r, block in enumerate(blocks):
                order = [(way + r) % len(WAYS) for way in range(len(WAYS))]
                for way in order:
                    for k in block.tolist():
                        self.once(way, points[way][k], k, results[way])
            for way, result in enumerate(results):
                rows.append(self.row(q, way, result, results[way % 2]))
                log(
                    f"  q={q} {' '.join(WAYS[way])}: total median "
                    f"{_ms(result.total, 50)} ms, {_median_int(result.answer_bytes)} bytes, "
                    f"max rel error {result.error:.2g}"
                )
            jitters = [f"{WAYS[w][1]} {results[w].jitter:g}" for w in (2, 3)]
            client = ", ".join(f"{WAYS[w][1]} {results[w].client_error:.2g}" for w in (2, 3))
            notes.append(
                f"q={q}: the client's numpy Cholesky needed jitter {', '.join(jitters)}; its "
                f"draws from the served base samples vs the served ones: max rel diff {client}."
            )
        return rows, notes

    def row(self, q: int, way: int, result: WayResult, served: WayResult) -> list[Any]:
        """One row of `COLUMNS`; ``served`` is the served way of the same wire."""
        label, wire = WAYS[way]
        total = _ms(result.total, 50)
        size = _median_int(result.answer_bytes)
        client = way >= 2
        served_total, served_size = _ms(served.total, 50), _median_int(served.answer_bytes)
        return [
            q,
            self.plan.samples,
            label,
            wire,
            _ms(result.request, 50),
            _ms(result.request, 90),
            _ms(result.decode, 50),
            _ms(result.draws, 50) if client else None,
            total,
            _ms(result.total, 90),
            size,
            _ratio(total, served_total) if client else None,
            _ratio(size, served_size) if client else None,
            result.error if result.total else None,
        ]


def _ms(seconds: list[float], percentile: float) -> float | None:
    if not seconds:
        return None
    return round(float(np.percentile(np.array(seconds) * 1e3, percentile)), 3)


def _median_int(values: list[int]) -> int | None:
    return int(statistics.median(values)) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


# --- the CSV table ---------------------------------------------------------------------------


def csv_body(points: np.ndarray, input_names: list[str]) -> bytes:
    """A CSV of points with a header, every float in shortest round-trip form."""
    lines = [",".join(input_names)] + [",".join(map(repr, row)) for row in points.tolist()]
    return ("\n".join(lines) + "\n").encode()


def check_csv(
    answer: bytes,
    points: np.ndarray,
    module: Any,
    output_names: list[str],
    spec: acquisition.Acquisition | None,
) -> float:
    """The worst relative error (per column: max |diff| / max |expected|) of a CSV answer
    against the module's ``mean_var`` (``mean_<out>,std_<out>``) and, with ``spec``, its
    ``acq`` column against `acquisition.evaluate` (inf if the header or the row count is
    off)."""
    text = answer.decode()
    header = text.split("\n", 1)[0].split(",")
    expected_header = [f"{k}_{name}" for name in output_names for k in ("mean", "std")]
    if spec is not None:
        expected_header.append("acq")
    if header != expected_header:
        return float("inf")
    got = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, ndmin=2)
    if got.shape != (len(points), len(expected_header)):
        return float("inf")
    with torch.inference_mode():
        mean, variance = module.mean_var(torch.from_numpy(points))
        columns = [torch.stack([mean, variance.sqrt()], -1).flatten(1)]
        if spec is not None:
            columns.append(acquisition.evaluate(spec, mean, variance).reshape(-1, 1))
    expected = torch.cat(columns, 1).numpy()
    return max(relative_error(got[:, j], expected[:, j]) for j in range(expected.shape[1]))


def measure_csv(
    predict_url: str,
    module: Any,
    metadata: gp_artifact.Metadata,
    plan: Plan,
    rng: np.random.Generator,
) -> tuple[list[list[Any]], list[str], dict]:
    """One CSV of `plan.csv_rows` candidates, without and with ``GP-Acquisition``,
    alternating, `plan.csv_repeats` times each after `plan.csv_warmup` untimed.

    Returns:
        The table's rows (`CSV_COLUMNS`), problems (failures) and the acquisition spec.
    """
    output = metadata.output_names[-1]
    spec = {"name": acquisition.EI, "best_f": BEST_F, "output": output}
    parsed = acquisition.parse(spec, metadata.output_names)
    points = random_points(metadata.input_bounds, plan.csv_rows, rng)
    body = csv_body(points, metadata.input_names)
    modes = {
        "moments only": {},
        f"moments + {acquisition.EI} (acq)": {"GP-Acquisition": json.dumps(spec)},
    }
    connection = Connection(predict_url)
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    answers: dict[str, set[bytes]] = {mode: set() for mode in modes}
    problems: list[str] = []
    try:
        for k in range(plan.csv_warmup + plan.csv_repeats):
            order = list(modes) if k % 2 == 0 else list(modes)[::-1]
            for mode in order:
                started = time.perf_counter()
                status, answer = connection.post(body, CSV_TYPE, modes[mode])
                elapsed = time.perf_counter() - started
                if status != 200:
                    problems.append(f"CSV {mode}: HTTP {status}: {answer[:300]!r}")
                    continue
                answers[mode].add(answer)
                if k >= plan.csv_warmup:
                    seconds[mode].append(elapsed)
    finally:
        connection.close()
    rows = []
    baseline = statistics.median(seconds["moments only"]) if seconds["moments only"] else None
    for mode, found in answers.items():
        if not found or not seconds[mode]:
            rows.append([mode, plan.csv_rows, None, None, None, None, None, None, None])
            continue
        if len(found) > 1:
            problems.append(f"FAILED: CSV {mode}: {len(found)} different answers to one body")
        answer = next(iter(found))
        error = check_csv(
            answer, points, module, metadata.output_names, parsed if "acq" in mode else None
        )
        if not error <= TOLERANCE:
            problems.append(
                f"FAILED: CSV {mode}: the answer differs from the module's mean_var"
                f"{' and acquisition.evaluate' if 'acq' in mode else ''} by {error:.3g}"
            )
        median = statistics.median(seconds[mode])
        rows.append(
            [
                mode,
                plan.csv_rows,
                round(median, 4),
                round(min(seconds[mode]), 4),
                round(max(seconds[mode]), 4),
                round(plan.csv_rows / median, 1),
                len(answer),
                _ratio(median, baseline),
                error,
            ]
        )
        log(
            f"  CSV {plan.csv_rows} rows, {mode}: median {median:.3f} s "
            f"({plan.csv_rows / median:.0f} rows/s), {len(answer)} bytes, max rel error "
            f"{error:.2g}"
        )
    return rows, problems, spec


# --- the run ---------------------------------------------------------------------------------


def export_default(directory: Path) -> Path:
    """Fit the default model (``make export``'s: BraninCurrin, ``single``) and export it to
    ``directory``."""
    from gp_serve.export.cli import fit_and_export
    from gp_serve.export.data import default_data

    fit_and_export(default_data(), directory)
    return directory


def run(model_dir: Path | None, plan: Plan) -> tuple[dict, bool]:
    """Serve the model, measure both tables; the section and whether every check passed.

    Args:
        model_dir: The exported model; None: the default model, fitted and exported into
            the run's temporary directory.
        plan: `FULL` or `QUICK`.
    """
    torch.set_num_threads(1)
    started = time.monotonic()
    load_before = os.getloadavg()
    rng = np.random.default_rng(SEED)
    with tempfile.TemporaryDirectory(prefix="gp-products-") as tmp:
        root = Path(tmp)
        socket = root / "logs" / "tmp" / ".ts.sock.65535"  # (the workers' Unix sockets)
        if len(os.fsencode(socket)) > MAX_SOCKET_PATH:
            raise SystemExit(
                f"benchmarks.products: {tmp} is too deep for TorchServe's worker sockets "
                f"({socket}: over {MAX_SOCKET_PATH} bytes): set TMPDIR to a shorter folder"
            )
        if model_dir is None:
            log("exporting the default model (BraninCurrin, single) into a temporary directory")
            model_dir = export_default(root / "model")
            source = "the default model (BraninCurrin, `single`), fitted and exported by the run"
        else:
            source = f"the artifact {model_dir}"
        metadata = gp_artifact.load_metadata(model_dir)
        module = torch.jit.load(gp_artifact.check_posterior(model_dir))
        store = root / "model_store"
        build_archive(model_dir, store)
        with served(store, root, **BENCHMARK_SETTINGS) as server:
            log(f"TorchServe up after {time.monotonic() - started:.0f} s: {server.inference_url}")
            bench = SamplesBench(server.inference_url, module, metadata, plan)
            try:
                rows, sample_notes = bench.measure(rng)
            finally:
                bench.close()
            csv_rows, csv_problems, spec = measure_csv(
                server.predict_url, module, metadata, plan, rng
            )
    problems = bench.problems + csv_problems
    if sum(bench.failures.values()) > len(bench.problems):
        problems.append(f"FAILED: {sum(bench.failures.values())} failed sample requests or checks")
    ok = not problems
    load_after = os.getloadavg()
    wall = time.monotonic() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    counts = ", ".join(f"q={q}: {plan.requests[q]} (+{plan.warmup} warm-up)" for q in plan.sizes)
    notes = [
        f"Model: {source} ({metadata.document.get('model_class')}, N="
        f"{metadata.document.get('num_train')}, inputs {metadata.input_names}, outputs "
        f"{metadata.output_names}, sample order {metadata.sample_order}); one TorchServe "
        "(the repository's model-config.yaml: 2 workers, 1 torch thread each) on loopback, "
        "token authorization off (BENCHMARK_SETTINGS).",
        f"Samples: {plan.samples} joint draws per request at q random points in the training "
        f"box; requests per way and q: {counts}, the four ways interleaved in {plan.rounds} "
        "rotating blocks on one keep-alive connection per endpoint, sequential. served samples: "
        f'JSON {{"covariance": "diag", "samples": {{"n": {plan.samples}, "seed": k}}}} '
        f'(answer key "samples") or v2 (POST /v2/models/{MODEL_NAME}/infer, binary inputs, '
        'parameters samples and covariance "diag", binary_data_output, outputs samples only). '
        'full covariance + client draws: JSON "covariance": "full" (mean, variance, '
        "covariance) or v2 outputs mean and covariance (binary), then numpy on the client: "
        "np.linalg.cholesky of the (q*m) x (q*m) output-major matrix (psd_safe_cholesky's "
        f"jitter {JITTER:g} x 10^i where it fails) and {plan.samples} draws mean + L z "
        "(z from numpy's default_rng).",
        "request: from sending to the whole answer read; decode: json.loads (stdlib) and "
        "np.asarray, or the v2 binary tensors (np.frombuffer); client draws: Cholesky and "
        "draws; total: their sum per request (p90: numpy's interpolated percentile). "
        "answer bytes: the answer's body (median). total / served and bytes / served: this "
        "way over the served samples of the same wire (JSON or v2 binary).",
        f"max rel error: max |diff| / max |expected| over the request's numbers: served "
        "samples vs gp_serve.handler.sampling.draw(mean, cov, sampling.standard_normal(n, "
        "seed, q, m), sample order) on the TorchScript module's forward in process; for the "
        f"covariance ways the served mean and covariance vs the module's. Every request is "
        f"checked; over {TOLERANCE:g} fails the run.",
        *sample_notes,
        f"CSV: one body of {plan.csv_rows} rows (header {','.join(metadata.input_names)}, "
        "random points in the training box), POSTed as text/csv without and with the header "
        f"GP-Acquisition: {json.dumps(spec)}; {plan.csv_repeats} timed requests each "
        f"(after {plan.csv_warmup} untimed), alternating; rows/s from the median. The answers "
        "are checked against the module's mean_var (mean, std columns) and "
        "gp_serve.handler.acquisition.evaluate on it (acq column), every column to "
        f"{TOLERANCE:g} relative; every repeat's answer must be the same bytes.",
        f"Machine: {os.cpu_count()} cores shared by the TorchServe frontend, its 2 workers and "
        f"this client; load average (1, 5, 15 min) {_load(load_before)} before the run, "
        f"{_load(load_after)} after.",
        *problems,
        f"peak RSS of this process {peak_mb:.0f} MB; wall time {wall:.0f} s.",
    ]
    section = {
        "section": "products",
        "title": "Products: joint samples served vs sampled on the client from the full "
        "covariance; acquisition values over CSV",
        "columns": COLUMNS,
        "rows": rows,
        "tables": [
            {
                "title": f"Acquisition values for {plan.csv_rows} CSV rows in one request vs "
                "moments only",
                "columns": CSV_COLUMNS,
                "rows": csv_rows,
            }
        ],
        "notes": notes,
        "versions": versions(VERSIONS),
    }
    return section, ok


def _load(load: tuple[float, float, float]) -> str:
    return ", ".join(f"{value:.2f}" for value in load)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.products``; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.products", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for products.json")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=REPO / "build" / "model",
        help="the exported model (default build/model; if it holds none, the default model "
        "is fitted and exported into a temporary directory)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="q in {10, 50}, n=8, 2,000 CSV rows, one request each",
    )
    args = parser.parse_args(argv)
    model_dir = args.model_dir if (args.model_dir / gp_artifact.POSTERIOR_FILE).exists() else None
    section, ok = run(model_dir, QUICK if args.quick else FULL)
    section["command"] = " ".join(
        ["python -m benchmarks.products", *(sys.argv[1:] if argv is None else argv)]
    )
    log(str(write_section(section, args.out)))
    if not ok:
        print("benchmarks.products: a check failed or a request errored (notes)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
