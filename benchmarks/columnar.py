"""Batch scoring through gp-serve in columnar bodies, before and after in one run: CSV read by the
pure-Python parser (``handler.csv_reader: python``, the codec before pyarrow) and by pyarrow,
then Parquet and Arrow IPC stream bodies, written as the ``columnar_batch`` section.

    .venv/bin/python -m benchmarks.columnar --out benchmarks/results/raw [--quick]

One TorchServe serves the model twice, as ``gp`` (the repository's model-config.yaml) and as
``gppy`` (the same with ``csv_reader: python``). CSV files are scored with
`gp_serve.client.score_csv.score_csv` (one request at a time) and, like Parquet and Arrow
files, by `score_file` here (chunks posted N requests at a time, the answers appended to one
output file in order). Every
answer is compared with the TorchScript module's ``mean_var`` in process, computed in the
server's chunks (so equal bit for bit when the served numbers are exact). See
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.ipc as pa_ipc
import pyarrow.parquet as pq
import requests
import torch

from benchmarks.http_measure import RssSampler, random_points, write_points_csv
from benchmarks.sections import versions, write_section
from benchmarks.servers import REPO, model_settings
from gp_serve.client.score_csv import score_csv
from gp_serve.handler import gp_artifact
from gp_serve.handler.codecs.columnar import ARROW_TYPE, PARQUET_TYPE
from gp_serve.serving.archive import MODEL_NAME, build_archive, write_model_config
from gp_serve.serving.local_server import BENCHMARK_SETTINGS, served

PYTHON_MODEL = "gppy"  # the same artifact, CSV read by the Python parser alone
SEED = 7
ANSWER_TOLERANCE = 1e-9
HANDLER_CHUNK_ROWS = 4096  # model-config.yaml's chunk_rows: rows per mean_var call
COLUMNS = [
    "body",
    "csv reader",
    "client",
    "rows",
    "chunk rows",
    "seconds",
    "rows/s",
    "vs before",
    "worker peak RSS MB",
    "answer check",
]
VERSIONS = ("torch", "botorch", "torchserve", "pyarrow", "orjson", "numpy")


@dataclass(frozen=True)
class Plan:
    """What to measure (full run or ``--quick``)."""

    rows: int
    csv_chunk: int  # client.score_csv's default
    table_chunks: tuple[int, ...]  # the last: the handler's max_points, the default advised
    in_flight: int  # requests at a time besides the sequential client's 1 (gp's workers)

    def cases(self) -> list[tuple[str, str, int, int]]:
        """``(body, csv reader, chunk rows, in flight)`` per row; ``in flight`` 0 is
        client.score_csv (sequential)."""
        big = self.table_chunks[-1]
        return [
            ("csv", "python", self.csv_chunk, 0),  # (before: what make bench measured)
            ("csv", "arrow", self.csv_chunk, 0),
            ("csv", "python", self.csv_chunk, self.in_flight),
            ("csv", "arrow", self.csv_chunk, self.in_flight),
            *(
                case
                for body in ("parquet", "arrow")
                for case in (
                    *((body, "-", chunk, 1) for chunk in self.table_chunks),
                    (body, "-", big, self.in_flight),
                )
            ),
        ]


FULL = Plan(rows=10**6, csv_chunk=10_000, table_chunks=(10_000, 100_000), in_flight=2)
QUICK = Plan(rows=10**4, csv_chunk=2_500, table_chunks=(2_500, 10_000), in_flight=2)


def _csv_chunks(path: Path, rows: int) -> Iterator[bytes]:
    """``rows``-row CSV bodies of a CSV file with a header, each with the header."""
    with open(path, "rb") as source:
        header = source.readline()
        while lines := list(itertools.islice(source, rows)):
            yield header + b"".join(lines)


def _table_chunks(path: Path, body: str, rows: int) -> Iterator[bytes]:
    """``rows``-row Parquet or Arrow IPC stream bodies of a Parquet file (read a batch at a
    time) or an Arrow IPC file (memory-mapped, sliced without copies)."""
    if body == "parquet":
        for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
            sink = pa.BufferOutputStream()
            pq.write_table(pa.Table.from_batches([batch]), sink, use_dictionary=False)
            yield sink.getvalue().to_pybytes()
        return
    with pa.memory_map(str(path)) as source:
        table = pa_ipc.open_file(source).read_all()
        for start in range(0, table.num_rows, rows):
            sink = pa.BufferOutputStream()
            with pa_ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table.slice(start, rows))
            yield sink.getvalue().to_pybytes()


class _Output:
    """The scores file: answers appended in order (CSV with one header, or one Parquet or
    Arrow IPC stream file)."""

    def __init__(self, target: Path, body: str) -> None:
        self.out, self.body, self.writer, self.rows = open(target, "wb"), body, None, 0

    def append(self, content: bytes) -> None:
        if self.body == "csv":
            if self.rows:
                content = content.split(b"\n", 1)[1]
            self.out.write(content)
            self.rows += content.count(b"\n") - (0 if self.rows else 1)
            return
        if self.body == "parquet":
            answer = pq.read_table(pa.py_buffer(content))
        else:
            answer = pa_ipc.open_stream(pa.py_buffer(content)).read_all()
        if self.writer is None:
            self.writer = (
                pq.ParquetWriter(self.out, answer.schema)
                if self.body == "parquet"
                else pa_ipc.new_stream(self.out, answer.schema)
            )
        self.writer.write_table(answer)
        self.rows += answer.num_rows

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.out.close()


def score_file(
    source: Path, target: Path, url: str, body: str, chunk_rows: int, in_flight: int = 1
) -> int:
    """Score a CSV, Parquet or Arrow IPC file against ``url`` in chunks of ``chunk_rows``
    rows, each posted as a CSV, Parquet or Arrow IPC stream body, ``in_flight`` requests at a
    time (one keep-alive session per thread); the answers go to ``target`` (the same format),
    appended in order. Memory: ``in_flight + 1`` chunks and their answers.

    Returns:
        The rows scored.

    Raises:
        RuntimeError: If a chunk is refused.
    """
    content_type = {"csv": "text/csv", "parquet": PARQUET_TYPE, "arrow": ARROW_TYPE}[body]
    local = threading.local()

    def post(data: bytes) -> bytes:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        response = local.session.post(
            url, data=data, headers={"Content-Type": content_type}, timeout=600
        )
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
        return response.content

    chunks = (
        _csv_chunks(source, chunk_rows)
        if body == "csv"
        else _table_chunks(source, body, chunk_rows)
    )
    output = _Output(target, body)
    try:
        with ThreadPoolExecutor(in_flight) as pool:
            pending: deque[Future[bytes]] = deque()
            for data in chunks:
                pending.append(pool.submit(post, data))
                if len(pending) >= in_flight:
                    output.append(pending.popleft().result())
            while pending:
                output.append(pending.popleft().result())
    finally:
        output.close()
    return output.rows


def read_scores(path: Path, body: str) -> np.ndarray:
    """A scored file's `rows x columns` numbers."""
    if body == "csv":
        table = pa_csv.read_csv(path)
    elif body == "parquet":
        table = pq.read_table(path)
    else:
        with pa.memory_map(str(path)) as source:
            table = pa_ipc.open_stream(source).read_all()
    return np.stack([column.to_numpy() for column in table.columns], axis=1)


