"""The three artifact formats side by side: TorchScript, AOTInductor (``.pt2``) and ONNX (the
``formats`` section, ``make bench``).

    .venv/bin/python -m benchmarks.formats --out benchmarks/results/raw [--quick] [--artifact DIR]

See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchmarks.inprocess import (
    MEMORY_CAP_BYTES,
    ONCE_ABOVE_S,
    estimate_bytes,
    log,
    percentile,
    single_task_model,
    test_points,
    time_calls,
)
from benchmarks.sections import versions, write_section
from gp_serve.export.gate import relative_error, sample_points
from gp_serve.handler import gp_artifact, gp_formats

REPO = Path(__file__).resolve().parents[1]
FORMATS = tuple(gp_artifact.FORMAT_FILES)  # torchscript first: the reference
REFERENCE = "torchscript"
M = 2
N_FULL = 1000
N_QUICK = 100
CELLS = (("forward", (1, 100, 1000)), ("mean_var", (1, 100, 1000, 100_000)))
# Repeats: a cell whose call takes under ROUNDS_BELOW_S is timed ROUNDS times per format
# (formats rotating), each a `time_calls` (one warm-up, then up to 0.3 s or 30 calls);
# dearer cells once (a call over `ONCE_ABOVE_S` is its warm-up only). Fresh processes:
# FRESH_REPEATS per format, medians.
ROUNDS = 3
ROUNDS_BELOW_S = 0.1
FRESH_REPEATS = 3
# Everything on the measured path, recorded in the section.
VERSIONS = ("torch", "botorch", "gpytorch", "linear_operator", "onnx", "onnxruntime")
QUICK = {"n": N_QUICK, "rounds": 1, "fresh_repeats": 1}
# A format's cell predicted (linearly in q from its previous cell of the method) to take
# over CELL_CAP_S, or over `MEMORY_CAP_BYTES` of tensors, is not run (null, noted).
CELL_CAP_S = 60.0
FRESH_TIMEOUT_S = 300
WARM_UP_SIZES = (1, 1, 2, 2, 3)

COLUMNS = [
    "method",
    "q",
    *(f"{fmt} {stat}" for fmt in FORMATS for stat in ("median ms", "p90 ms")),
    *(f"{fmt}/{REFERENCE}" for fmt in FORMATS if fmt != REFERENCE),
    *(f"{fmt} max rel error" for fmt in FORMATS if fmt != REFERENCE),
]
FORMAT_COLUMNS = [
    "format",
    "file",
    "build s",
    "file MB",
    "fresh load s",
    "first forward ms (q=1)",
    "first mean_var ms (q=1)",
    "gate max rel error",
    f"max rel error vs {REFERENCE}",
]

# Run as ``python -c FRESH_CHILD directory fmt d X_json`` from the repository root: prints
# one JSON line with the import, load and first-call seconds.
FRESH_CHILD = """\
import json, sys, time
started = time.perf_counter()
import torch
torch.set_num_threads(1)
from gp_serve.handler import gp_formats
imported = time.perf_counter() - started
directory, fmt, d, points = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
X = torch.tensor(json.loads(points), dtype=torch.float64)
start = time.perf_counter()
posterior = gp_formats.load(directory, fmt, d, threads=1)
load = time.perf_counter() - start
with torch.no_grad():
    start = time.perf_counter()
    posterior.forward(X)
    forward = time.perf_counter() - start
    start = time.perf_counter()
    posterior.mean_var(X)
    mean_var = time.perf_counter() - start
print(json.dumps({"import_s": imported, "load_s": load, "first_forward_s": forward,
                  "first_mean_var_s": mean_var}))
"""


# --- the artifact ------------------------------------------------------------------


def export_all(n: int, directory: Path) -> tuple[dict, dict[str, float]]:
    """Build `single_task_model` (N=``n``, m=`M`, d=6) and export it in every format.

    Returns:
        The metadata written and the wall seconds of building and of exporting.
    """
    from gp_serve.export.artifact import export_model

    start = time.perf_counter()
    model = single_task_model(n, M)
    built = time.perf_counter() - start
    start = time.perf_counter()
    meta = export_model(model, directory, formats=FORMATS)
    exported = time.perf_counter() - start
    return meta, {"build": built, "export": exported}


def file_sizes(directory: Path) -> dict[str, int]:
    """Bytes of each format's file."""
    return {fmt: (directory / gp_artifact.FORMAT_FILES[fmt]).stat().st_size for fmt in FORMATS}


