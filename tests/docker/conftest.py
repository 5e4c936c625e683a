"""The Docker tier: the real image, built by docker/build.sh, run by a real Docker engine.

Containers run with ``--network host`` (the engine here has no bridge) and TorchServe's
listeners moved to free loopback ports through its TS_* environment overrides, so nothing
else on the machine (another TorchServe on 8080, say) is disturbed. Every container runs
with a read-only root filesystem and a tmpfs on each path TorchServe writes: the paths the
KServe ServingRuntime mounts its emptyDirs on (`writable_paths`), so the two cannot drift.
Token authorization is on in the image: a container's keys are read with ``docker exec``
from ``key_file.json`` in its working directory (where the HEALTHCHECK reads them too).
Under CI=true an engine that cannot be started fails the tier; elsewhere it skips it with
the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import torch

from gp_serve.handler import gp_artifact
from gp_serve.serving.local_server import free_ports

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("GP_SERVE_TEST_IMAGE", "gp-serve:latest")
HOME = "/home/model-server"
# The image's WORKDIR: TorchServe's working directory (key_file.json, logs/, tmp/).
WORKDIR = f"{HOME}/work"
RUNTIME = ROOT / "deploy" / "kserve" / "servingruntime.yaml"
HEALTH_TIMEOUT_S = 240
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the docker client; on failure the message carries its output."""
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def runtime_container() -> dict:
    """The kserve-container of deploy/kserve/servingruntime.yaml."""
    import yaml  # (PyYAML: in the pinned .venv, which runs this tier)

    return yaml.safe_load(RUNTIME.read_text())["spec"]["containers"][0]


def writable_paths() -> list[str]:
    """Where the ServingRuntime mounts emptyDirs: every path TorchServe writes (the Dockerfile
    says what goes where), the rest of its filesystem being read-only."""
    import yaml

    spec = yaml.safe_load(RUNTIME.read_text())["spec"]
    empty_dirs = {volume["name"] for volume in spec.get("volumes", []) if "emptyDir" in volume}
    return [
        mount["mountPath"]
        for mount in spec["containers"][0].get("volumeMounts", [])
        if mount["name"] in empty_dirs
    ]


def read_only_args(uid: int = 1000, gid: int = 1000) -> list[str]:
    """``docker run`` options for a read-only root filesystem with a tmpfs on each of
    `writable_paths`, like the pod's emptyDirs: owned by the container's user (a tmpfs is
    root's otherwise) and allowing exec (Docker's tmpfs default is noexec)."""
    args = ["--read-only"]
    for path in writable_paths():
        args += ["--tmpfs", f"{path}:exec,uid={uid},gid={gid}"]
    return args