def expected_scores(module: Any, points: np.ndarray, chunk_rows: int) -> np.ndarray:
    """``mean_<out>, std_<out>`` per output from the module's ``mean_var``, in the server's
    chunks: ``chunk_rows`` rows a request, `HANDLER_CHUNK_ROWS` a call."""
    parts = []
    with torch.inference_mode():
        for start in range(0, len(points), chunk_rows):
            X = torch.from_numpy(points[start : start + chunk_rows])
            for piece in X.split(HANDLER_CHUNK_ROWS):
                mean, variance = module.mean_var(piece)
                parts.append(torch.stack([mean, variance.sqrt()], -1).flatten(1).numpy())
    return np.concatenate(parts)


def check(got: np.ndarray, expected: np.ndarray) -> tuple[bool, str]:
    """Whether ``got`` is within `ANSWER_TOLERANCE` of ``expected`` (per column, relative to
    its largest magnitude), and a description with the share of bit-equal numbers."""
    if got.shape != expected.shape:
        return False, f"FAILED: got {got.shape}, expected {expected.shape}"
    scale = np.abs(expected).max(axis=0)
    error = float((np.abs(got - expected).max(axis=0) / np.where(scale, scale, 1.0)).max())
    equal = float(np.mean(got.view(np.int64) == expected.view(np.int64)))
    ok = error <= ANSWER_TOLERANCE
    return ok, f"{'ok' if ok else 'FAILED'}: max rel. error {error:.2g}, {equal:.2%} bit-equal"


