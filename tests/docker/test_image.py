"""The default image: built as `make docker-image` builds it, run on the host network with a
read-only root filesystem (tests/docker/conftest.py) and token authorization on.

One container for the module; the last test stops it and times `docker stop`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess

import pytest
import requests
import torch

from gp_serve.serving.properties import (
    DEFAULT_CONFIG,
    allowed_store_urls,
    parse_properties,
    port,
    read_properties,
)
from tests.docker.conftest import (
    HOME,
    WORKDIR,
    Container,
    assert_close,
    docker,
    healthy_container,
    predict,
    writable_paths,
)

pytestmark = pytest.mark.docker

POINTS = [[0.1, 0.2], [0.5, 0.5], [0.93, 0.07]]


@pytest.fixture(scope="module")
def container(image: str):
    with healthy_container(image, "default image") as c:
        yield c


def test_image_is_under_2_gb(image: str) -> None:
    size = int(docker("image", "inspect", "-f", "{{.Size}}", image).stdout)
    print(f"[docker] image size: {size / 1e9:.2f} GB")
    assert size < 2e9


def test_image_metadata(image: str) -> None:
    config = json.loads(docker("image", "inspect", "-f", "{{json .Config}}", image).stdout)
    assert config["User"] == "1000:1000"
    ours = read_properties(DEFAULT_CONFIG)
    ports = {f"{port(ours, api)}/tcp" for api in ("inference", "management", "metrics")}
    assert set(config["ExposedPorts"]) == ports
    assert config["Entrypoint"][0] == "/usr/bin/tini"
    assert config["Healthcheck"]["Test"][-2:] == ["-m", "gp_serve.serving.healthcheck"]
    # TorchServe's working directory (key_file.json; the HEALTHCHECK runs there too) and its
    # tmp and log folders are inside one of the paths mounted writable (the pod's emptyDirs).
    assert config["WorkingDir"] == WORKDIR and WORKDIR in writable_paths()
    env = dict(item.split("=", 1) for item in config["Env"])
    assert [env[key] for key in ("TEMP", "LOG_LOCATION", "METRICS_LOCATION")] == [
        f"{WORKDIR}/tmp",
        f"{WORKDIR}/logs",
        f"{WORKDIR}/logs",
    ]


def test_container_config_exposes_only_inference(image: str) -> None:
    """Inside the container inference binds every interface; management and metrics only
    the container's loopback (not reachable through -p)."""
    text = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "cat", image,
        f"{HOME}/config.properties",
    ).stdout  # fmt: skip
    props = parse_properties(text)
    ours = read_properties(DEFAULT_CONFIG)  # same ports, other interfaces
    assert props["inference_address"] == f"http://0.0.0.0:{port(ours, 'inference')}"
    assert props["management_address"] == f"http://127.0.0.1:{port(ours, 'management')}"
    assert props["metrics_address"] == f"http://127.0.0.1:{port(ours, 'metrics')}"
    assert props["model_store"] == f"{HOME}/model-store"
    assert props["enable_envvars_config"] == "true"
    # Registration only of .mar files directly in the store; token authorization as outside.
    assert (
        props["allowed_urls"]
        == allowed_store_urls(f"{HOME}/model-store")
        == (r"file:///home/model\\-server/model\\-store/[^/]+\\.mar")
    )
    assert props["disable_token_authorization"] == ours["disable_token_authorization"] == "false"


def test_healthcheck_ran_a_prediction(container: Container) -> None:
    health = container.state()["Health"]
    assert health["Status"] == "healthy"
    assert "gp answered a prediction" in health["Log"][-1]["Output"]


