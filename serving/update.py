"""Serve a new artifact as a new version of the running model, with zero failed requests.

    gp-serve update --model-dir NEWDIR [--workdir logs] [--store DIR] [--name gp]
                    [--version V] [--model-config handler/model-config.yaml] [--timeout 300]

Exit 0, 2 (refused, nothing changed), 1 (rolled back) or 3 (an old version left registered).
See docs/serving.md ("Model updates") for the steps, the guarantees and TorchServe's part.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests
import torch

from gp_serve.handler import gp_artifact, gp_formats
from gp_serve.serving import auth
from gp_serve.serving.archive import MODEL_CONFIG, MODEL_NAME, build_archive
from gp_serve.serving.local_server import CONFIG_FILE, MODEL_LOG, read_log
from gp_serve.serving.properties import ConfigError, address, read_properties

TS_LOG = "ts_log.log"
TOLERANCE = 1e-8
TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 30.0
PROBE_POINTS = 5
# A version's name in a file name and a URL path: TorchServe refuses URLs with "..".
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class UpdateError(RuntimeError):
    """The update failed; the message says why."""


class RefusedError(UpdateError):
    """The artifact or the arguments were refused before the server was touched."""


class PartialUpdate(UpdateError):
    """The new version serves, but an old version could not be removed."""


class Clock:
    """Prints each step with the seconds since the start."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def step(self, message: str) -> None:
        print(f"[update +{self.elapsed():6.1f}s] {message}", flush=True)


@dataclass(frozen=True)
class Server:
    """The running TorchServe, as its workdir describes it."""

    workdir: Path
    inference_url: str
    management_url: str
    model_store: Path
    token_auth: bool

    @classmethod
    def from_workdir(cls, workdir: str | os.PathLike) -> Server:
        """The server started in ``workdir`` (its config and, with tokens on, its keys).

        Raises:
            RefusedError: If either cannot be read.
        """
        workdir = Path(workdir).resolve()
        try:
            properties = read_properties(workdir / CONFIG_FILE)
            environ: dict[str, str] = {}  # the config alone, as serving.local_server runs it
            server = cls(
                workdir,
                address(properties, "inference", environ),
                address(properties, "management", environ),
                Path(properties.get("model_store") or "model_store").resolve(),
                auth.enabled(properties),
            )
            server.headers("inference"), server.headers("management")
        except (ConfigError, auth.AuthError) as e:
            raise RefusedError(f"{e}: is a TorchServe running there (`make start`)?") from e
        return server

    def headers(self, api: str) -> dict[str, str]:
        return auth.headers(self.workdir, api) if self.token_auth else {}

    def call(
        self,
        method: str,
        path: str,
        ok: tuple[int, ...] = (200,),
        timeout: float = REQUEST_TIMEOUT_S,
        **params: str | int,
    ) -> requests.Response:
        """A management call; a status outside ``ok`` raises `UpdateError` with the answer."""
        url = f"{self.management_url}{path}"
        try:
            response = requests.request(
                method,
                url,
                params=params or None,
                timeout=timeout,
                headers=self.headers("management"),
            )
        except requests.RequestException as e:
            raise UpdateError(f"{method} {path}: {type(e).__name__}: {e}") from e
        if response.status_code not in ok:
            raise UpdateError(f"{method} {path}: HTTP {response.status_code}: {_message(response)}")
        return response

    def describe(self, name: str, version: str | None = None) -> list[dict]:
        path = f"/models/{name}" + (f"/{version}" if version else "")
        return self.call("GET", path).json()

    def versions(self, name: str) -> list[str]:
        return [entry["modelVersion"] for entry in self.describe(name, "all")]

    def predict(self, name: str, version: str | None, X: torch.Tensor) -> requests.Response:
        path = f"/predictions/{name}" + (f"/{version}" if version else "")
        return requests.post(
            f"{self.inference_url}{path}",
            json={"inputs": X.tolist(), "covariance": "diag"},
            headers=self.headers("inference"),
            timeout=REQUEST_TIMEOUT_S,
        )