# --- fresh processes ---------------------------------------------------------------


def fresh_load(directory: Path, fmt: str, d: int, X: Tensor) -> dict[str, float]:
    """One fresh process's import, load and first-call seconds (`FRESH_CHILD`).

    Raises:
        RuntimeError: If the child fails (with its stderr's tail).
    """
    result = subprocess.run(
        [sys.executable, "-c", FRESH_CHILD, str(directory), fmt, str(d), json.dumps(X.tolist())],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=FRESH_TIMEOUT_S,
        check=False,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"fresh {fmt} load failed ({result.returncode}): {result.stderr[-2000:]}"
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def fresh_loads(directory: Path, d: int, X: Tensor, repeats: int) -> dict[str, dict]:
    """Per format, the medians of ``repeats`` fresh processes (formats interleaved)."""
    runs: dict[str, list[dict[str, float]]] = {fmt: [] for fmt in FORMATS}
    for _ in range(repeats):
        for fmt in FORMATS:
            runs[fmt].append(fresh_load(directory, fmt, d, X))
            log(f"  fresh {fmt}: " + ", ".join(f"{k} {v:.3g}" for k, v in runs[fmt][-1].items()))
    return {
        fmt: {key: statistics.median(run[key] for run in found) for key in found[0]}
        for fmt, found in runs.items()
    }


# --- in-process calls ----------------------------------------------------------------


def load_all(directory: Path, d: int) -> tuple[dict[str, Any], dict[str, float]]:
    """Every format loaded in this process (one onnxruntime thread), and the load seconds."""
    loaded, seconds = {}, {}
    for fmt in FORMATS:
        start = time.perf_counter()
        loaded[fmt] = gp_formats.load(directory, fmt, d, threads=1)
        seconds[fmt] = time.perf_counter() - start
    return loaded, seconds


def warm_up(posterior: Any, points: Callable[[int, int], Tensor]) -> None:
    """The profiling runs the handler gives TorchScript at load (``inprocess.warm_up``'s
    q = 1, 1, 2, 2, 3 through ``forward`` and ``mean_var``), given to every format alike."""
    with torch.no_grad():
        for q in WARM_UP_SIZES:
            X = points(q, 0)
            posterior.forward(X)
            posterior.mean_var(X)


def method_call(posterior: Any, method: str, X: Tensor) -> Callable[[], tuple[Tensor, Tensor]]:
    bound = getattr(posterior, method)
    return lambda: bound(X)


def worst_error(actual: tuple[Tensor, Tensor], expected: tuple[Tensor, Tensor]) -> float | None:
    """The worst `relative_error` over both outputs (None if not finite or misshapen)."""
    error = max(relative_error(a, e) for a, e in zip(actual, expected, strict=True))
    return error if math.isfinite(error) else None


def measure_cell(
    loaded: dict[str, Any], method: str, X: Tensor, rounds: int
) -> dict[str, tuple[list[float], tuple[Tensor, Tensor]]]:
    """Per format, the pooled timed seconds and the first warm-up's result.

    Round 1 runs every format once (`time_calls`); a further round (the order rotated)
    only while every format's calls took under `ROUNDS_BELOW_S`.
    """
    found: dict[str, tuple[list[float], tuple[Tensor, Tensor]]] = {}
    for r in range(rounds):
        if r and any(statistics.median(s) >= ROUNDS_BELOW_S for s, _ in found.values()):
            break
        order = FORMATS[r % len(FORMATS) :] + FORMATS[: r % len(FORMATS)]
        for fmt in order:
            timing = time_calls(method_call(loaded[fmt], method, X))
            if fmt in found:
                found[fmt][0].extend(timing.seconds)
            else:
                found[fmt] = (list(timing.seconds), timing.result)
    return found


def _skip_reason(history: list[tuple[int, float]], q: int, n: int, method: str) -> str | None:
    predicted_bytes = estimate_bytes("traced", "full" if method == "forward" else "diag", q, n, M)
    if predicted_bytes > MEMORY_CAP_BYTES:
        return f"skipped (est. {predicted_bytes / 2**30:.3g} GiB)"
    if history:
        q_last, t_last = history[-1]
        call = t_last * q / q_last
        calls = 1 if call > ONCE_ABOVE_S else 4
        if call * calls > CELL_CAP_S:
            return f"skipped (est. {call * calls:.3g} s)"
    return None


def measure_grid(
    loaded: dict[str, Any],
    points: Callable[[int, int], Tensor],
    n: int,
    rounds: int,
    skipped: list[str],
) -> list[list]:
    """The per-call rows (`COLUMNS`), method by method and q by q."""
    rows = []
    for method, sizes in CELLS:
        history: list[tuple[int, float]] = []  # the slowest format's medians
        for q in sizes:
            row: list = [method, q] + [None] * (len(COLUMNS) - 2)
            reason = _skip_reason(history, q, n, method)
            if reason:
                skipped.append(f"{method} q={q}: {reason}")
                rows.append(row)
                continue
            X = points(q, q)
            found = measure_cell(loaded, method, X, rounds)
            medians = {fmt: statistics.median(s) for fmt, (s, _) in found.items()}
            history.append((q, max(medians.values())))
            reference = found[REFERENCE][1]
            for fmt in FORMATS:
                seconds, result = found[fmt]
                at = COLUMNS.index(f"{fmt} median ms")
                row[at : at + 2] = [medians[fmt] * 1e3, percentile(seconds, 90) * 1e3]
                if fmt != REFERENCE:
                    row[COLUMNS.index(f"{fmt}/{REFERENCE}")] = medians[fmt] / medians[REFERENCE]
                    error = worst_error(result, reference)
                    row[COLUMNS.index(f"{fmt} max rel error")] = error
                    if error is None:
                        skipped.append(
                            f"{method} q={q} {fmt}: output not finite or of "
                            f"another shape than {REFERENCE}'s"
                        )
            rows.append(row)
            log(
                "  "
                + " ".join(
                    "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)
                    for v in row
                )
            )
            del X, found, reference
            gc.collect()
    return rows


# --- the run -----------------------------------------------------------------------


def run(n: int, rounds: int, fresh_repeats: int, artifact: Path | None = None) -> dict:
    """Export (or take ``artifact``), measure everything; the section's JSON object."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    setup: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gp-bench-formats-") as tmp:
        if artifact is None:
            directory = Path(tmp) / "model"
            log(f"exporting a SingleTaskGP (N={n}, d=6, m={M}) as {', '.join(FORMATS)}")
            meta, walls = export_all(n, directory)
            setup.append(
                f"Model: benchmarks.inprocess.single_task_model(N={n}, m={M}), d=6 "
                f"(built in {walls['build']:.2f} s); export_model(formats="
                f"{list(FORMATS)}) took {walls['export']:.1f} s in all "
                "(tracing, compiling, writing and gating every format)."
            )
            points = test_points  # (the unit cube widened by 10%, as inprocess)
        else:
            directory = artifact
            meta = json.loads((directory / gp_artifact.METADATA_FILE).read_text())
            missing = [fmt for fmt in FORMATS if fmt not in meta.get("formats", {})]
            if missing:
                raise SystemExit(
                    f"{directory}: not exported as {missing}; export it with "
                    f"formats={list(FORMATS)}"
                )
            setup.append(
                f"Model: the artifact {directory} ({meta['model_class']}, N="
                f"{meta['num_train']}, d={meta['num_inputs']}, m="
                f"{meta['num_outputs']}), exported beforehand."
            )
            bounds = torch.tensor(meta["input_bounds"], dtype=torch.float64)

            def points(q: int, seed: int) -> Tensor:
                return sample_points(bounds, q, 10_000 + seed)

        n, d = meta["num_train"], meta["num_inputs"]
        sizes = file_sizes(directory)

        log("fresh processes: load and first calls")
        fresh = fresh_loads(directory, d, points(1, 1), fresh_repeats)

        log("loading every format in this process")
        loaded, inprocess_load = load_all(directory, d)
        for posterior in loaded.values():
            warm_up(posterior, points)
        skipped: list[str] = []
        rows = measure_grid(loaded, points, n, rounds, skipped)
        del loaded
        gc.collect()
    wall = time.perf_counter() - started

    worst: dict[str, float | None] = {}
    for fmt in FORMATS:
        if fmt != REFERENCE:
            errors = [row[COLUMNS.index(f"{fmt} max rel error")] for row in rows]
            worst[fmt] = max((e for e in errors if e is not None), default=None)
    format_rows = [
        [
            fmt,
            gp_artifact.FORMAT_FILES[fmt],
            meta["formats"][fmt].get("build_seconds"),
            sizes[fmt] / 1e6,
            fresh[fmt]["load_s"],
            fresh[fmt]["first_forward_s"] * 1e3,
            fresh[fmt]["first_mean_var_s"] * 1e3,
            meta["formats"][fmt].get("max_relative_error"),
            worst.get(fmt),
        ]
        for fmt in FORMATS
    ]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    notes = [
        f"float64, d={d}, m={meta['num_outputs']}, N={n}; torch.set_num_threads(1), "
        "onnxruntime intra_op_num_threads=1 and inter_op_num_threads=1 (gp_formats.load's "
        f"threads=1); {os.cpu_count()} cores, shared with whatever else ran.",
        *setup,
        "Per-call grid: each format loaded once in this process with handler.gp_formats.load "
        "(pt2: the package's four AOTInductor models; onnx: one onnxruntime session per "
        "method on its subgraph), then given TorchScript's profiling runs (q = 1, 1, 2, 2, 3 "
        "through forward and mean_var). forward: mean and output-major (q*m) x (q*m) "
        "covariance; mean_var: mean and variance only. Times include each format's input "
        "check and, for onnx, the numpy conversions (the served path).",
        f"Per cell: every format in turn, benchmarks.inprocess.time_calls (one warm-up, then "
        f"repeats up to 0.3 s or 30 calls, at least 3; a call over {ONCE_ABOVE_S:g} s is "
        f"timed once, its warm-up); when every format's median is under "
        f"{ROUNDS_BELOW_S * 1e3:g} ms, {rounds} such rounds in a rotating order, the timed "
        "calls pooled. p90 interpolates between order statistics. <fmt>/torchscript: the "
        "ratio of the medians (< 1: faster than TorchScript).",
        "max rel error: max |fmt - torchscript| / max |torchscript| over both outputs, same "
        "inputs (the first warm-up call's answers). Worst over the grid: "
        + ", ".join(f"{fmt} {'—' if e is None else f'{e:.2g}'}" for fmt, e in worst.items())
        + ". Every file passed the export's gate vs eager BoTorch (gate max rel error).",
        "Per-format table: build s is metadata.json's formats.<fmt>.build_seconds (the "
        "TorchScript trace, save, load and gate; pt2: the exportable posterior, torch.export "
        "and AOTInductor's compile of the four methods, packaging and gate; onnx: the ONNX "
        f"export and gate). Fresh load: the median of {fresh_repeats} fresh Python "
        "process(es) per format (formats interleaved) timing only gp_formats.load, after "
        "importing torch and handler.gp_formats (median "
        + ", ".join(f"{fmt} {fresh[fmt]['import_s']:.2f} s" for fmt in FORMATS)
        + "); the load includes the format's own lazy imports (pt2: "
        "torch._inductor.package; onnx: onnx and onnxruntime) and, for onnx, checking the "
        "graph and extracting the four subgraphs. First forward and first mean_var: that "
        "process's first calls at q=1, forward first.",
        "Loads in this (warm) process: "
        + ", ".join(f"{fmt} {inprocess_load[fmt]:.2f} s" for fmt in FORMATS)
        + ".",
        *skipped,
        f"peak RSS of this process {peak_mb:.0f} MB; wall time {wall:.1f} s (without the imports)",
    ]
    return {
        "section": "formats",
        "title": "Artifact formats: TorchScript vs AOTInductor (.pt2) vs ONNX, in "
        "process, one thread",
        "columns": COLUMNS,
        "rows": rows,
        "tables": [
            {
                "title": "Per format: build, size, fresh-process load and first calls, errors",
                "columns": FORMAT_COLUMNS,
                "rows": format_rows,
            }
        ],
        "notes": notes,
        "versions": versions(VERSIONS),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/raw"))
    parser.add_argument(
        "--quick", action="store_true", help=f"N={N_QUICK}, one round, one fresh process per format"
    )
    parser.add_argument(
        "--artifact",
        type=Path,
        default=None,
        help="an artifact exported with every format (skips the export)",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else {"n": N_FULL, "rounds": ROUNDS, "fresh_repeats": FRESH_REPEATS}
    section = run(
        plan["n"],
        plan["rounds"],
        plan["fresh_repeats"],
        args.artifact.resolve() if args.artifact else None,
    )
    section["command"] = " ".join(
        ["python -m benchmarks.formats", *(sys.argv[1:] if argv is None else argv)]
    )
    print(write_section(section, args.out))


if __name__ == "__main__":
    main()
