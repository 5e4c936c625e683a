"""Faults against a real TorchServe: a worker killed under load, broken archives.

Each server here is its own (free loopback ports, its own logs), so the session server's
worker pids are untouched (docs/testing.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import requests
import torch

from gp_serve.handler import gp_artifact
from gp_serve.serving.archive import build_archive
from gp_serve.serving.local_server import (
    MODEL_LOG,
    LocalTorchServe,
    load_errors,
    served,
    write_config,
)
from gp_serve.serving.properties import DEFAULT_CONFIG
from gp_serve.serving.soak import REQUEST_TIMEOUT_S, run_load
from tests.conftest import REPO
from tests.serving.conftest import Exported
from tests.serving.test_server import worker_pids

pytestmark = pytest.mark.server

PROMPT_S = 60  # "promptly": well under the 180 s the tools otherwise wait


def test_a_worker_killed_under_load_is_replaced(exported: Exported, tmp_path: Path) -> None:
    build_archive(exported.directory, tmp_path / "store")
    with served(tmp_path / "store", tmp_path) as server:
        module = torch.jit.load(str(exported.directory / gp_artifact.POSTERIOR_FILE))
        before = worker_pids(server)
        stop, results = threading.Event(), []
        load = threading.Thread(
            target=lambda: results.append(
                run_load(
                    server.predict_url,
                    module,
                    server.metadata().input_bounds,
                    clients=8,
                    seconds=120,
                    seed=5,
                    stop=stop,
                    headers=server.headers(),
                )
            )
        )
        load.start()
        time.sleep(3)
        killed = before[0]
        os.kill(killed, signal.SIGKILL)
        killed_at = time.monotonic()
        replaced = None
        while time.monotonic() - killed_at < 90:
            try:
                described = requests.get(
                    f"{server.management_url}/models/gp",
                    timeout=10,
                    headers=server.headers("management"),
                ).json()
            except requests.ConnectionError:  # (the poll itself, on a loaded 2-core machine)
                time.sleep(0.2)
                continue
            workers = described[0]["workers"]
            pids = sorted(w["pid"] for w in workers)
            if (
                killed not in pids
                and len(pids) == 2
                and all(w["status"] == "READY" for w in workers)
            ):
                replaced = time.monotonic() - killed_at
                break
            time.sleep(0.2)
        time.sleep(3)  # keep the load on the replaced worker for a while
        stop.set()
        load.join(timeout=REQUEST_TIMEOUT_S + 30)
        assert not load.is_alive(), "a request hung past its timeout"
        result = results[0]
        print(
            f"\n[faults] SIGKILL of worker {killed} under 8 clients: replaced after "
            f"{replaced:.1f}s; {result.requests} requests, {len(result.errors)} lost: "
            f"{result.errors}"
        )
        assert replaced is not None, f"worker {killed} not replaced in 90 s"
        # At most the request the killed worker was computing (batchSize 1) is lost, with
        # an answer (a 5xx from the frontend), never a hang.
        assert len(result.errors) <= 1, result.errors
        assert all('"message": "Worker died."' in error for error in result.errors), result.errors
        assert (
            requests.post(
                server.predict_url,
                json={"inputs": [[0.5, 0.5]]},
                headers=server.headers(),
                timeout=30,
            ).status_code
            == 200
        )


def broken_archive(good: Path, target: Path, how: str, other: bytes = b"") -> Path:
    """A copy of the ``good`` archive with ``posterior.pt`` or ``metadata.json`` broken
    (truncated, missing, or ``posterior.pt`` swapped for ``other``, another model's valid one:
    ``build_archive`` refuses to package a swapped file, so it is swapped inside the archive)."""
    name = gp_artifact.POSTERIOR_FILE if how.startswith("posterior") else gp_artifact.METADATA_FILE
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(target, "w") as out:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == name:
                if how.endswith("missing"):
                    continue
                data = other if how.endswith("swapped") else data[: len(data) // 2]
            out.writestr(info, data)
    return target


# archive variant -> what its one log line says
BROKEN = {
    "posterior-truncated": "posterior.pt: truncated or corrupt: expected a complete "
    "TorchScript archive (BadZipFile: File is not a zip file); "
    "re-export the model",
    "posterior-missing": "posterior.pt: missing; re-export the model",
    "metadata-truncated": "metadata.json: truncated or malformed JSON (",
    "metadata-missing": "metadata.json: cannot read (No such file or directory); re-export "
    "the model",
    "posterior-swapped": "posterior.pt: SHA-256 ",  # (then: differs from metadata.json's ...)
}


@pytest.fixture(scope="module")
def good_archive(exported: Exported, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_archive(exported.directory, tmp_path_factory.mktemp("good"))


def test_broken_archives_fail_to_load_with_one_clear_line(
    good_archive: Path, other_posterior: bytes, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    for how in BROKEN:
        broken_archive(good_archive, store / f"{how}.mar", how, other_posterior)
    with served(store, tmp_path, list(BROKEN), ready=False) as server:
        deadline, lines = time.monotonic() + PROMPT_S, {}
        while time.monotonic() < deadline and len(lines) < len(BROKEN):
            lines = {}
            for line in load_errors(server.workdir / MODEL_LOG):
                lines.setdefault(line.split("'")[1], []).append(line)
            time.sleep(0.5)
        assert sorted(lines) == sorted(BROKEN), server.log_tail()
        for how, found in lines.items():  # one line per load attempt, each with the reason
            for line in found:
                assert line.startswith(f"{gp_artifact.LOAD_ERROR_MARKER} '{how}': ")
                assert BROKEN[how] in line, line
                if how == "posterior-swapped":
                    assert line.endswith(
                        "differs from metadata.json's "
                        + line.split("differs from metadata.json's ")[-1]
                    ) and line.endswith(
                        ": the file was changed after export; re-export the model"
                    ), line
        # The frontend keeps answering for a model it cannot load (a 5xx: the server's
        # side is broken, not the request), at once rather than after a timeout.
        response = requests.post(
            f"{server.inference_url}/predictions/posterior-missing",
            json={"inputs": [[0.5, 0.5]]},
            headers=server.headers(),
            timeout=30,
        )
        assert response.status_code in (500, 503), response.text


@pytest.mark.parametrize("action", ["start", "serve"])
def test_make_start_and_serve_report_a_broken_archive_promptly(
    action: str, good_archive: Path, tmp_path: Path
) -> None:
    """``make start`` / ``make serve`` run exactly this command (with the repository's config)."""
    store = tmp_path / "store"
    store.mkdir()
    broken_archive(good_archive, store / "gp.mar", "posterior-truncated")
    config = write_config(DEFAULT_CONFIG, tmp_path / "config.properties", str(store))
    started = time.monotonic()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving.local_server",
            action,
            "--config",
            str(config),
            "--model-store",
            str(store),
            "--workdir",
            str(tmp_path / "logs"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=PROMPT_S + 60,
        check=False,
    )
    elapsed = time.monotonic() - started
    print(
        f"\n[faults] {action} with a truncated posterior.pt: exit {run.returncode} "
        f"after {elapsed:.1f}s"
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stderr.startswith(f"error: {gp_artifact.LOAD_ERROR_MARKER} 'gp': "), run.stderr[
        :2000
    ]
    assert BROKEN["posterior-truncated"] in run.stderr.splitlines()[0]
    assert elapsed < PROMPT_S
    # and it stopped the server it started
    assert (
        not (tmp_path / "logs" / "tmp" / ".model_server.pid").exists()
        or LocalTorchServe(config, store, tmp_path / "logs").pid() is None
    )