def _message(response: requests.Response) -> str:
    try:
        document = response.json()
        return str(document.get("message") or document.get("status") or document)
    except ValueError:
        return response.text[:300]


def next_version(current: str, taken: set[str]) -> str:
    """The next major version after ``current`` (``1.0`` -> ``2.0``, ``7`` -> ``8``) not in
    ``taken``; a timestamp if ``current`` does not start with a number."""
    match = re.fullmatch(r"(\d+)((?:\.\d+)*)", current)
    if not match:
        version = time.strftime("%Y%m%d%H%M%S")
        return version if version not in taken else version + f".{len(taken)}"
    major, rest = int(match.group(1)), re.sub(r"\d+", "0", match.group(2))
    while True:
        major += 1
        if f"{major}{rest}" not in taken:
            return f"{major}{rest}"


def probe_inputs(metadata: gp_artifact.Metadata, count: int = PROBE_POINTS) -> torch.Tensor:
    """``count`` fixed points inside the training bounds (the centre first)."""
    rows = [metadata.centre()]
    for k in range(1, count):
        rows.append(
            [
                lo + (hi - lo) * (((k * (j + 2)) % count) + 0.5) / count
                for j, (lo, hi) in enumerate(metadata.input_bounds)
            ]
        )
    return torch.tensor(rows, dtype=torch.float64)


def load_reference(model_dir: Path, metadata: gp_artifact.Metadata) -> gp_formats.PosteriorModule:
    """The artifact's ``posterior.pt``, loaded in process (checked to be the file exported,
    as a worker checks it)."""
    return gp_formats.load(model_dir, gp_artifact.DEFAULT_FORMAT, len(metadata.input_names))


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    scale = expected.abs().max().item() or 1.0
    return (got - expected).abs().max().item() / scale


def mismatch(answer: dict, mean: torch.Tensor, variance: torch.Tensor, version: str) -> str | None:
    """Why a prediction answer is not the reference's (or not from ``version``), or None."""
    if str(answer.get("version")) != version:
        return f"answered by version {answer.get('version')!r}, expected {version!r}"
    for key, expected in (("mean", mean), ("variance", variance)):
        got = torch.tensor(answer.get(key, []), dtype=torch.float64)
        if got.shape != expected.shape:
            return f"{key} of shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
        error = relative_error(got, expected)
        if not error <= TOLERANCE:
            return f"{key} differs from the artifact's in-process answer by {error:.3g} (relative)"
    return None


def worker_failure(log: Path, offset: int, name: str, version: str) -> str | None:
    """Why a worker of ``name`` ``version`` died (failed to load), from the model log (from
    byte ``offset``): the handler's one-line reason, else the last exception line; None if
    none died."""
    tag = f"-{name}_{version}-std"
    lines = [line.split(" - ", 1)[-1] for line in read_log(log, offset).splitlines() if tag in line]
    for line in lines:
        if gp_artifact.LOAD_ERROR_MARKER in line:
            return line[line.index(gp_artifact.LOAD_ERROR_MARKER) :]
    if not any("Backend worker process died" in line for line in lines):
        return None
    errors = [line for line in lines if re.match(r"[\w.]+(Error|Exception)\b.*:", line)]
    return errors[-1] if errors else "Backend worker process died."


def wait_workers(
    server: Server, name: str, version: str, count: int, deadline: float, log_offset: int
) -> None:
    """Wait until ``count`` workers of ``version`` are ready.

    Raises:
        UpdateError: If one dies (with its reason) or they are not ready by ``deadline``.
    """
    ready = 0
    while time.monotonic() < deadline:
        failure = worker_failure(server.workdir / MODEL_LOG, log_offset, name, version)
        if failure:
            raise UpdateError(f"a worker of version {version} failed to load: {failure}")
        workers = server.describe(name, version)[0].get("workers", [])
        ready = sum(worker.get("status") == "READY" for worker in workers)
        if ready >= count:
            return
        time.sleep(0.5)
    raise UpdateError(
        f"only {ready} of the {count} workers of version {version} were ready in time"
    )


