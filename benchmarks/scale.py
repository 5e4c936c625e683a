"""Large training sets: what N costs to export, store, load and serve (the ``scale`` section,
``make bench``).

    .venv/bin/python -m benchmarks.scale --out benchmarks/results/raw [--sizes 1000,5000,10000]

Per N: a ``SingleTaskGP`` (d=2, m=2, unfitted: the hyperparameters do not change the cost)
exported in a child process (wall time, the child's peak RSS), the artifact's size, its load
as a worker loads it (`gp_formats.load`: the caches memory-mapped from the file), and two
TorchServe workers serving it (each worker's RSS and PSS, q=1 and q=1000 latency). The
rebuild columns measure the other design, caches rebuilt from the data when a worker loads
(what eager GPyTorch's first posterior call costs). See docs/scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import torch

from benchmarks.sections import versions, write_section

REPO = Path(__file__).resolve().parents[1]
SIZES = (1000, 5000, 10000, 20000)
D, M = 2, 2
SEED = 0
# An export's peak RSS per byte of the `m x N x N` float64 caches eager computes, measured at
# N=10,000 (9.4 GB for 1.6 GB, over a 0.45 GB baseline; most of it eager GPyTorch's own
# kernel matrix, its noisy copy, Cholesky factor and inverse): an N whose projection exceeds
# the memory available is reported, not run.
EXPORT_PEAK_PER_CACHE_BYTE = 5.6
BASELINE_BYTES = 0.45e9
LATENCY_REQUESTS = {1: 20, 1000: 5}
TOLERANCE = 1e-8
VERSIONS = ("torch", "botorch", "gpytorch", "torchserve")
COLUMNS = [
    "N",
    "export s",
    "export peak RSS MB",
    "artifact MB",
    "archive s",
    "load s",
    "worker RSS MB (each)",
    "worker PSS MB (2 workers, total)",
    "q=1 ms",
    "q=1000 ms",
    "served vs module",
    "rebuild s",
    "rebuild peak RSS MB",
]


def _model(n: int):
    """The benchmark's model: N points of d=2, two smooth outputs with noise, standardized."""
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.input import Normalize
    from botorch.models.transforms.outcome import Standardize

    generator = torch.Generator().manual_seed(SEED)
    X = torch.rand(n, D, dtype=torch.float64, generator=generator)
    Y = torch.stack([torch.sin(6 * X[:, 0]) + X[:, 1], torch.cos(5 * X[:, 1]) * X[:, 0]], -1)
    Y = Y + 0.01 * torch.randn(Y.shape, dtype=torch.float64, generator=generator)
    return SingleTaskGP(X, Y, input_transform=Normalize(d=D), outcome_transform=Standardize(m=M))


def _child(argv: list[str]) -> dict[str, Any]:
    """What one child process measures: ``export N DIR``, ``load DIR`` or ``rebuild N``."""
    if argv[0] == "export":
        from gp_serve.export.artifact import export_model

        export_model(_model(int(argv[1])), argv[2])
        return {}
    if argv[0] == "load":
        from gp_serve.handler import gp_artifact, gp_formats

        started = time.perf_counter()
        module = gp_formats.load(argv[1], gp_artifact.DEFAULT_FORMAT, D)
        seconds = time.perf_counter() - started
        module.mean_var(torch.rand(3, D, dtype=torch.float64))
        status = _status(os.getpid())
        return {"load_s": seconds, **status}
    model = _model(int(argv[1])).eval()
    started = time.perf_counter()
    with torch.no_grad():
        model.posterior(torch.rand(1, D, dtype=torch.float64))
    return {"rebuild_s": time.perf_counter() - started}