def run(model_dir: Path, out: Path, plan: Plan, log: Any = print) -> bool:
    """Serve the model twice, score one file per body format, write the section.

    Returns:
        Whether every answer check passed.
    """
    metadata = gp_artifact.load_metadata(model_dir)
    module = torch.jit.load(gp_artifact.check_posterior(model_dir))
    points = random_points(metadata.input_bounds, plan.rows, np.random.default_rng(SEED))
    rows: list[list[Any]] = []
    ok = True
    with tempfile.TemporaryDirectory(prefix="gp-bench-columnar-") as tmp:
        root = Path(tmp)
        store = root / "model_store"
        build_archive(model_dir, store)
        config = write_model_config(root / "model-config-python.yaml", {"csv_reader": "python"})
        build_archive(model_dir, store, PYTHON_MODEL, config)
        files = {"csv": root / "points.csv", "parquet": root / "points.parquet"}
        write_points_csv(files["csv"], points, metadata.input_names)
        table = pa.table(dict(zip(metadata.input_names, points.T, strict=True)))
        pq.write_table(table, files["parquet"], compression="snappy", use_dictionary=False)
        files["arrow"] = root / "points.arrow"
        with pa_ipc.new_file(files["arrow"], table.schema) as writer:
            writer.write_table(table)
        with served(store, root, [MODEL_NAME, PYTHON_MODEL], **BENCHMARK_SETTINGS) as server:
            warm = (
                ",".join(metadata.input_names)
                + "\n"
                + "\n".join(",".join(map(repr, row)) for row in points[:100].tolist())
            )
            for model in (MODEL_NAME, PYTHON_MODEL):  # (untimed: every worker's first calls)
                for _ in range(4):
                    requests.post(
                        server.prediction_url(model),
                        data=warm.encode(),
                        headers={"Content-Type": "text/csv"},
                        timeout=60,
                    ).raise_for_status()
            before = None
            for body, reader, chunk, in_flight in plan.cases():
                model = PYTHON_MODEL if reader == "python" else MODEL_NAME
                url = server.prediction_url(model)
                target = root / f"scores.{body}"
                client = "score_csv" if not in_flight else f"{in_flight} in flight"
                pids = server.worker_pids(model)
                with RssSampler(pids) as sampler:
                    started = time.perf_counter()
                    if in_flight:
                        scored = score_file(files[body], target, url, body, chunk, in_flight)
                    else:
                        scored = score_csv(files["csv"], target, url, chunk, progress=False)
                    seconds = time.perf_counter() - started
                rate = scored / seconds
                before = before or rate
                expected = expected_scores(module, points, chunk)
                passed, text = check(read_scores(target, body), expected)
                passed &= scored == plan.rows
                ok &= passed
                peak = max(sampler.peak_kb.values()) / 1024
                rows.append(
                    [body, reader, client, scored, chunk, round(seconds, 3), round(rate, 1),
                     round(rate / before, 2), round(peak, 1), text]
                )  # fmt: skip
                log(
                    f"  {body} ({reader}, {client}) chunks of {chunk}: {seconds:.2f} s, "
                    f"{rate:.0f} rows/s (x{rate / before:.2f}), worker peak RSS {peak:.0f} MB, "
                    f"{text}"
                )
                target.unlink()
    workers = model_settings()["maxWorkers"]
    write_section(
        {
            "section": "columnar_batch",
            "title": "Batch scoring in columnar bodies: CSV before (Python parser) and after "
            "(pyarrow), Parquet and Arrow IPC stream",
            "columns": COLUMNS,
            "rows": rows,
            "notes": [
                f"{plan.rows} uniform random points (d={len(metadata.input_names)}, "
                f"m={len(metadata.output_names)}), the same for every row; one TorchServe "
                f"serving the model as {MODEL_NAME} (csv_reader arrow) and {PYTHON_MODEL} "
                f"(csv_reader python), {workers} workers each (1 torch thread).",
                "Clients: score_csv is client.score_csv.score_csv (text/csv chunks, one "
                "request at a time); 'N in flight' is benchmarks.columnar.score_file (chunks "
                "of the source file posted as CSV, Parquet (Snappy) or Arrow IPC stream "
                "bodies, N requests at a time, one keep-alive session per thread, answers "
                "appended in order to one file). 'vs before': rows/s over the first row's.",
                "Worker peak RSS: the largest VmRSS of the scoring model's workers, sampled "
                "every 20 ms during the file.",
                "Answer check: every scored number against the TorchScript module's mean_var "
                "in process, in the server's chunks; relative error per column "
                f"<= {ANSWER_TOLERANCE:g}, and the share of bit-equal float64 numbers.",
                f"Machine: {os.cpu_count()} cores shared by the TorchServe frontend, the "
                "workers and the client.",
            ],
            "versions": versions(VERSIONS),
        },
        out,
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.columnar``; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.columnar", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON file")
    parser.add_argument("--model-dir", type=Path, default=REPO / "build" / "model")
    parser.add_argument("--quick", action="store_true", help="10^4 rows")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.monotonic()
    ok = run(
        args.model_dir,
        args.out,
        QUICK if args.quick else FULL,
        log=lambda line: print(f"[{time.monotonic() - started:4.0f} s] {line}", flush=True),
    )
    if not ok:
        print("benchmarks.columnar: an answer check failed", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