def test_json_prediction_matches_baked_module(container: Container, baked_model: dict) -> None:
    response = predict(container, json={"inputs": POINTS, "covariance": "diag"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "gp"
    assert body["outputs"] == baked_model["metadata"].output_names == ["branin", "currin"]
    mean, var = baked_model["module"].mean_var(torch.tensor(POINTS, dtype=torch.float64))
    assert_close(body["mean"], mean)
    assert_close(body["variance"], var)


def test_full_covariance(container: Container, baked_model: dict) -> None:
    response = predict(container, json={"inputs": POINTS[:2]})
    assert response.status_code == 200, response.text
    _, cov = baked_model["module"](torch.tensor(POINTS[:2], dtype=torch.float64))
    assert_close(response.json()["covariance"], cov)


def test_csv_batch_scoring(container: Container, baked_model: dict, tmp_path) -> None:
    points_csv = tmp_path / "points.csv"
    points_csv.write_text("x1,x2\n" + "".join(f"{a!r},{b!r}\n" for a, b in POINTS))
    response = predict(
        container, data=points_csv.read_bytes(), headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["mean_branin", "std_branin", "mean_currin", "std_currin"]
    assert len(rows) == 1 + len(POINTS)
    mean, var = baked_model["module"].mean_var(torch.tensor(POINTS, dtype=torch.float64))
    got = torch.tensor([[float(v) for v in row] for row in rows[1:]], dtype=torch.float64)
    assert_close(got[:, [0, 2]].tolist(), mean)
    assert_close(got[:, [1, 3]].tolist(), var.sqrt())


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        (
            '{"inputs": [[0.1]]}',
            "application/json",
            "inputs[0]: expected 2 numbers (inputs ['x1', 'x2']), got 1",
        ),
        (
            '{"inputs": [[0.1, 0.2]',
            "application/json",
            "malformed JSON: Expecting ',' delimiter at line 1 column 23; expected an object like "
            '{"inputs": [[...], ...]} or a list of points',
        ),
        (
            '{"inputs": [["a", 0.2]]}',
            "application/json",
            'inputs[0][0] (x1): expected a finite number, got a string ("a")',
        ),
        (
            "x1,x2\n0.1,oops\n",
            "text/csv",
            "CSV line 2, column x2: expected a finite number, got 'oops'",
        ),
    ],
    ids=["arity", "malformed", "string", "csv"],
)
def test_bad_input_is_400(container: Container, body: str, content_type: str, error: str) -> None:
    response = predict(container, data=body.encode(), headers={"Content-Type": content_type})
    assert response.status_code == 400, response.text
    assert response.json() == {"error": error, "code": 400}


def test_still_answers_after_bad_inputs(container: Container) -> None:
    response = predict(container, json={"inputs": [POINTS[0]], "covariance": "none"})
    assert response.status_code == 200, response.text
    assert all(math.isfinite(v) for v in response.json()["mean"][0])


def test_management_answers_on_loopback(container: Container) -> None:
    response = requests.get(
        f"{container.management_url}/models/gp?customized=true",
        timeout=30,
        headers=container.headers("management"),
    )
    assert response.status_code == 200, response.text
    meta = response.json()[0]["customizedMetadata"]
    meta = json.loads(meta) if isinstance(meta, str) else meta
    assert meta["input_names"] == ["x1", "x2"]


def test_server_processes_are_not_root(container: Container) -> None:
    assert docker("exec", container.name, "id", "-u").stdout.strip() == "1000"
    lines = docker("top", container.name, "-o", "uid,pid,comm").stdout.splitlines()[1:]
    processes = [line.split() for line in lines]
    commands = [p[2] for p in processes]
    assert "java" in commands and commands.count("python") >= 1, lines
    assert all(p[0] == "1000" for p in processes), lines


TOKEN_FAILED = "Token Authorization failed"


def test_every_api_but_metrics_needs_its_key(container: Container) -> None:
    """Token authorization is on in the image: no key, or the other API's key, is a 400."""
    inference, management = container.headers("inference"), container.headers("management")
    calls = {
        "ping": f"{container.url}/ping",
        "v2 live": f"{container.url}/v2/health/live",
        "models": f"{container.management_url}/models",
    }
    for name, url in calls.items():
        refused = requests.get(url, timeout=30)
        assert refused.status_code == 400 and TOKEN_FAILED in refused.json()["message"], name
    assert (
        predict(
            container, json={"inputs": [POINTS[0]]}, headers={"Authorization": "Bearer wrong"}
        ).status_code
        == 400
    )
    wrong_key = requests.get(calls["models"], timeout=30, headers=inference)
    assert wrong_key.status_code == 400, wrong_key.text
    assert requests.get(calls["ping"], timeout=30, headers=inference).status_code == 200
    assert requests.get(calls["models"], timeout=30, headers=management).status_code == 200
    metrics = requests.get(f"http://127.0.0.1:{container.metrics}/metrics", timeout=30)
    assert metrics.status_code == 200 and "ts_inference_requests_total" in metrics.text


@pytest.mark.parametrize(
    "url",
    [
        "file:///tmp/x.mar",
        f"file://{HOME}/model-store/sub/x.mar",
        f"file:///tmp/file://{HOME}/model-store/x.mar",
        f"file://{HOME}/model-store/x.mar.tgz",
    ],
    ids=["elsewhere", "subfolder", "prefixed", "suffixed"],
)
def test_registration_only_from_the_store(container: Container, url: str) -> None:
    """allowed_urls admits only the .mar files directly in the model store (TorchServe matches
    the whole URL; it refuses a relative path, ``..``, itself)."""
    response = requests.post(
        f"{container.management_url}/models",
        params={"url": url},
        timeout=30,
        headers=container.headers("management"),
    )
    assert response.status_code == 404, response.text
    assert response.json()["message"] == f"Given URL {url} does not match any allowed URL(s)"


def test_runs_read_only(container: Container) -> None:
    """The root filesystem is read-only; TorchServe writes only to the tmpfs mounts: its key
    file (0600), logs and tmp in its working directory, and its workers' Unix sockets there
    (not TCP ports on the host's loopback, netty's fallback when the mount is noexec)."""
    host = json.loads(docker("inspect", "-f", "{{json .HostConfig}}", container.name).stdout)
    assert host["ReadonlyRootfs"] is True
    assert sorted(host["Tmpfs"]) == sorted(writable_paths())
    denied = docker("exec", container.name, "touch", f"{HOME}/probe", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied
    for path in writable_paths():
        docker("exec", container.name, "sh", "-c", f"touch {path}/probe && rm {path}/probe")
    written = docker(
        "exec",
        container.name,
        "stat",
        "-c",
        "%a %u %n",
        "key_file.json",
        "logs/ts_log.log",
        "tmp/models",
    ).stdout.splitlines()
    assert written == [
        "600 1000 key_file.json",
        "644 1000 logs/ts_log.log",
        "755 1000 tmp/models",
    ], written
    commands = docker(
        "exec",
        container.name,
        "sh",
        "-c",
        "for p in /proc/[0-9]*; do tr '\\0' ' ' <$p/cmdline; echo; done",
    ).stdout
    workers = [line for line in commands.splitlines() if "model_service_worker.py" in line]
    assert len(workers) == 2, commands
    assert all(f"--sock-type unix --sock-name {WORKDIR}/tmp/.ts.sock." in w for w in workers), (
        workers
    )


def test_entrypoint_refuses_a_read_only_workdir(image: str) -> None:
    """Read-only without the tmpfs mounts: the entrypoint says what to mount, at once."""
    result = docker("run", "--rm", "--network", "none", "--read-only", image, check=False)
    assert result.returncode == 1, result
    assert f"the working directory {WORKDIR} is not writable" in result.stderr, result.stderr


def test_entrypoint_refuses_a_noexec_tmp(image: str) -> None:
    """Docker's tmpfs default (noexec) would send the workers to TCP: refused."""
    result = docker(
        "run",
        "--rm",
        "--network",
        "none",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--tmpfs",
        f"{WORKDIR}:uid=1000,gid=1000",
        image,
        check=False,
    )
    assert result.returncode == 1, result
    assert f"{WORKDIR}/tmp (TEMP, the JVM's tmp dir) is on a noexec mount" in result.stderr, (
        result.stderr
    )


def test_healthcheck_fails_when_no_worker_can_answer(container: Container) -> None:
    """With every worker scaled away /ping still says Healthy; the image's check does not."""

    command = json.loads(
        docker("inspect", "-f", "{{json .Config.Healthcheck.Test}}", container.name).stdout
    )[1:]  # ["CMD", ...]: the image's own healthcheck command

    def healthcheck() -> subprocess.CompletedProcess:
        return docker("exec", container.name, *command, check=False)

    scale = f"{container.management_url}/models/gp?synchronous=true"
    key = container.headers("management")
    requests.put(f"{scale}&min_worker=0&max_worker=0", timeout=60, headers=key)  # 500, yet scales
    try:
        ping = requests.get(
            f"{container.url}/ping", timeout=30, headers=container.headers("inference")
        )
        assert ping.status_code == 200 and ping.json()["status"] == "Healthy"
        down = healthcheck()
        assert down.returncode == 1, down.stdout
        assert down.stdout.startswith("unhealthy:") and "no worker" in down.stdout
    finally:
        up = requests.put(f"{scale}&min_worker=2&max_worker=2", timeout=120, headers=key)
    assert up.status_code == 200, up.text
    again = healthcheck()
    assert again.returncode == 0, again.stdout
    assert again.stdout.strip() == "healthy: gp answered a prediction"


def test_docker_stop_is_quick_and_clean(container: Container) -> None:
    """Last: SIGTERM reaches the JVM (not a launcher that ignores it) and it exits < 10 s."""
    seconds = container.stop()
    state = container.state()
    print(f"[docker] docker stop: {seconds:.2f}s, exit code {state['ExitCode']}")
    assert seconds < 10
    assert not state["Running"]
    # 137 would be SIGKILL after the grace period; the JVM exits 143 on SIGTERM.
    assert state["ExitCode"] in (0, 143), state
    assert not state["OOMKilled"]
    # TorchServe's shutdown hook ran: the models were unregistered, the workers scaled down.
    logs = container.logs()
    assert "Unregistering model gp" in logs, logs
