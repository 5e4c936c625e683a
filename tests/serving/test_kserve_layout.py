"""The KServe manifests and the pod's TorchServe config, checked without Docker or a cluster.

tests/docker/test_kserve.py runs the image as the ServingRuntime says; this checks what the
manifest says and that it agrees with the image (Dockerfile) and the layout's config.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gp_serve.serving.kserve_layout import MOUNT, pod_config, write_layout
from gp_serve.serving.properties import allowed_store_urls, read_properties

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "deploy" / "kserve" / "servingruntime.yaml"
DOCKERFILE = ROOT / "Dockerfile"
STORE = f"{MOUNT}/model-store"


@pytest.fixture(scope="module")
def runtime() -> dict:
    return yaml.safe_load(RUNTIME.read_text())["spec"]


def test_runtime_security_context(runtime: dict) -> None:
    security = runtime["containers"][0]["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"]) == (1000, 1000)
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}


def _runtime_stage() -> str:
    return DOCKERFILE.read_text().split("AS runtime", 1)[1]


def test_emptydirs_cover_what_torchserve_writes(runtime: dict) -> None:
    """Every mount is an emptyDir; the image's working directory (key_file.json) and its
    TorchServe tmp and log folders, and /tmp, are each inside one."""
    volumes = {volume["name"]: volume for volume in runtime["volumes"]}
    mounts = runtime["containers"][0]["volumeMounts"]
    assert all(
        volumes[mount["name"]] == {"name": mount["name"], "emptyDir": {}} for mount in mounts
    )
    paths = [mount["mountPath"] for mount in mounts]
    stage = _runtime_stage()
    workdir = re.findall(r"^WORKDIR\s+(\S+)", stage, re.MULTILINE)[-1]
    env = dict(re.findall(r"\b(TEMP|LOG_LOCATION|METRICS_LOCATION|XDG_CACHE_HOME)=(\S+)", stage))
    assert sorted(env) == ["LOG_LOCATION", "METRICS_LOCATION", "TEMP", "XDG_CACHE_HOME"]
    assert sorted(paths) == ["/home/model-server/work", "/tmp"] and workdir in paths
    for written in [workdir, *env.values()]:
        assert any(written == path or written.startswith(f"{path}/") for path in paths), written


def test_pod_config_allowed_urls_is_anchored_to_the_store() -> None:
    value = pod_config()["allowed_urls"]
    assert value == allowed_store_urls(STORE) == r"file:///mnt/models/model\\-store/[^/]+\\.mar"
    pattern = re.compile(value.replace("\\\\", "\\"))  # as Java's .properties loader reads it
    assert pattern.fullmatch(f"file://{STORE}/gp.mar")
    for url in (
        f"file://{STORE}/sub/gp.mar",
        "file:///tmp/gp.mar",
        f"file://{STORE}/gp.mar.tgz",
        f"file:///tmp/file://{STORE}/gp.mar",
        f"https://example.com{STORE}/gp.mar",
    ):
        assert not pattern.fullmatch(url), url


def test_pod_config_tokens_off_management_on_loopback(runtime: dict) -> None:
    config = pod_config()
    assert config["disable_token_authorization"] == "true"
    assert config["enable_model_api"] == "false"
    assert config["management_address"] == "http://127.0.0.1:8085"
    assert config["grpc_management_address"] == config["grpc_inference_address"] == "127.0.0.1"
    assert config["inference_address"] == "http://0.0.0.0:8080"
    # Metrics on every interface, for Prometheus at the pod IP (the runtime's annotation).
    annotations = yaml.safe_load(RUNTIME.read_text())["metadata"]["annotations"]
    assert config["metrics_address"] == f"http://0.0.0.0:{annotations['prometheus.kserve.io/port']}"
    assert [port["containerPort"] for port in runtime["containers"][0]["ports"]] == [8080]


def test_write_layout_writes_the_pod_config(tmp_path: Path) -> None:
    mar = tmp_path / "gp.mar"
    mar.write_bytes(b"not a real archive")
    out = write_layout(mar, tmp_path / "layout")
    assert read_properties(out / "config" / "config.properties") == pod_config()
    assert (out / "model-store" / "gp.mar").read_bytes() == mar.read_bytes()
