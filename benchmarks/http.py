"""HTTP benchmarks: gp-serve's TorchServe against its own floor (echo) and a FastAPI peer, written
as the ``http_latency``, ``throughput`` and ``csv_batch`` sections (``make bench``).

    .venv/bin/python -m benchmarks.http --out benchmarks/results/raw [--quick]

See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.http_measure import (
    AGREEMENT_TOLERANCE,
    FULL,
    QUICK,
    Plan,
    agreement,
    client_layout,
    json_body,
    measure_csv,
    measure_latency,
    measure_stock_peer,
    measure_throughput,
)
from benchmarks.sections import versions, write_section
from benchmarks.servers import (
    ECHO_MODEL,
    REPO,
    Peer,
    build_echo_archive,
    model_settings,
    wait_answer,
)
from gp_serve.handler import gp_artifact
from gp_serve.serving.archive import MODEL_NAME, build_archive
from gp_serve.serving.local_server import BENCHMARK_SETTINGS, READY_TIMEOUT_S, served

# Everything on the measured path, recorded in each section.
VERSIONS = (
    "torch",
    "botorch",
    "gpytorch",
    "torchserve",
    "fastapi",
    "uvicorn",
    "starlette",
    "pydantic",
    "orjson",
)
DOCS = "docs/benchmarks.md"
# Each section's heading there.
METHODS = {
    "http_latency": "HTTP latency",
    "throughput": "HTTP throughput",
    "csv_batch": "CSV batch scoring",
}
LATENCY_COLUMNS = [
    "q",
    "covariance",
    "gp p50 ms",
    "gp p99 ms",
    "echo p50 ms",
    "echo p99 ms",
    "peer p50 ms",
    "peer p99 ms",
    "gp/echo p50",
    "peer/gp p50",
]
THROUGHPUT_COLUMNS = [
    "clients",
    "covariance",
    "gp req/s",
    "peer req/s",
    "gp/peer req/s",
    "gp p50 ms",
    "gp p99 ms",
    "peer p50 ms",
    "peer p99 ms",
    "errors",
]
CSV_COLUMNS = ["rows", "chunk rows", "seconds", "rows/s", "worker peak RSS MB", "answer check"]


def section(
    name: str,
    title: str,
    columns: list[str],
    rows: list[list[Any]],
    notes: list[str],
    found: dict[str, str],
) -> dict:
    """A section of the benchmark results schema; its last note points to its method."""
    return {
        "section": name,
        "title": title,
        "columns": columns,
        "rows": rows,
        "notes": [*notes, f'Method: {DOCS}, "{METHODS[name]}".'],
        "versions": found,
    }


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
    found = versions(VERSIONS)
    metadata = gp_artifact.load_metadata(model_dir)
    bounds, input_names = metadata.input_bounds, metadata.input_names
    module = torch.jit.load(gp_artifact.check_posterior(model_dir))
    workers = model_settings()["maxWorkers"]
    machine = (
        f"{os.cpu_count()} cores shared by the TorchServe frontend, {workers} gp and "
        f"{workers} echo workers, {plan.peer_workers} peer worker processes and the load "
        "generator"
    )
    ok = True
    with tempfile.TemporaryDirectory(prefix="gp-bench-http-") as tmp:
        root = Path(tmp)
        store = root / "model_store"
        build_archive(model_dir, store)
        build_echo_archive(store, root)
        # The peers fit their models while TorchServe starts.
        with (
            Peer(root, plan.peer_workers) as peer,
            Peer(root, stock=True) if plan.stock_peer else nullcontext() as stock,
            served(
                store, root, [MODEL_NAME, ECHO_MODEL], ready=[MODEL_NAME], **BENCHMARK_SETTINGS
            ) as server,
        ):
            probe = json_body(np.array([metadata.centre()]), "diag")
            echo_url = server.prediction_url(ECHO_MODEL)
            wait_answer(echo_url, probe, READY_TIMEOUT_S, "echo")
            peer.wait_ready(probe)
            log(
                f"servers up after {time.monotonic() - started:.0f} s: gp {server.predict_url}, "
                f"echo {echo_url}, peer {peer.url}"
            )
            worst = agreement(server.predict_url, peer.url, module, bounds)
            agreed = worst <= AGREEMENT_TOLERANCE
            ok &= agreed
            log(f"  agreement: peer vs gp max relative difference {worst:.3g}")
            agreement_note = (
                f"agreement: peer vs gp max relative difference {worst:.3g} (tolerance "
                f"{AGREEMENT_TOLERANCE:g}; {'ok' if agreed else 'FAILED'})"
                + (
                    ""
                    if metadata.document.get("data_sha256") == _default_sha256()
                    else " (WARNING: the artifact was not fitted on the default data)"
                )
                + "."
            )

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
                    f"Stock `uvicorn --workers 2` peer (no TCP_NODELAY), q=1 diag, 100 "
                    f"sequential keep-alive requests: p50 {p50} ms, p99 {p99} ms (the peer "
                    f"above: p50 {diag[6] if diag else None} ms, p99 "
                    f"{diag[7] if diag else None} ms)."
                ]
            counts = ", ".join(
                f"q={q} {cov}: {'{} (+{} warm-up)'.format(*plan.counts(q, cov))}"
                for q in plan.sizes
                for cov in ("full", "diag")
            )
            write_section(
                section(
                    "http_latency",
                    "HTTP latency, one sequential client: gp-serve (TorchServe) vs "
                    "TorchServe's floor (echo) vs FastAPI + eager BoTorch",
                    LATENCY_COLUMNS,
                    rows,
                    [
                        f"Requests per server and cell: {counts}; {plan.rounds} interleaved blocks "
                        "per cell.",
                        *stock_note,
                        agreement_note,
                        f"Machine: {machine}.",
                        *problems,
                    ],
                    found,
                ),
                out,
            )

            rows, problems = measure_throughput(
                {"gp": server.predict_url, "peer": peer.url}, bounds, plan, log
            )
            ok &= not problems and all(row[-1] == 0 for row in rows)
            layouts = "; ".join(
                f"{c} clients: {len(client_layout(c))} process(es) x "
                f"{'/'.join(map(str, sorted(set(client_layout(c)))))} thread(s)"
                for c in plan.clients
            )
            write_section(
                section(
                    "throughput",
                    "HTTP throughput, q=1, concurrent clients: gp-serve (TorchServe) "
                    "vs FastAPI + eager BoTorch",
                    THROUGHPUT_COLUMNS,
                    rows,
                    [
                        f"{plan.seconds:g} s per server and cell; load generator: {layouts}.",
                        agreement_note,
                        f"Machine: {machine}.",
                        *problems,
                    ],
                    found,
                ),
                out,
            )

            rows, notes, csv_ok = measure_csv(
                server, peer.url, module, input_names, bounds, plan, root, log
            )
            ok &= csv_ok
            write_section(
                section(
                    "csv_batch",
                    "Batch scoring of CSV files through gp-serve (client/score_csv.py)",
                    CSV_COLUMNS,
                    rows,
                    [*notes, f"Machine: {machine}."],
                    found,
                ),
                out,
            )
    log(f"benchmarks.http: done in {time.monotonic() - started:.0f} s, wrote {out}")
    return ok


def _default_sha256() -> str:
    from gp_serve.export.data import default_data

    return default_data().sha256()


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.http``; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.http",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON files")
    parser.add_argument("--model-dir", type=Path, default=REPO / "build" / "model")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="q in {1, 10}, 1 and 4 clients, 1 s per cell, one peer worker, 10^3 CSV rows",
    )
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
        print(
            "benchmarks.http: a check failed or requests errored (see the notes)", file=sys.stderr
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
