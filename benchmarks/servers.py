"""The benchmarks' servers besides `gp_serve.serving.local_server.served`: gp archived with other
worker settings, the echo model (TorchServe's floor) and the FastAPI peer under uvicorn.

See docs/benchmarks.md.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from gp_serve.serving.archive import MODEL_CONFIG, MODEL_NAME, build_archive, write_model_config
from gp_serve.serving.load import Connection
from gp_serve.serving.local_server import READY_TIMEOUT_S, free_ports

REPO = Path(__file__).resolve().parents[1]
ECHO_HANDLER = Path(__file__).resolve().with_name("echo_handler.py")
ECHO_MODEL = "echo"
PEER_APP = "benchmarks.peer.app:app"
PEER_WORKERS = 2


def model_settings() -> dict[str, Any]:
    """gp's TorchServe settings (``handler/model-config.yaml`` without the handler's own)."""
    settings = yaml.safe_load(MODEL_CONFIG.read_text())
    settings.pop("handler", None)
    return settings


def archive_with(
    model_dir: Path, root: Path, torch_threads: int | None = None, **settings: Any
) -> Path:
    """``model_dir`` archived as ``gp`` into ``<root>/store``, with the repository's
    ``model-config.yaml`` but ``settings`` (workers, batching) and the handler's
    ``torch_threads``; returns the store."""
    handler = {} if torch_threads is None else {"torch_threads": torch_threads}
    config = write_model_config(root / "model-config.yaml", handler, **settings)
    build_archive(model_dir, root / "store", model_config=config)
    return root / "store"


def build_echo_archive(store: Path, workdir: Path) -> Path:
    """Archive `benchmarks.echo_handler` as ``<store>/echo.mar`` with gp's worker settings
    (its ``model-config.yaml`` written to ``workdir``); returns the archive's path."""
    config = workdir / "echo-model-config.yaml"
    config.write_text(yaml.safe_dump(model_settings()))
    subprocess.run(
        [
            str(Path(sys.executable).with_name("torch-model-archiver")),
            "--model-name",
            ECHO_MODEL,
            "--version",
            "1.0",
            "--force",
            "--handler",
            str(ECHO_HANDLER),
            "--config-file",
            str(config),
            "--export-path",
            str(store),
        ],
        check=True,
        timeout=300,
    )
    return store / f"{ECHO_MODEL}.mar"


def wait_answer(
    url: str, body: bytes, timeout: float, what: str, process: subprocess.Popen | None = None
) -> None:
    """Wait until ``url`` answers ``body`` with HTTP 200.

    Raises:
        RuntimeError: If ``process`` exits or no 200 comes in ``timeout`` seconds.
    """
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
    """The FastAPI peer (`benchmarks.peer.app`) under uvicorn, as a child process group; a
    context manager: started on entry, stopped on exit."""

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

    def __enter__(self) -> Peer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Launch ``uvicorn benchmarks.peer.app:app --host 127.0.0.1 --workers N``."""
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
            GP_PEER_STOCK_UVICORN="1" if self.stock else "0",
        )
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("uvicorn")),
                    PEER_APP,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                ],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, body: bytes, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until a prediction answers and every worker has answered ``/ping``.

        Raises:
            RuntimeError: If uvicorn exits or does not answer in time (with its log's tail).
        """
        try:
            wait_answer(self.url, body, timeout, "the peer", self.process)
            seen: set[int] = set()
            deadline = time.monotonic() + timeout
            while len(seen) < self.workers and time.monotonic() < deadline:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                try:
                    connection.request("GET", "/ping")
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