class WorkerActivity:
    """Which workers of one model version are mid-job, from the frontend's ``ts_log.log``.

    TorchServe's WorkerThread logs ``Flushing req.cmd ...`` (and ``Looping backend response``)
    when it has taken a job from the queue and ``Backend response time`` once the answer is
    sent, under the worker's thread name ``W-<port>-<name>_<version>``. The file is read
    once, then only what is appended (from the start again if it was rotated).
    """

    def __init__(self, log: Path, name: str, version: str) -> None:
        self.log = log
        self.pattern = re.compile(
            r" W-(\d+)-" + re.escape(f"{name}_{version}") + r" \S+ - "
            r"(Flushing req\.cmd|Looping backend response|Backend response time)"
        )
        self.offset = 0
        self.busy: dict[str, bool] = {}
        self.events = 0  # activity lines seen so far

    @property
    def available(self) -> bool:
        return self.log.is_file()

    def poll(self) -> set[str]:
        """Read what was appended; return the ids of the workers now mid-job."""
        try:
            size = self.log.stat().st_size
            if size < self.offset:  # rotated
                self.offset, self.busy = 0, {}
            with open(self.log, "rb") as f:
                f.seek(self.offset)
                data = f.read(size - self.offset)
        except OSError:
            return set()
        end = data.rfind(b"\n") + 1  # whole lines only
        self.offset += end
        for line in data[:end].decode("utf-8", errors="replace").splitlines():
            match = self.pattern.search(line)
            if match:
                self.busy[match.group(1)] = not match.group(2).startswith("Backend")
                self.events += 1
        return {worker for worker, busy in self.busy.items() if busy}


def drain(server: Server, name: str, version: str, timeout: float, clock: Clock) -> float:
    """Wait until ``version`` has no queued job and no worker mid-job, twice in a row a
    settle interval apart with no activity between.

    Returns:
        The seconds it took.

    Raises:
        UpdateError: If it is still busy after ``timeout`` seconds.
    """
    started = time.monotonic()
    activity = WorkerActivity(server.workdir / TS_LOG, name, version)
    if not activity.available:
        clock.step(
            f"warning: no {activity.log}: the workers' activity is not visible; "
            "waiting for an empty queue and 5 s without change"
        )
    idle_since, events, state = None, -1, "no answer yet"
    while time.monotonic() - started < timeout:
        described = server.describe(name, version)[0]
        settle = max(0.5, 2 * described.get("maxBatchDelay", 0) / 1000)
        if not activity.available:
            settle = 5.0
        pending = int(described.get("jobQueueStatus", {}).get("pendingRequests", 0))
        # (only a ready worker computes jobs; one that failed to load stays "mid-LOAD")
        workers = {
            str(worker["id"])
            for worker in described.get("workers", [])
            if worker.get("status") == "READY"
        }
        busy = activity.poll() & workers if activity.available else set()
        state = f"{pending} queued, workers mid-job: {sorted(busy) or 'none'}"
        now = time.monotonic()
        if pending or busy or activity.events != events:
            idle_since = None if (pending or busy) else now
            events = activity.events
        elif idle_since is None:
            idle_since = now
        elif now - idle_since >= settle:
            return now - started
        time.sleep(0.1)
    raise UpdateError(f"version {version} of {name!r} still busy after {timeout:.0f} s ({state})")


def unregister(server: Server, name: str, version: str, timeout: float, clock: Clock) -> None:
    """Drain ``version``, then unregister it (a version already gone is fine)."""
    if version not in server.versions(name):
        return
    waited = drain(server, name, version, timeout, clock)
    clock.step(f"version {version} idle (drained in {waited:.1f} s); unregistering it")
    server.call("DELETE", f"/models/{name}/{version}", ok=(200, 404), timeout=timeout)


