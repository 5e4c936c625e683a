"""Several models from one store: ``gp-serve start`` serves every ``<name>.mar`` under its name,
and ``gp-serve describe --name`` and ``gp-serve score --name`` reach each of them.

The server here is this module's own (free loopback ports, token authorization on as in the
repository's config, its store and logs under pytest's temp dir), started and stopped with the
command itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import torch

from gp_serve.export import export_model
from gp_serve.handler import gp_artifact, gp_formats
from gp_serve.serving import auth
from gp_serve.serving.archive import build_archive, write_model_config
from gp_serve.serving.local_server import (
    CONFIG_FILE,
    LocalTorchServe,
    StoreError,
    store_models,
    write_config,
)
from gp_serve.serving.properties import DEFAULT_CONFIG
from tests.export.conftest import make_model
from tests.serving.conftest import Exported

pytestmark = pytest.mark.server

GP_SERVE = Path(sys.executable).with_name("gp-serve")
TOLERANCE = 1e-8


def gp_serve(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(GP_SERVE), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass(frozen=True)
class Served:
    """The module's TorchServe, what ``gp-serve start`` printed, and each model's artifact."""

    server: LocalTorchServe
    started: subprocess.CompletedProcess
    artifacts: dict[str, Path]


@pytest.fixture(scope="module")
def beta(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-input, one-output model: not ``exported``'s shape."""
    directory = tmp_path_factory.mktemp("beta") / "model"
    export_model(make_model(20, 3, 1, seed=9), directory)
    return directory


@pytest.fixture(scope="module")
def served(exported: Exported, beta: Path, tmp_path_factory: pytest.TempPathFactory):
    """``alpha`` (``exported``) and ``beta`` archived into one store, with a versioned
    ``alpha.2.0.mar`` beside them (what ``gp-serve update`` writes: not a model of its own),
    served by ``gp-serve start``; ``gp-serve stop`` on exit."""
    root = tmp_path_factory.mktemp("multi")
    store = root / "model_store"
    one_worker = write_model_config(root / "model-config.yaml", minWorkers=1, maxWorkers=1)
    artifacts = {"alpha": exported.directory, "beta": beta}
    for name, directory in artifacts.items():
        build_archive(directory, store, name, one_worker)
    shutil.copyfile(store / "alpha.mar", store / "alpha.2.0.mar")
    config = write_config(DEFAULT_CONFIG, root / "config.properties", str(store))
    workdir = root / "logs"
    where = ["--config", str(config), "--model-store", str(store), "--workdir", str(workdir)]
    started = gp_serve("start", *where)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield Served(LocalTorchServe(config, store, workdir), started, artifacts)
    finally:
        stopped = gp_serve("stop", *where)
        assert stopped.stdout == "TorchServe has stopped.\n", stopped.stdout + stopped.stderr


def test_start_serves_every_archive_under_its_name(served: Served) -> None:
    server = served.server
    out = served.started.stdout
    assert out.startswith("TorchServe is serving 'alpha', 'beta' (pid "), out
    for line in (
        "# alpha: inputs x1, x2; outputs branin, currin",
        "# beta: inputs x1, x2, x3; outputs y1",
        f"{GP_SERVE.parent.name}/gp-serve describe --name beta --workdir",
    ):
        assert line in out, out
    assert f"curl -s {server.inference_url}/predictions/beta -H" in out
    listed = requests.get(
        f"{server.management_url}/models", headers=server.headers("management"), timeout=30
    )
    assert listed.status_code == 200, listed.text
    assert sorted(m["modelName"] for m in listed.json()["models"]) == ["alpha", "beta"]


