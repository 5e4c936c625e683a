"""The image as gp-serve's KServe ServingRuntime runs it, on the layout `make kserve-layout` writes.

No Kubernetes here: the container gets what the runtime gives it (deploy/kserve/
servingruntime.yaml: its args, env, user and securityContext: a read-only root filesystem
with a tmpfs where the runtime mounts its emptyDirs, no capabilities, no privilege
escalation, the engine's default seccomp profile; the layout mounted read-only at
/mnt/models) and must pass the v1 and v2 contracts. Only the listeners differ: free loopback
ports through TorchServe's TS_* overrides (as in every Docker test), instead of the pod's 8080.
The manifest's own settings are checked without Docker in tests/serving/test_kserve_layout.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
import tritonclient.http as triton
import yaml

from gp_serve.serving.kserve_layout import MOUNT, write_layout
from gp_serve.serving.properties import allowed_store_urls, parse_properties
from tests.docker.conftest import (
    HOME,
    ROOT,
    RUNTIME,
    Container,
    assert_close,
    docker,
    read_only_args,
    runtime_container,
    writable_paths,
)

pytestmark = pytest.mark.docker

SERVICE = ROOT / "deploy" / "kserve" / "inferenceservice.yaml"


@pytest.fixture(scope="module")
def layout(baked_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = write_layout(baked_archive, tmp_path_factory.mktemp("kserve") / "layout")
    for path in [out, *out.rglob("*")]:  # readable by the container's uid 1000
        path.chmod(0o755 if path.is_dir() else 0o644)
    return out


def security_args(security: dict) -> list[str]:
    """``docker run`` options for the container's securityContext (the pod's emptyDirs as tmpfs
    mounts; RuntimeDefault is the engine's default seccomp profile, which Docker applies)."""
    args = ["--user", f"{security['runAsUser']}:{security['runAsGroup']}"]
    if security.get("readOnlyRootFilesystem"):
        args += read_only_args(security["runAsUser"], security["runAsGroup"])
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    args += [
        arg
        for cap in security.get("capabilities", {}).get("drop", [])
        for arg in ("--cap-drop", cap)
    ]
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}, security
    return args


@pytest.fixture(scope="module")
def container(image: str, layout: Path):
    spec = runtime_container()
    env = [arg for item in spec["env"] for arg in ("-e", f"{item['name']}={item['value']}")]
    c = Container(
        image,
        *security_args(spec["securityContext"]),
        "-v",
        f"{layout}:{MOUNT}:ro",
        *env,
        command=tuple(spec["args"]),
        read_only=False,
    )
    try:
        print(f"[docker] KServe-layout container healthy after {c.wait_healthy():.1f}s")
        yield c
    finally:
        c.remove()


def test_manifests_agree_with_the_layout() -> None:
    spec = runtime_container()
    assert spec["args"] == [
        f"--model-store={MOUNT}/model-store",
        f"--ts-config={MOUNT}/config/config.properties",
    ]
    assert [p["containerPort"] for p in spec["ports"]] == [8080]
    service = yaml.safe_load(SERVICE.read_text())["spec"]["predictor"]
    model = service["model"]
    assert (model["modelFormat"]["name"], model["protocolVersion"]) == ("pytorch", "v2")
    assert model["runtime"] == yaml.safe_load(RUNTIME.read_text())["metadata"]["name"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert model[probe]["httpGet"]["port"] == 8080


def test_layout_config_is_the_pod_config(layout: Path) -> None:
    config = (layout / "config" / "config.properties").read_text()
    assert "inference_address=http://0.0.0.0:8080\n" in config
    assert f"model_store={MOUNT}/model-store\n" in config and "load_models=all\n" in config
    assert "ts_open_inference_protocol=true\n" in config
    props = parse_properties(config)
    assert props["allowed_urls"] == allowed_store_urls(f"{MOUNT}/model-store")
    assert props["disable_token_authorization"] == "true"
    assert sorted(p.name for p in (layout / "model-store").iterdir()) == ["gp.mar"]


def test_runs_as_the_runtime_says(container: Container, image: str) -> None:
    """Read-only, with a writable tmpfs exactly where the runtime mounts its emptyDirs (among
    them the image's working directory), as uid 1000 with no capabilities, no new privileges
    and a seccomp filter."""
    host = json.loads(docker("inspect", "-f", "{{json .HostConfig}}", container.name).stdout)
    assert host["ReadonlyRootfs"] is True
    assert sorted(host["Tmpfs"]) == sorted(writable_paths())
    workdir = docker("image", "inspect", "-f", "{{.Config.WorkingDir}}", image).stdout.strip()
    assert workdir in writable_paths()
    denied = docker("exec", container.name, "touch", f"{HOME}/probe", check=False)
    assert "Read-only file system" in denied.stderr, denied
    status = dict(
        line.split(":\t", 1)
        for line in docker("exec", container.name, "cat", "/proc/1/status").stdout.splitlines()
        if ":\t" in line
    )
    assert (
        status["Uid"].split()[0],
        status["CapEff"],
        status["NoNewPrivs"],
        status["Seccomp"],
    ) == ("1000", "0000000000000000", "1", "2"), status


def test_pod_needs_no_key(container: Container) -> None:
    """The kubelet's httpGet probes and KServe's clients carry no key: token authorization is
    off in the pod (management is on the pod's loopback instead), and so is the model API."""
    for path in ("/ping", "/v2/health/live", "/v2/health/ready"):
        response = requests.get(f"{container.url}{path}", timeout=30)
        assert response.status_code == 200, (path, response.text)
    models = requests.get(f"{container.management_url}/models", timeout=30)
    assert models.status_code == 200, models.text
    assert docker("exec", container.name, "ls", "-A").stdout.split() == ["logs", "tmp"]  # no key
    register = requests.post(
        f"{container.management_url}/models",
        timeout=30,
        params={"url": f"file://{MOUNT}/model-store/gp.mar"},
    )
    assert register.status_code == 405, register.text


def test_v1_contract(container: Container, baked_model: dict) -> None:
    X = torch.tensor([[0.2, 0.4], [0.9, 0.1]], dtype=torch.float64)
    response = requests.post(
        f"{container.url}/v1/models/gp:predict",
        timeout=60,
        json={"instances": X.tolist(), "covariance": "diag"},
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    mean, variance = baked_model["module"].mean_var(X)
    assert_close(answer["mean"], mean)
    assert_close([p["variance"] for p in answer["predictions"]], variance)
    bad = requests.post(
        f"{container.url}/v1/models/gp:predict", timeout=60, json={"instances": [[0.2]]}
    )
    assert bad.status_code == 400
    assert bad.json()["error"] == "instances[0]: expected 2 numbers (inputs ['x1', 'x2']), got 1"


def test_v2_contract_with_tritonclient(container: Container, baked_model: dict) -> None:
    client = triton.InferenceServerClient(container.url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        X = np.array([[0.2, 0.4], [0.9, 0.1], [0.5, 0.5]])
        tensor = triton.InferInput("X", [3, 2], "FP64")
        tensor.set_data_from_numpy(X, binary_data=True)
        result = client.infer("gp", [tensor])
        mean, covariance = baked_model["module"](torch.from_numpy(X))
        assert np.array_equal(result.as_numpy("mean"), mean.numpy())
        assert np.array_equal(result.as_numpy("covariance"), covariance.numpy())
    finally:
        client.close()