def _status(pid: int) -> dict[str, int]:
    """A process's resident memory (``VmRSS``, ``RssAnon``, ``RssFile``) and ``Pss``, bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            found[key] = int(value.split()[0]) * 1024
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            found["Pss"] = int(line.split()[1]) * 1024
    return found


def _run_child(*argv: str) -> tuple[dict[str, Any], float, int]:
    """Run a child measurement; its answer, wall seconds and peak RSS (bytes, ``wait4``)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.scale", "--child", *argv],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"benchmark child {argv} failed ({process.returncode})")
    lines = output.decode().strip().splitlines()
    return json.loads(lines[-1]), time.perf_counter() - started, usage.ru_maxrss * 1024


def _workers(server_pid: int) -> list[int]:
    """The TorchServe worker processes under the frontend."""
    return [
        child.pid
        for child in psutil.Process(server_pid).children(recursive=True)
        if "model_service_worker" in " ".join(child.cmdline())
    ]


def _points(q: int) -> torch.Tensor:
    return torch.rand(q, D, dtype=torch.float64, generator=torch.Generator().manual_seed(q))


def _latency_ms(url: str, q: int, requests: int) -> tuple[float, dict[str, Any]]:
    """The median time of ``requests`` requests of ``q`` points, and the last answer."""
    from gp_serve.serving.load import Connection

    body = {"inputs": _points(q).tolist(), "covariance": "full" if q == 1 else "none"}
    connection = Connection(url)
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        status, answer = connection.post(json.dumps(body).encode())
        times.append(time.perf_counter() - started)
        if status != 200:
            raise RuntimeError(f"q={q}: {status} {answer[:200]!r}")
    connection.close()
    return 1000 * statistics.median(times), json.loads(answer)


def _served_error(model_dir: Path, q: int, answer: dict[str, Any]) -> float:
    """The served means' and variances' largest relative error against the module in process
    (per column: max |difference| / max |expected|)."""
    from gp_serve.handler import gp_artifact, gp_formats

    module = gp_formats.load(model_dir, gp_artifact.DEFAULT_FORMAT, D)
    worst = 0.0
    for key, expected in zip(("mean", "variance"), module.mean_var(_points(q)), strict=True):
        served = torch.tensor(answer[key], dtype=torch.float64)
        error = (served - expected).abs().amax(0) / expected.abs().amax(0)
        worst = max(worst, float(error.max()))
    return worst


def _serve(model_dir: Path, root: Path) -> dict[str, Any]:
    """Archive ``model_dir`` and serve it with two workers; memory and latency."""
    from gp_serve.serving.archive import MODEL_NAME, build_archive
    from gp_serve.serving.local_server import BENCHMARK_SETTINGS, served

    started = time.perf_counter()
    store = build_archive(model_dir, root / "store").parent
    archive_s = time.perf_counter() - started
    with served(store, root, **BENCHMARK_SETTINGS) as server:
        url = server.prediction_url(MODEL_NAME)
        timed = {q: _latency_ms(url, q, n) for q, n in LATENCY_REQUESTS.items()}
        pid = server.pid()
        assert pid is not None, "TorchServe answered but wrote no pid file"
        workers = [_status(worker) for worker in _workers(pid)]
    q = max(LATENCY_REQUESTS)
    return {
        "archive_s": archive_s,
        "latency_ms": {q: ms for q, (ms, _) in timed.items()},
        "error": _served_error(model_dir, q, timed[q][1]),  # (checked by the caller)
        "workers": workers,
    }


