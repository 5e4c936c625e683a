"""A local TorchServe of a model store's GP models: start, wait until each answers, stop.

``gp-serve serve|start|stop`` (`LocalTorchServe`), and `served` for the soak, the benchmarks
and the tests; each instance keeps its files in its own workdir. See docs/serving.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import requests

from gp_serve.handler import gp_artifact
from gp_serve.serving import auth
from gp_serve.serving.archive import MODEL_NAME
from gp_serve.serving.properties import (
    DEFAULT_CONFIG,
    ConfigError,
    address,
    allowed_store_urls,
    read_properties,
    write_properties,
)

READY_TIMEOUT_S = 180.0
# A benchmark's throwaway loopback server runs without token authorization, so that its load
# generators stay plain HTTP clients (the frontend's check is a string comparison per request),
# and with a job queue deep enough for its 64 closed-loop clients of tiny requests (the served
# default, 16, sheds what exceeds it with 503s: load shedding, not what is measured there).
BENCHMARK_SETTINGS = {"disable_token_authorization": "true", "job_queue_size": "128"}
MODEL_LOG = "model_log.log"
# The config an instance runs with, written into its workdir (`LocalTorchServe`).
CONFIG_FILE = "ts-config.properties"
ARCHIVE_SUFFIX = ".mar"


class StoreError(ValueError):
    """The model store holds no archive to serve, or not one that was asked for."""


def store_models(
    store: str | os.PathLike, models: str | Sequence[str] | None = None
) -> dict[str, str]:
    """The models to serve from ``store``: each name and its archive's file name.

    Args:
        store: The model store.
        models: None: every ``<name>.mar`` in ``store``, sorted by name (the
            ``<name>.<version>.mar`` files ``gp-serve update`` writes are versions of
            ``<name>``, not models of their own: left out). Else entries (a string of them
            separated by commas or spaces, or a sequence): a name, served from
            ``<name>.mar``, or TorchServe's ``name=file.mar``.

    Raises:
        StoreError: If there is no archive to serve, or an entry's archive is missing.
    """
    store = Path(store)
    archives = sorted(p.name for p in store.glob(f"*{ARCHIVE_SUFFIX}") if p.is_file())
    if models is None:
        chosen = {
            name[: -len(ARCHIVE_SUFFIX)]: name
            for name in archives
            if "." not in name[: -len(ARCHIVE_SUFFIX)]
        }
        if not chosen:
            raise StoreError(
                f"{store}: expected model archives (<name>{ARCHIVE_SUFFIX}), got "
                f"{archives or 'none'}; build one with `gp-serve archive` (make archive)"
                + (", or name a versioned one with --models" if archives else "")
            )
        return chosen
    entries = re.split(r"[,\s]+", models.strip()) if isinstance(models, str) else list(models)
    chosen = {}
    for entry in filter(None, entries):
        name, _, archive = entry.partition("=")
        archive = archive or f"{name}{ARCHIVE_SUFFIX}"
        if archive not in archives:
            raise StoreError(
                f"model {name!r}: expected {store / archive}, got no such file "
                f"(archives there: {archives or 'none'})"
            )
        chosen[name] = archive
    if not chosen:
        raise StoreError(f"models: expected model names, got {models!r}")
    return chosen


def describe_model(
    management_url: str, model: str, headers: dict[str, str], timeout: float
) -> list[dict]:
    """The management API's describe of ``model`` (``GET /models/<model>?customized=true``),
    each entry's ``customizedMetadata`` (the handler's JSON) decoded.

    Raises:
        requests.HTTPError: If TorchServe does not answer 200.
        requests.RequestException: If it does not answer.
        ValueError: If the answer is not a JSON list of model objects (the message quotes it).
    """
    response = requests.get(
        f"{management_url}/models/{model}",
        params={"customized": "true"},
        headers=headers,
        timeout=timeout,
    )
    response.raise_for_status()
    try:
        answer = response.json()
        for entry in answer:
            if isinstance(entry.get("customizedMetadata"), str):
                entry["customizedMetadata"] = json.loads(entry["customizedMetadata"])
    except (ValueError, AttributeError, TypeError) as e:
        raise ValueError(f"expected a JSON list of models, got {response.text[:300]!r}") from e
    return answer


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that are free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def write_config(
    base: str | os.PathLike, target: str | os.PathLike, model_store: str, **overrides: str
) -> Path:
    """Copy ``base`` (config.properties) to ``target`` with free loopback ports.

    Args:
        base: The properties to start from.
        target: Where to write the result.
        model_store: The model store to name in it.
        overrides: Other keys to set (e.g. ``disable_token_authorization="true"`` for a
            benchmark's throwaway server).

    Returns:
        ``target``.
    """
    properties = read_properties(base)
    inference, management, metrics, grpc, grpc_management = free_ports(5)
    properties.update(
        inference_address=f"http://127.0.0.1:{inference}",
        management_address=f"http://127.0.0.1:{management}",
        metrics_address=f"http://127.0.0.1:{metrics}",
        grpc_inference_port=str(grpc),
        grpc_management_port=str(grpc_management),
        model_store=str(model_store),
        **overrides,
    )
    return write_properties(properties, target)


def read_log(log: Path, offset: int = 0) -> str:
    """A TorchServe log's text from byte ``offset`` ("" if it cannot be read yet)."""
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def load_errors(log: Path, offset: int = 0) -> list[str]:
    """Lines of a TorchServe model log (from byte ``offset``) saying a model failed to load."""
    marker = gp_artifact.LOAD_ERROR_MARKER
    return [
        line[line.index(marker) :] for line in read_log(log, offset).splitlines() if marker in line
    ]


class LocalTorchServe:
    """One TorchServe process serving the models of a model store on loopback.

    Attributes:
        inference_url: The inference API's base URL (from the config).
        management_url: The management API's.
        metrics_url: The metrics API's.
        served: Each model it serves and its archive (`store_models`), fixed by `start`;
            None before.
    """

    def __init__(
        self,
        config: str | os.PathLike,
        model_store: str | os.PathLike,
        workdir: str | os.PathLike,
        models: str | Sequence[str] | None = None,
    ) -> None:
        """
        Args:
            config: The ``config.properties`` to run with.
            model_store: The folder holding the ``.mar`` files.
            workdir: Where logs (and ``tmp/``: pid file, sockets) go.
            models: Which models to serve (`store_models`; default: every ``<name>.mar``
                in the store), read when it starts.
        """
        self.model_store = Path(model_store).resolve()
        self.workdir = Path(workdir).resolve()
        self.models = models
        self.served: dict[str, str] | None = None
        properties = read_properties(config)
        # What it runs with: ``config`` with the store and the only URLs it may register from
        # anchored to this instance's absolute model store.
        properties.update(
            model_store=str(self.model_store), allowed_urls=allowed_store_urls(self.model_store)
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = write_properties(properties, self.workdir / CONFIG_FILE)
        self.token_auth = auth.enabled(properties)
        environ: dict[str, str] = {}  # the config alone: TorchServe runs with the envvars off
        self.inference_url = address(properties, "inference", environ)
        self.management_url = address(properties, "management", environ)
        self.metrics_url = address(properties, "metrics", environ)
        self.process: subprocess.Popen | None = None
        self._log_offset = 0

    def headers(self, api: str = "inference") -> dict[str, str]:
        """The ``Authorization`` header ``api`` (``inference`` or ``management``) needs: the
        key from TorchServe's ``key_file.json`` in the workdir (none with tokens off).

        Raises:
            auth.AuthError: If token authorization is on and the key cannot be read.
        """
        if not self.token_auth:
            return {}
        return auth.headers(self.workdir, api, wait_s=auth.WAIT_S)

    @property
    def model_names(self) -> list[str]:
        """The models it serves (once started) or would serve (`store_models`).

        Raises:
            StoreError: If it is not started and the store holds none to serve.
        """
        return list(
            self.served if self.served is not None else store_models(self.model_store, self.models)
        )

    def prediction_url(self, model: str = MODEL_NAME) -> str:
        """The prediction endpoint of ``model``."""
        return f"{self.inference_url}/predictions/{model}"

    @property
    def predict_url(self) -> str:
        """The prediction endpoint of the ``gp`` model."""
        return self.prediction_url()

    def _env(self) -> dict[str, str]:
        tmp = self.workdir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            TMPDIR=str(tmp),
            TEMP=str(tmp),
            LOG_LOCATION=str(self.workdir),
            METRICS_LOCATION=str(self.workdir),
        )
        return env

    def _command(self, served: dict[str, str], *flags: str) -> list[str]:
        torchserve = str(Path(sys.executable).with_name("torchserve"))
        return [
            torchserve,
            *flags,
            "--ncs",
            "--model-store",
            str(self.model_store),
            "--models",
            *(f"{name}={archive}" for name, archive in served.items()),
            "--ts-config",
            str(self.config),
        ]

    def start(self, foreground: bool = False) -> None:
        """Launch TorchServe; its console output goes to ``<workdir>/torchserve.out``.

        Args:
            foreground: Run ``torchserve --foreground`` as a child in its own
                session, so that Ctrl-C reaches only this process, which then
                stops it cleanly (`stop`).

        Raises:
            StoreError: If the store holds no model to serve (nothing is started).
            RuntimeError: If the launcher fails.
        """
        served = self.served = store_models(self.model_store, self.models)
        env = self._env()
        auth.key_file(self.workdir).unlink(missing_ok=True)  # (a stale one: wait for the new)
        log = self.workdir / MODEL_LOG
        self._log_offset = log.stat().st_size if log.exists() else 0
        with open(self.workdir / "torchserve.out", "ab") as out:
            if foreground:
                self.process = subprocess.Popen(
                    self._command(served, "--foreground", "--start"),
                    cwd=self.workdir,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                return
            result = subprocess.run(
                self._command(served, "--start"),
                cwd=self.workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if result.returncode != 0:
            raise RuntimeError(
                f"torchserve --start failed (exit {result.returncode})\n" + self.log_tail()
            )

    def pid(self) -> int | None:
        """The Java frontend's pid from this instance's pid file, if it is running."""
        pid_file = self.workdir / "tmp" / ".model_server.pid"
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def metadata(self, model: str = MODEL_NAME) -> gp_artifact.Metadata:
        """The served model's metadata (its describe answer), validated."""
        answer = describe_model(self.management_url, model, self.headers("management"), timeout=10)
        return gp_artifact.validate(answer[0]["customizedMetadata"])

    def worker_pids(self, model: str = MODEL_NAME) -> list[int]:
        """The pids of ``model``'s worker processes (management API), sorted."""
        response = requests.get(
            f"{self.management_url}/models/{model}", headers=self.headers("management"), timeout=10
        )
        response.raise_for_status()
        return sorted(worker["pid"] for worker in response.json()[0]["workers"])

    def wait_ready(self, timeout: float = READY_TIMEOUT_S, model: str = MODEL_NAME) -> dict:
        """Wait until ``model`` answers a prediction at the centre of its training box.

        Args:
            timeout: Seconds to wait.
            model: The model's name.

        Returns:
            The JSON answer to the sample prediction.

        Raises:
            RuntimeError: If TorchServe exits, the model fails to load (at once, with
                the handler's reason) or does not answer in time; the message ends with
                the tail of its logs.
        """
        url = self.prediction_url(model)
        deadline = time.monotonic() + timeout
        error = "no answer yet"
        while time.monotonic() < deadline:
            failed = load_errors(self.workdir / MODEL_LOG, self._log_offset)
            if failed:
                raise RuntimeError(f"{failed[0]}\n" + self.log_tail())
            if self.process is not None and self.process.poll() is not None:
                error = f"torchserve exited with {self.process.returncode}"
                break
            if self.process is None and self.pid() is None:
                error = "TorchServe is not running (it exited)"
                break
            try:
                response = requests.post(
                    url,
                    json={"inputs": [self.metadata(model).centre()]},
                    headers=self.headers(),
                    timeout=10,
                )
                if response.status_code == 200:
                    return response.json()
                error = f"HTTP {response.status_code}: {response.text[:300]}"
            except (
                requests.RequestException,
                auth.AuthError,
                KeyError,
                ValueError,
                IndexError,
            ) as e:
                error = f"{type(e).__name__}: {e}"
            time.sleep(0.5)
        raise RuntimeError(f"the model did not answer at {url}: {error}\n" + self.log_tail())

    def wait_models(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until every model it serves answers (`wait_ready`), within ``timeout`` seconds
        in all.

        Raises:
            RuntimeError: As `wait_ready`, for the first model that fails.
        """
        deadline = time.monotonic() + timeout
        for name in self.model_names:
            self.wait_ready(max(deadline - time.monotonic(), 1.0), model=name)

    def stop(self) -> None:
        """Stop this instance (``torchserve --stop`` on its own pid file) and wait."""
        subprocess.run(
            [str(Path(sys.executable).with_name("torchserve")), "--stop", "--foreground"],
            cwd=self.workdir,
            env=self._env(),
            stdout=subprocess.DEVNULL,
            check=False,
        )
        if self.process is not None:
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the frontend, model and stdout logs."""
        parts = []
        for name in ("ts_log.log", MODEL_LOG, "torchserve.out"):
            path = self.workdir / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path} (last {len(tail)} lines) ---\n" + "\n".join(tail))
        return "\n".join(parts) or f"(no logs in {self.workdir})"

    def examples(self) -> str:
        """Ready-to-paste commands for each model it serves (which must answer: the sample
        points come from each model's metadata)."""
        command = _gp_serve_command()
        workdir = (
            ""
            if _short(self.workdir) == auth.DEFAULT_WORKDIR
            else f" --workdir {shlex.quote(_short(self.workdir))}"
        )
        json_type = "-H 'Content-Type: application/json'"
        lines = []
        token = management = ""
        if self.token_auth:
            lines.append(f"TOKEN=$({command} token{workdir})")
            token = ' -H "Authorization: Bearer $TOKEN"'
            management = f' -H "Authorization: Bearer $({command} token{workdir} management)"'
        for name in self.model_names:
            metadata = self.metadata(name)
            url = self.prediction_url(name)
            points = _sample_points(metadata)
            instance = dict(zip(metadata.input_names, points[0], strict=True))
            rows = [",".join(metadata.input_names), *(",".join(map(str, p)) for p in points)]
            csv = "".join(f"{row}\\n" for row in rows)
            post = f"curl -s {url}{token} {json_type} -d"
            lines += [
                f"# {name}: inputs {', '.join(metadata.input_names)}; outputs "
                f"{', '.join(metadata.output_names)}",
                f"{post} {_body(inputs=points)}",
                f"{post} {_body(inputs=points[:1], covariance='diag')}",
                f"{post} {_body(instances=[instance])}",
                f"printf {shlex.quote(csv)} > points.csv",
                f"curl -s --data-binary @points.csv{token} -H 'Content-Type: text/csv' {url} "
                "> scores.csv",
                f"curl -s '{self.management_url}/models/{name}?customized=true'{management}",
                f"{command} describe --name {name}{workdir}",
            ]
        lines.append(f"curl -s {self.metrics_url}/metrics | head")
        return "\n".join(lines)


@contextmanager
def served(
    store: str | os.PathLike,
    root: str | os.PathLike,
    models: str | Sequence[str] | None = None,
    *,
    ready: bool | Sequence[str] = True,
    config: str | os.PathLike = DEFAULT_CONFIG,
    **overrides: str,
) -> Iterator[LocalTorchServe]:
    """A `LocalTorchServe` of ``store``'s models on free loopback ports for the block: started,
    ready, stopped on exit.

    Args:
        store: The model store (its ``.mar`` files already built).
        root: Gets ``config.properties`` (``config`` with free 127.0.0.1 ports and
            ``overrides``) and the workdir ``logs/`` (logs, pid file, sockets).
        models: Which models to serve (`store_models`; default: every ``<name>.mar``).
        ready: Wait until every model answers (True), the models named, or none (False).
        config: The ``config.properties`` to start from.
        overrides: ``config.properties`` keys to set.

    Raises:
        RuntimeError: If TorchServe fails to start or a model does not answer
            (`LocalTorchServe.wait_ready`); it is stopped first.
    """
    root = Path(root)
    properties = write_config(config, root / "config.properties", str(store), **overrides)
    server = LocalTorchServe(properties, store, root / "logs", models)
    try:
        server.start()
        if ready is True:
            server.wait_models()
        for name in ready if not isinstance(ready, bool) else ():
            server.wait_ready(model=name)
        yield server
    finally:
        server.stop()


def _sample_points(metadata: gp_artifact.Metadata) -> list[list[float]]:
    """Two points inside the training box (a quarter and three quarters along each input),
    to 3 significant digits."""
    return [
        [float(f"{lower + share * (upper - lower):.3g}") for lower, upper in metadata.input_bounds]
        for share in (0.25, 0.75)
    ]


def _body(**document) -> str:
    """``document`` as JSON, quoted for a shell."""
    return shlex.quote(json.dumps(document))


def _gp_serve_command() -> str:
    """How to run ``gp-serve`` here: the console script beside this interpreter, else
    ``python -m gp_serve``."""
    script = Path(sys.executable).with_name("gp-serve")
    return _short(script) if script.exists() else f"{_short(sys.executable)} -m gp_serve"


def _short(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory when it is inside it (for printed commands)."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def _serving(server: LocalTorchServe) -> str:
    return ", ".join(f"'{name}'" for name in server.model_names)


def _serve(server: LocalTorchServe) -> int:
    server.start(foreground=True)
    code = 1
    try:
        server.wait_models()
        print(
            f"TorchServe is serving {_serving(server)} (logs in {server.workdir}). "
            f"Try:\n\n{server.examples()}\n\nCtrl-C stops it.",
            flush=True,
        )
        code = server.process.wait() if server.process is not None else 1
    except KeyboardInterrupt:
        print("\nStopping TorchServe ...", flush=True)
        code = 0
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
    finally:
        server.stop()
    print("TorchServe has stopped.")
    return code


def _start(server: LocalTorchServe) -> int:
    if server.pid() is not None:
        print(
            f"error: TorchServe is already running (pid {server.pid()}); "
            "run `gp-serve stop` (make stop) first",
            file=sys.stderr,
        )
        return 1
    try:
        server.start()
        server.wait_models()
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        server.stop()
        return 1
    print(
        f"TorchServe is serving {_serving(server)} (pid {server.pid()}, logs in "
        f"{server.workdir}). Try:\n\n{server.examples()}\n"
    )
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The serve, start and stop commands' options (``gp-serve serve|start|stop``)."""
    parser.add_argument(
        "--config",
        default=str(DEFAULT_CONFIG),
        help="the TorchServe config to run with (default: the repository's config.properties)",
    )
    parser.add_argument(
        "--model-store",
        default="model_store",
        help="the folder of model archives (default: model_store)",
    )
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated names of the models to serve, each from "
        "<store>/<name>.mar (default: every <name>.mar in the store)",
    )
    parser.add_argument(
        "--workdir",
        default=auth.DEFAULT_WORKDIR,
        help=f"where its logs, keys and pid file go (default: {auth.DEFAULT_WORKDIR})",
    )


def run(args: argparse.Namespace) -> int:
    """``args.action`` (serve, start, stop). Exit status 0, 1 if TorchServe fails (or, for
    start, is already running), 2 if the config or the store is refused."""
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    try:
        server = LocalTorchServe(args.config, args.model_store, args.workdir, args.models)
        if args.action != "stop":  # (a store with nothing to serve: refused before starting)
            store_models(server.model_store, server.models)
    except (ConfigError, StoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.action == "serve":
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.default_int_handler)
        return _serve(server)
    if args.action == "start":
        return _start(server)
    if server.pid() is None:
        print("TorchServe is not running.")
        return 0
    server.stop()
    print("TorchServe has stopped.")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m gp_serve.serving.local_server {serve,start,stop}`` (``gp-serve serve``)."""
    parser = argparse.ArgumentParser(
        prog="python -m gp_serve.serving.local_server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["serve", "start", "stop"])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
