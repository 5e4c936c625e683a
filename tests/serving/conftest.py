"""Serving fixtures: an exported model, its archives and a real TorchServe on loopback.

The model is fitted here with BoTorch and exported with the ``export`` API (tests
only; the handler never imports it). TorchServe runs on free 127.0.0.1 ports with
a ``config.properties`` derived from the repository's, its model store, logs, pid
file and sockets all under ``tmp_path_factory``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import Normalize
from botorch.test_functions.multi_objective import BraninCurrin
from gpytorch.mlls import ExactMarginalLogLikelihood

from export import export_model
from serving.archive import MODEL_CONFIG, build_archive
from serving.local_server import LocalTorchServe, write_config
from serving.properties import DEFAULT_CONFIG

BATCH_MODEL = "gpbatch"
BATCH_SIZE = 4


@dataclass(frozen=True)
class Exported:
    """A fitted model and its exported artifact."""

    model: SingleTaskGP
    directory: Path
    input_names: list[str]
    output_names: list[str]


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """BraninCurrin (negated, 40 seeded points) fitted and exported to a tmp dir."""
    torch.manual_seed(7)
    problem = BraninCurrin(negate=True).to(torch.float64)
    train_X = torch.rand(40, 2, dtype=torch.float64)
    model = SingleTaskGP(train_X, problem(train_X), input_transform=Normalize(d=2))
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    model.eval()
    directory = tmp_path_factory.mktemp("model")
    export_model(model, directory, input_names=["x1", "x2"], output_names=["branin", "currin"])
    return Exported(model, directory, ["x1", "x2"], ["branin", "currin"])


@pytest.fixture(scope="session")
def server(
    exported: Exported, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
):
    """TorchServe serving ``gp`` (the repository's model-config.yaml) and ``gpbatch``.

    ``gpbatch`` is the same model with one worker, ``batchSize`` 4 and a long
    ``maxBatchDelay``, so concurrent requests are answered in one batch.
    """
    root = tmp_path_factory.mktemp("torchserve")
    store = root / "model_store"
    store.mkdir()
    build_archive(exported.directory, store)
    batch_config = yaml.safe_load(MODEL_CONFIG.read_text())
    batch_config.update(minWorkers=1, maxWorkers=1, batchSize=BATCH_SIZE, maxBatchDelay=2000)
    batch_config_path = root / "model-config-batch.yaml"
    batch_config_path.write_text(yaml.safe_dump(batch_config))
    build_archive(exported.directory, store, BATCH_MODEL, batch_config_path)

    config = write_config(DEFAULT_CONFIG, root / "config.properties", str(store))

    instance = LocalTorchServe(config, store, root / "logs", models=f"gp=gp.mar {BATCH_MODEL}={BATCH_MODEL}.mar")
    failed_before = request.session.testsfailed
    try:
        instance.start()
        instance.wait_ready()
        yield instance
    finally:
        instance.stop()
        if request.session.testsfailed > failed_before:
            capture = request.config.pluginmanager.getplugin("capturemanager")
            with capture.global_and_fixture_disabled():
                print("\nTorchServe logs (tests failed):\n" + instance.log_tail(80))