def verify(
    server: Server,
    name: str,
    version: str | None,
    X: torch.Tensor,
    mean: torch.Tensor,
    variance: torch.Tensor,
    expected_version: str,
    requests_count: int,
    deadline: float,
    log_offset: int,
) -> int:
    """Send ``requests_count`` concurrent probes until all answer the reference.

    Returns:
        How many rounds it took.

    Raises:
        UpdateError: On a wrong answer (at once), a worker that failed to load, or no
            answer before ``deadline``.
    """
    rounds, last = 0, "no answer yet"
    with ThreadPoolExecutor(max_workers=requests_count) as pool:
        while time.monotonic() < deadline:
            failure = worker_failure(server.workdir / MODEL_LOG, log_offset, name, expected_version)
            if failure:
                raise UpdateError(
                    f"a worker of version {expected_version} failed to load: {failure}"
                )
            rounds += 1
            try:
                answers = list(
                    pool.map(lambda _: server.predict(name, version, X), range(requests_count))
                )
            except requests.RequestException as e:
                last = f"{type(e).__name__}: {e}"
                time.sleep(0.5)
                continue
            failed = [r for r in answers if r.status_code != 200]
            if not failed:
                for response in answers:
                    problem = mismatch(response.json(), mean, variance, expected_version)
                    if problem:
                        raise UpdateError(problem)
                return rounds
            last = f"HTTP {failed[0].status_code}: {_message(failed[0])}"
            time.sleep(0.5)
    raise UpdateError(f"no correct answer from version {expected_version} in time ({last})")


def check_schema(served: dict | str | None, metadata: gp_artifact.Metadata) -> None:
    """Refuse an artifact whose inputs or outputs differ from the served model's (its
    describe answer, ``served``): the clients would break."""
    if not served:
        return
    try:
        model = gp_artifact.validate(served if isinstance(served, dict) else json.loads(served))
    except (gp_artifact.ArtifactError, ValueError):
        return  # (not a gp-serve handler's answer: nothing to compare with)
    if (model.input_names, model.output_names) != (metadata.input_names, metadata.output_names):
        raise RefusedError(
            f"artifact refused: its inputs {metadata.input_names} and outputs "
            f"{metadata.output_names} differ from the served model's ({model.input_names}, "
            f"{model.output_names}); its clients would break"
        )