class Container:
    """One ``docker run -d --network host`` of the image, on its own loopback ports, with a
    read-only root filesystem (`read_only_args`) unless ``read_only=False``."""

    def __init__(
        self, image: str, *run_args: str, command: tuple[str, ...] = (), read_only: bool = True
    ) -> None:
        """
        Args:
            image: The image.
            run_args: ``docker run`` options (before the image).
            command: Arguments after the image (to its ENTRYPOINT).
            read_only: Run with `read_only_args` (for the image's user, uid 1000).
        """
        ports = free_ports(5)
        self.inference, self.management, self.metrics = ports[:3]
        self.name = f"gp-serve-test-{uuid.uuid4().hex[:10]}"
        self.url = f"http://127.0.0.1:{self.inference}"
        self.management_url = f"http://127.0.0.1:{self.management}"
        env = {
            "TS_INFERENCE_ADDRESS": self.url,
            "TS_MANAGEMENT_ADDRESS": self.management_url,
            "TS_METRICS_ADDRESS": f"http://127.0.0.1:{self.metrics}",
            "TS_GRPC_INFERENCE_PORT": str(ports[3]),
            "TS_GRPC_MANAGEMENT_PORT": str(ports[4]),
        }
        env_args = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
        fs_args = read_only_args() if read_only else []
        docker(
            "run",
            "-d",
            "--network",
            "host",
            "--name",
            self.name,
            *env_args,
            *fs_args,
            *run_args,
            image,
            *command,
        )
        self.started = time.monotonic()
        self._keys: dict | None = None

    def key(self, api: str) -> str:
        """TorchServe's key for ``api`` (``inference``, ``management``): ``docker exec`` reads
        key_file.json in the container's working directory, as the HEALTHCHECK does."""
        if self._keys is None:
            self._keys = json.loads(docker("exec", self.name, "cat", "key_file.json").stdout)
        return self._keys[api]["key"]

    def headers(self, api: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key(api)}"}

    def state(self) -> dict:
        return json.loads(docker("inspect", "-f", "{{json .State}}", self.name).stdout)

    def logs(self) -> str:
        result = docker("logs", "--tail", "80", self.name, check=False)
        return result.stdout + result.stderr

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT_S) -> float:
        """Seconds from ``docker run`` until Docker reports the container healthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            status = state.get("Health", {}).get("Status")
            if status == "healthy":
                return time.monotonic() - self.started
            if not state["Running"] or status == "unhealthy":
                break
            time.sleep(0.5)
        raise AssertionError(
            f"{self.name} not healthy: {json.dumps(self.state(), indent=1)}\n--- logs ---\n"
            f"{self.logs()}"
        )

    def stop(self) -> float:
        """``docker stop`` (SIGTERM, then SIGKILL after 10 s); the seconds it took."""
        started = time.monotonic()
        docker("stop", "--time", "10", self.name, timeout=60)
        return time.monotonic() - started

    def remove(self) -> None:
        docker("rm", "-f", "-v", self.name, check=False)


@contextlib.contextmanager
def healthy_container(image: str, label: str, *run_args: str) -> Iterator[Container]:
    """A `Container` of ``image`` once Docker reports it healthy; removed afterwards."""
    container = Container(image, *run_args)
    try:
        print(f"[docker] {label} healthy after {container.wait_healthy():.1f}s")
        yield container
    finally:
        container.remove()


@pytest.fixture(scope="session")
def engine() -> None:
    """A Docker engine (docker/engine.sh installs and starts one if needed)."""
    result = subprocess.run(
        [str(ROOT / "docker" / "engine.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        message = f"no Docker engine: docker/engine.sh -> {result.returncode}\n{result.stderr}"
        if IN_CI:
            pytest.fail(message + "\n(CI=true: the Docker tier must run)", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def image(engine: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image, built exactly as `make docker-image` builds it."""
    log = tmp_path_factory.mktemp("docker-build") / "build.log"
    started = time.monotonic()
    with open(log, "w") as out:
        result = subprocess.run(
            [str(ROOT / "docker" / "build.sh")],
            env={**os.environ, "IMAGE": IMAGE},
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1800,
            check=False,
        )
    text = log.read_text()
    assert result.returncode == 0, f"docker/build.sh failed:\n{text[-6000:]}"
    print(f"[docker] build: {time.monotonic() - started:.1f}s")
    return IMAGE


@pytest.fixture(scope="session")
def baked_archive(image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's own ``gp.mar``, copied out."""
    out = tmp_path_factory.mktemp("baked")
    cid = docker("create", "--network", "none", image).stdout.strip()
    try:
        docker("cp", f"{cid}:{HOME}/model-store/gp.mar", str(out / "gp.mar"))
    finally:
        docker("rm", "-f", cid, check=False)
    return out / "gp.mar"


@pytest.fixture(scope="session")
def baked_model(baked_archive: Path) -> dict:
    """The model baked into the image: metadata and the TorchScript module."""
    out = baked_archive.parent
    with zipfile.ZipFile(baked_archive) as mar:
        mar.extract(gp_artifact.POSTERIOR_FILE, out)
        metadata = gp_artifact.parse_metadata(mar.read(gp_artifact.METADATA_FILE))
    module = torch.jit.load(str(out / gp_artifact.POSTERIOR_FILE))
    return {"metadata": metadata, "module": module}


def predict(container: Container, model: str = "gp", **kwargs) -> requests.Response:
    """POST /predictions/<model> to ``container`` with its inference key."""
    headers = {**container.headers("inference"), **kwargs.pop("headers", {})}
    return requests.post(
        f"{container.url}/predictions/{model}", timeout=60, headers=headers, **kwargs
    )


def assert_close(served: list, expected: torch.Tensor, rtol: float = 1e-9) -> None:
    got = torch.tensor(served, dtype=torch.float64)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    scale = expected.abs().clamp_min(1e-12)
    worst = ((got - expected).abs() / scale).max().item()
    assert worst <= rtol, f"served differs from the in-process module by {worst:.3g} (relative)"