@pytest.mark.parametrize("name", ["alpha", "beta"])
def test_each_model_answers_by_name(served: Served, name: str) -> None:
    server, directory = served.server, served.artifacts[name]
    metadata = gp_artifact.load_metadata(directory)
    d = len(metadata.input_names)
    X = torch.tensor(
        [metadata.centre(), [lo for lo, _ in metadata.input_bounds]], dtype=torch.float64
    )
    response = requests.post(
        server.prediction_url(name),
        json={"inputs": X.tolist(), "covariance": "diag"},
        headers=server.headers(),
        timeout=60,
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model"] == name and answer["outputs"] == metadata.output_names
    mean, variance = gp_formats.load(directory, gp_artifact.DEFAULT_FORMAT, d).mean_var(X)
    for key, expected in (("mean", mean), ("variance", variance)):
        got = torch.tensor(answer[key], dtype=torch.float64)
        assert got.shape == expected.shape
        assert ((got - expected).abs().max() / expected.abs().max()).item() <= TOLERANCE


def test_describe_a_running_model_by_name(served: Served) -> None:
    workdir = served.server.workdir
    run = gp_serve("describe", "--name", "beta", "--workdir", str(workdir))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == (f"model beta version 1.0 at {served.server.management_url}/models/beta")
    assert lines[1].startswith("workers: 1 (READY), min 1, max 1; batch size ")
    assert "inputs (3), with their training bounds:" in lines
    assert "outputs (1): y1" in lines
    serving = lines[lines.index("serving:") + 1 :]
    assert any(line.startswith("  max_full_covariance_points: ") for line in serving), lines
    assert "  format: torchscript" in serving

    as_json = gp_serve(
        "describe",
        "--name",
        "alpha",
        "--workdir",
        str(workdir),
        "--config",
        str(workdir / CONFIG_FILE),
        "--json",
    )
    assert as_json.returncode == 0, as_json.stderr
    entry = json.loads(as_json.stdout)[0]
    assert entry["modelName"] == "alpha"
    described = entry["customizedMetadata"]
    assert described.pop("serving")["format"] == "torchscript"
    assert described == gp_artifact.load_metadata(served.artifacts["alpha"]).document


def test_describe_a_model_that_is_not_served(served: Served) -> None:
    run = gp_serve("describe", "--name", "alpha.2.0", "--workdir", str(served.server.workdir))
    assert run.returncode == 1
    assert run.stderr.startswith(
        f"error: GET {served.server.management_url}/models/alpha.2.0: HTTP 404: "
    ), run.stderr


def test_token_and_score_by_name(served: Served, tmp_path: Path) -> None:
    workdir = served.server.workdir
    token = gp_serve("token", "--workdir", str(workdir))
    assert token.returncode == 0, token.stderr
    assert token.stdout == auth.read_key(workdir, "inference") + "\n"
    source, target = tmp_path / "points.csv", tmp_path / "scores.csv"
    source.write_text("x1,x2,x3\n0.1,0.2,0.3\n0.4,0.5,0.6\n")
    run = gp_serve(
        "score",
        str(source),
        "-o",
        str(target),
        "--quiet",
        "--token",
        token.stdout.strip(),
        "--url",
        served.server.prediction_url("beta"),
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == f"scored 2 rows into {target}\n"
    assert target.read_text().splitlines()[0] == "mean_y1,std_y1"


def test_store_models_chooses_archives(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    with pytest.raises(
        StoreError,
        match=r"expected model archives \(<name>\.mar\), got none; "
        r"build one with `gp-serve archive`",
    ):
        store_models(store)
    for name in ("b.mar", "a.mar", "a.2.0.mar", "notes.txt"):
        (store / name).write_bytes(b"")
    assert store_models(store) == {"a": "a.mar", "b": "b.mar"}
    assert store_models(store, "b") == {"b": "b.mar"}
    assert store_models(store, "b, a.2.0") == {"b": "b.mar", "a.2.0": "a.2.0.mar"}
    assert store_models(store, "gp=a.mar x=b.mar") == {"gp": "a.mar", "x": "b.mar"}
    with pytest.raises(StoreError) as error:
        store_models(store, "a,c")
    assert str(error.value) == (
        f"model 'c': expected {store / 'c.mar'}, got no such file "
        "(archives there: ['a.2.0.mar', 'a.mar', 'b.mar'])"
    )


def test_start_refuses_a_store_without_the_models_asked_for(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    config = write_config(DEFAULT_CONFIG, tmp_path / "config.properties", str(store))
    where = [
        "--config",
        str(config),
        "--model-store",
        str(store),
        "--workdir",
        str(tmp_path / "logs"),
    ]
    empty = gp_serve("start", *where)
    assert empty.returncode == 2
    assert empty.stderr.startswith(f"error: {store.resolve()}: expected model archives")
    (store / "a.mar").write_bytes(b"")
    missing = gp_serve("serve", *where, "--models", "a,b")
    assert (missing.returncode, missing.stdout) == (2, "")
    assert missing.stderr == (
        f"error: model 'b': expected {store.resolve() / 'b.mar'}, got no "
        "such file (archives there: ['a.mar'])\n"
    )
    assert not (tmp_path / "logs" / "tmp").exists()  # (nothing was started)