def archive(model_dir: Path, store: Path, name: str, model_config: Path, version: str) -> Path:
    """``build_archive`` into a staging folder of the store, then moved to
    ``<store>/<name>.<version>.mar`` in one step (the model inside is still ``name``)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-{version}-", dir=store))
    try:
        built = build_archive(model_dir, staging, name, model_config, version)
        target = store / f"{name}.{version}.mar"
        os.replace(built, target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def update(
    model_dir: Path,
    workdir: Path,
    store: Path | None = None,
    name: str = MODEL_NAME,
    version: str | None = None,
    model_config: Path = MODEL_CONFIG,
    timeout: float = TIMEOUT_S,
) -> str:
    """Check, archive, register, verify, switch to and drain for the artifact ``model_dir``
    (the six steps of docs/serving.md, "Model updates").

    Returns:
        The new version, now the default.

    Raises:
        RefusedError: Nothing was changed on the server.
        UpdateError: The new version was rolled back; the old one serves as before.
        PartialUpdate: The new version serves; an old one is still registered.
    """
    clock = Clock()
    model_dir = Path(model_dir)
    server = Server.from_workdir(workdir)
    if store is not None and Path(store).resolve() != server.model_store:
        raise RefusedError(
            f"--store {store}: the server registers only from its model store, {server.model_store}"
        )
    store = server.model_store

    # 1. The artifact and its reference answers.
    try:
        metadata = gp_artifact.load_metadata(model_dir)
        reference = load_reference(model_dir, metadata)
    except gp_artifact.ArtifactError as e:
        raise RefusedError(f"artifact refused: {e}") from e
    X = probe_inputs(metadata)
    mean, variance = (t.detach() for t in reference.mean_var(X))
    family = metadata.document.get("model_class", "a GP")
    clock.step(
        f"artifact {model_dir}: {family} on {metadata.num_train} points, inputs "
        f"{metadata.input_names}, outputs {metadata.output_names}; its in-process "
        f"answers at {len(X)} points"
    )

    try:
        current = server.describe(name)[0]
        registered = server.versions(name)
        for _ in range(20):  # (a job of the default's queue: 503 while it is full)
            response = server.call("GET", f"/models/{name}", ok=(200, 503), customized="true")
            if response.status_code == 200:
                break
            time.sleep(0.5)
        else:
            raise UpdateError(f"GET /models/{name}?customized=true: HTTP 503: {_message(response)}")
        served = response.json()[0]
    except UpdateError as e:
        raise RefusedError(f"the served model {name!r}: {e}") from e
    old_version = current["modelVersion"]
    check_schema(served.get("customizedMetadata"), metadata)
    min_workers, max_workers = int(current["minWorkers"]), int(current["maxWorkers"])
    clock.step(
        f"serving {name!r} version {old_version} (default; registered: {registered}), "
        f"{min_workers}-{max_workers} workers"
    )

    version = version or next_version(old_version, set(registered))
    if not VERSION_RE.fullmatch(version) or ".." in version:
        raise RefusedError(f"--version {version!r}: expected letters, digits, '.', '_', '-'")
    if version in registered:
        raise RefusedError(f"version {version} of {name!r} is already registered")

    # 2. The archive.
    try:
        mar = archive(model_dir, store, name, Path(model_config), version)
    except (gp_artifact.ArtifactError, subprocess.SubprocessError, OSError, ValueError) as e:
        raise RefusedError(f"artifact refused: {e}") from e
    clock.step(f"archived {mar} (model {name!r}, version {version})")

    # 3-5: any failure unregisters the new version; after set-default, the old one first
    # becomes the default again.
    log = server.workdir / MODEL_LOG
    log_offset = log.stat().st_size if log.exists() else 0
    deadline = time.monotonic() + timeout
    is_default = False
    try:
        response = server.call(
            "POST",
            "/models",
            ok=(200, 202),
            url=mar.name,
            model_name=name,
            initial_workers=min_workers,
            synchronous="false",
        )
        clock.step(f"registering {mar.name} with {min_workers} workers: {_message(response)}")
        new = server.describe(name, version)[0]
        if (int(new["minWorkers"]), int(new["maxWorkers"])) != (min_workers, max_workers):
            # (the archive's model-config.yaml sets the workers; TorchServe then ignores
            # initial_workers)
            server.call(
                "PUT",
                f"/models/{name}/{version}",
                ok=(200, 202),
                min_worker=min_workers,
                max_worker=max_workers,
                synchronous="false",
            )
            clock.step(
                f"scaling version {version} from {new['minWorkers']}-{new['maxWorkers']} "
                f"to {min_workers}-{max_workers} workers, as the current default"
            )
        wait_workers(server, name, version, min_workers, deadline, log_offset)
        clock.step(f"version {version}: {min_workers} workers ready")

        rounds = verify(
            server,
            name,
            version,
            X,
            mean,
            variance,
            version,
            max(2, 2 * max_workers),
            deadline,
            log_offset,
        )
        clock.step(
            f"version {version} answers the artifact's in-process mean and variance "
            f"(<= {TOLERANCE:g} relative) on every probe ({rounds} round(s))"
        )

        server.call("PUT", f"/models/{name}/{version}/set-default")
        is_default = True
        clock.step(f"set-default: /predictions/{name} now goes to version {version}")
        verify(server, name, None, X, mean, variance, version, 1, deadline, log_offset)
        clock.step(f"confirmed: /predictions/{name} answers from version {version}")
    except (Exception, KeyboardInterrupt) as e:
        reason = (
            str(e)
            if isinstance(e, UpdateError)
            else "interrupted"
            if isinstance(e, KeyboardInterrupt)
            else f"{type(e).__name__}: {e}"
        )
        clock.step(f"failed: {reason}")
        problem = rollback(
            server, name, version, old_version if is_default else None, timeout, clock
        )
        if problem:
            raise UpdateError(f"{reason}; rollback incomplete: {problem}") from e
        mar.unlink(missing_ok=True)  # (the store as it was)
        raise UpdateError(
            f"{reason}; rolled back: version {old_version} is the default, "
            f"version {version} unregistered"
        ) from e

    # 6. Drain and unregister the old version(s).
    left = []
    for old in [v for v in server.versions(name) if v != version]:
        try:
            unregister(server, name, old, timeout, clock)
            clock.step(f"unregistered version {old}")
        except UpdateError as e:
            clock.step(f"could not unregister version {old}: {e}")
            left.append(old)
    remaining = server.versions(name)
    if left:
        raise PartialUpdate(
            f"version {version} is the default and serves, but {left} are still registered "
            f"(registered: {remaining}); when idle: curl -X DELETE "
            f"{server.management_url}/models/{name}/<version> with the management key"
        )
    clock.step(f"done: {name!r} serves version {version} only (registered: {remaining})")
    return version


def rollback(
    server: Server, name: str, version: str, old_default: str | None, timeout: float, clock: Clock
) -> str | None:
    """Make ``old_default`` the default again (if given and still registered), then drain
    and unregister ``version``.

    Returns:
        None, or what went wrong (reported, not raised).
    """
    try:
        if old_default is not None and old_default in server.versions(name):
            server.call("PUT", f"/models/{name}/{old_default}/set-default")
            clock.step(f"rollback: version {old_default} is the default again")
        if version in server.versions(name):
            unregister(server, name, version, timeout, clock)
            clock.step(f"rollback: unregistered version {version}")
        else:
            clock.step(f"rollback: version {version} is not registered (TorchServe removed it)")
    except (UpdateError, auth.AuthError) as e:
        clock.step(f"rollback incomplete: {e}")
        return str(e)
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The update command's options (``gp-serve update``)."""
    parser.add_argument(
        "--model-dir",
        required=True,
        type=Path,
        help="the new artifact (posterior.pt, metadata.json)",
    )
    parser.add_argument(
        "--workdir",
        default=auth.DEFAULT_WORKDIR,
        type=Path,
        help="the running TorchServe's working directory",
    )
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help="its model store (default: the one its config names)",
    )
    parser.add_argument("--name", default=MODEL_NAME, help="the model to update")
    parser.add_argument(
        "--version",
        default=None,
        help="the new version (default: the next major after the default's)",
    )
    parser.add_argument("--model-config", default=MODEL_CONFIG, type=Path)
    parser.add_argument(
        "--timeout",
        default=TIMEOUT_S,
        type=float,
        help="seconds for each wait (registration and verification, drain)",
    )


def run(args: argparse.Namespace) -> int:
    """Update; exit status 0, 2 (refused, nothing changed), 1 (rolled back) or 3 (an old
    version is left registered), with ``error: ...`` on stderr."""
    try:
        update(
            args.model_dir,
            args.workdir,
            args.store,
            args.name,
            args.version,
            args.model_config,
            args.timeout,
        )
    except RefusedError as e:
        print(f"error: {e} (nothing changed)", file=sys.stderr)
        return 2
    except PartialUpdate as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except UpdateError as e:
        print(f"error: update failed: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """``gp-serve update``: see the module docstring."""
    from gp_serve.cli import module_main

    return module_main(__name__, "gp-serve update", argv)


if __name__ == "__main__":
    sys.exit(main())