def measure(n: int, root: Path) -> tuple[list[Any], list[str]]:
    """One row of the table (and its notes) for ``N = n``."""
    cache_bytes = M * n * n * 8
    projected = BASELINE_BYTES + EXPORT_PEAK_PER_CACHE_BYTE * cache_bytes
    available = psutil.virtual_memory().available
    if projected > available:
        note = (
            f"N={n}: not run: its export would peak near {projected / 1e9:.0f} GB "
            f"({EXPORT_PEAK_PER_CACHE_BYTE:g} x the {cache_bytes / 1e9:.1f} GB of caches, "
            f"mostly eager GPyTorch's own while the gate runs), {available / 1e9:.0f} GB "
            "available"
        )
        return [n, *["not run"] * (len(COLUMNS) - 1)], [note]
    model_dir = root / f"n{n}" / "model"
    _, export_s, export_peak = _run_child("export", str(n), str(model_dir))
    artifact = (model_dir / "posterior.pt").stat().st_size
    loaded, _, _ = _run_child("load", str(model_dir))
    serving = _serve(model_dir, root / f"n{n}")
    rebuilt, _, rebuild_peak = _run_child("rebuild", str(n))
    workers = serving["workers"]
    if not serving["error"] <= TOLERANCE:
        raise RuntimeError(f"N={n}: served answers differ from the module: {serving['error']:.3g}")
    row = [
        n,
        round(export_s, 1),
        round(export_peak / 1e6),
        round(artifact / 1e6, 1),
        round(serving["archive_s"], 1),
        round(loaded["load_s"], 2),
        " / ".join(str(round(w["VmRSS"] / 1e6)) for w in workers),
        round(sum(w["Pss"] for w in workers) / 1e6),
        round(serving["latency_ms"][1], 1),
        round(serving["latency_ms"][1000], 1),
        f"{serving['error']:.1e}",
        round(rebuilt["rebuild_s"], 2),
        round(rebuild_peak / 1e6),
    ]
    notes = [
        f"N={n}: one worker's load: {loaded['RssAnon'] / 1e6:.0f} MB anonymous + "
        f"{loaded['RssFile'] / 1e6:.0f} MB file-backed (the mapped caches and libraries)"
    ]
    shutil.rmtree(root / f"n{n}", ignore_errors=True)
    return row, notes


def main(argv: list[str] | None = None) -> int:
    """Measure every size and write the ``scale`` section."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        print(json.dumps(_child(argv[1:])))
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(part) for part in text.split(",")],
        default=list(SIZES),
        help=f"training set sizes N (default {','.join(map(str, SIZES))})",
    )
    args = parser.parse_args(argv)
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="gp-scale-") as root:
        for n in args.sizes:
            print(f"scale: N={n}", file=sys.stderr, flush=True)
            row, row_notes = measure(n, Path(root))
            print(f"scale: {dict(zip(COLUMNS, row, strict=True))}", file=sys.stderr, flush=True)
            rows.append(row)
            notes += row_notes
    section = {
        "section": "scale",
        "title": "Large training sets: export, artifact, load and two workers by N",
        "columns": COLUMNS,
        "rows": rows,
        "command": "python -m benchmarks.scale --out benchmarks/results/raw --sizes "
        + ",".join(map(str, args.sizes)),
        "notes": [
            "SingleTaskGP, d=2, m=2, Normalize and Standardize, unfitted (the cost depends on "
            "N, not on the hyperparameters); exported by export_model in a child process "
            "(peak RSS: the child's ru_maxrss).",
            "Load: gp_formats.load as a worker calls it (hash check, torch.jit.load, the "
            "m x N x N caches then memory-mapped from the file: handler/mapped.py).",
            "Workers: TorchServe with model-config.yaml's 2 workers; RSS each (VmRSS, which "
            "counts the mapped caches in full in each) and PSS summed (shared pages split "
            "between the processes mapping them: the machine's memory for the two).",
            "Latency: median of 20 requests at q=1 (full covariance) and 5 at q=1000 "
            "(covariance none), one keep-alive client. Served vs module: the q=1000 answer's "
            "means and variances against the same artifact's mean_var in process (largest "
            "per-column max |difference| / max |expected|).",
            "Rebuild: the other design (the caches rebuilt from the data at load): the time "
            "of eager GPyTorch's first posterior call and its process's peak RSS; each worker "
            "would then hold its own m x N x N caches.",
            *notes,
        ],
        "versions": versions(VERSIONS),
    }
    print(write_section(section, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
