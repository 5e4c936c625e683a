"""The TorchServe frontend's memory with every limit of ``config.properties`` reached at once,
for sizing its JVM (``vmargs``; the ``frontend_memory`` section of ``make bench``).

    .venv/bin/python -m benchmarks.frontend_memory --model-dir build/model [--out DIR]

See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

from gp_serve.handler import gp_artifact
from gp_serve.serving.archive import build_archive
from gp_serve.serving.local_server import served
from gp_serve.serving.properties import DEFAULT_CONFIG, read_properties


def _heap_used_bytes(pid: int) -> int | None:
    """The JVM's used heap (``jstat -gc``: survivor, eden, old; KiB), if jstat is there."""
    jstat = shutil.which("jstat")
    if jstat is None:
        return None
    result = subprocess.run(
        [jstat, "-gc", str(pid)], capture_output=True, text=True, timeout=10, check=False
    )
    lines = result.stdout.split()
    if result.returncode != 0 or not lines:
        return None
    half = len(lines) // 2
    columns = dict(zip(lines[:half], lines[half:], strict=True))
    used = sum(float(columns.get(key, 0)) for key in ("S0U", "S1U", "EU", "OU"))
    return int(used * 1024)


def measure(model_dir: Path, root: Path, **overrides: str) -> dict:
    """The figures at the worst case, with ``config.properties`` keys ``overrides`` set."""
    properties = {**read_properties(DEFAULT_CONFIG), **overrides}
    queue = int(properties.get("job_queue_size", 100))
    max_request = int(properties["max_request_size"])
    build_archive(model_dir, root / "store")
    with served(root / "store", root, **overrides) as server:
        java = psutil.Process(server.pid())
        metadata = server.metadata()
        full_points = metadata.document["serving"]["max_full_covariance_points"]
        item = b"[0.5,0.5]"
        count = (max_request - 1024) // (len(item) + 1)
        body = b'{"covariance": "diag", "inputs": [' + b",".join([item] * count) + b"]}"
        centre = metadata.centre()
        big = json.dumps(
            {"inputs": [[c + 1e-3 * i for c in centre] for i in range(full_points)]}
        ).encode()
        headers = {"Content-Type": "application/json", **server.headers()}
        samples: list[tuple[int, int | None]] = []
        workers = [psutil.Process(pid) for pid in server.worker_pids()]
        worker_peaks = {w.pid: w.memory_info().rss for w in workers}
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                try:
                    samples.append((java.memory_info().rss, _heap_used_bytes(java.pid)))
                    for worker in workers:
                        worker_peaks[worker.pid] = max(
                            worker_peaks[worker.pid], worker.memory_info().rss
                        )
                except psutil.Error:
                    return
                time.sleep(0.2)

        def send(payload: bytes) -> tuple[int, int]:
            try:
                response = requests.post(
                    server.predict_url, data=payload, headers=headers, timeout=300
                )
                return response.status_code, len(response.content)
            except requests.RequestException as e:
                return -1, len(str(e))

        rss_before = java.memory_info().rss
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=queue + 4) as pool:
            answers = list(pool.map(send, [big, big] + [body] * (queue + 2)))
        elapsed = time.monotonic() - started
        done.set()
        sampler.join()
        alive = java.is_running() and java.status() != psutil.STATUS_ZOMBIE
        heaps = [heap for _, heap in samples if heap is not None]
        return {
            "job_queue_size": queue,
            "max_request_size": max_request,
            "vmargs": properties.get("vmargs", ""),
            "full_covariance_points": full_points,
            "statuses": [status for status, _ in answers],
            "largest_answer_bytes": max(size for _, size in answers),
            "seconds": round(elapsed, 1),
            "jvm_alive": alive,
            "rss_before_mb": round(rss_before / 2**20),
            "rss_peak_mb": round(max(rss for rss, _ in samples) / 2**20) if samples else None,
            "heap_peak_mb": round(max(heaps) / 2**20) if heaps else None,
            "worker_rss_peak_mb": {pid: round(rss / 2**20) for pid, rss in worker_peaks.items()},
            "workers_unchanged": alive
            and server.pid() is not None
            and server.worker_pids() == sorted(worker_peaks),
            "out_of_memory": [
                line.strip()
                for line in server.log_tail(400).splitlines()
                if "OutOfMemoryError:" in line or "Terminating due to" in line
            ][:3],
        }


def section(figures: dict) -> dict:
    """The figures as a ``benchmarks.report`` section (one row)."""
    statuses = figures["statuses"]
    counts = ", ".join(f"{statuses.count(s)} x {s}" for s in sorted(set(statuses)))
    columns = [
        "settings",
        "answers",
        "JVM alive",
        "JVM heap peak (MB)",
        "JVM RSS peak (MB)",
        "worker RSS peak (MB)",
        "same workers",
    ]
    row = [
        f"job_queue_size={figures['job_queue_size']}, max_request_size="
        f"{figures['max_request_size']}, {figures['vmargs']}",
        counts,
        figures["jvm_alive"],
        figures["heap_peak_mb"],
        figures["rss_peak_mb"],
        max(figures["worker_rss_peak_mb"].values()),
        figures["workers_unchanged"],
    ]
    return {
        "section": "frontend_memory",
        "title": "The TorchServe frontend at every limit at once",
        "columns": columns,
        "rows": [row],
        "notes": [
            f"{figures['job_queue_size'] + 2} maximal JSON bodies and two full "
            f"covariances of {figures['full_covariance_points']} points at once "
            f"({figures['seconds']} s; largest answer "
            f"{figures['largest_answer_bytes']} bytes); sampled every 0.2 s.",
            *figures["out_of_memory"],
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.frontend_memory", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--model-dir", type=Path, default=Path("build/model"))
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config.properties key (e.g. vmargs=-Xmx2g ...)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the server's files here (default: a temporary folder, removed)",
    )
    args = parser.parse_args(argv)
    gp_artifact.load_metadata(args.model_dir)
    overrides = dict(item.split("=", 1) for item in args.set)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        figures = measure(args.model_dir, args.workdir, **overrides)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            figures = measure(args.model_dir, Path(tmp), **overrides)
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "frontend_memory.json").write_text(
            json.dumps(section(figures), indent=2) + "\n"
        )
    return 0 if figures["jvm_alive"] else 1


if __name__ == "__main__":
    sys.exit(main())
