"""Serving fixtures: an exported model, its archives and a real TorchServe on loopback.

The model is fitted with BoTorch and exported here (tests only); TorchServe runs on free
127.0.0.1 ports with its config, store and logs under ``tmp_path_factory`` (docs/testing.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gp_serve.handler import gp_artifact
from gp_serve.serving.archive import MODEL_CONFIG, build_archive, write_model_config
from gp_serve.serving.local_server import LocalTorchServe, served
from tests.conftest import FORMAT_MODELS, archive_formats

if TYPE_CHECKING:  # (BoTorch is imported by the fixtures that fit: the codec tests need none)
    from botorch.models.model import Model

BATCH_MODEL = "gpbatch"
BATCH_SIZE = 4
# Served model name -> the export family fitted for it (besides the single-task "gp"); the
# SAAS model (NUTS in JAX/NumPyro: BoTorch's fully Bayesian extra, in .venv's lock) is fitted
# to the first output only.
FAMILY_MODELS = {
    "gplist": "list",
    "gpmultitask": "multitask",
    "gpkronecker": "kronecker",
    "gpsaas": "saas",
}


@dataclass(frozen=True)
class Exported:
    """A fitted model and its exported artifact."""

    model: Model
    directory: Path
    input_names: list[str]
    output_names: list[str]


def fit_branin_currin(directory: Path, seed: int = 7, points: int = 40) -> Exported:
    """BraninCurrin (negated, ``points`` seeded points) fitted as a SingleTaskGP and exported
    to ``directory`` (inputs ``x1, x2``, outputs ``branin, currin``)."""
    import torch
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.input import Normalize
    from botorch.test_functions.multi_objective import BraninCurrin
    from gpytorch.mlls import ExactMarginalLogLikelihood

    from gp_serve.export import export_model

    torch.manual_seed(seed)
    problem = BraninCurrin(negate=True).to(torch.float64)
    train_X = torch.rand(points, 2, dtype=torch.float64)
    model = SingleTaskGP(train_X, problem(train_X), input_transform=Normalize(d=2))
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    model.eval()
    export_model(model, directory, input_names=["x1", "x2"], output_names=["branin", "currin"])
    return Exported(model, directory, ["x1", "x2"], ["branin", "currin"])


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """BraninCurrin (negated, 40 seeded points) fitted and exported to a tmp dir."""
    return fit_branin_currin(tmp_path_factory.mktemp("model"))


@contextmanager
def own_server(
    artifact: Path, root: Path, model_config: Path = MODEL_CONFIG, **properties: str
) -> Iterator[LocalTorchServe]:
    """A TorchServe of a test module's own, on free loopback ports under ``root``, serving
    ``artifact`` as ``gp`` (with ``model_config``; ``properties`` override config keys);
    stopped on exit."""
    build_archive(artifact, root / "model_store", model_config=model_config)
    with served(root / "model_store", root, **properties) as server:
        yield server


@pytest.fixture(scope="session")
def family_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exported]:
    """The default data (BraninCurrin, 64 points), with each output missing at some rows
    for the families that allow it, fitted as each other family (`FAMILY_MODELS`) and
    exported."""
    from gp_serve.export import export_model
    from gp_serve.export.data import default_data, validate
    from gp_serve.export.fit import MISSING_ALLOWED, fit_model

    complete = default_data()
    Y = complete.Y.clone()
    Y[::5, 0] = float("nan")
    Y[2::7, 1] = float("nan")
    missing = validate(
        complete.X, Y, None, complete.input_names, complete.output_names, allow_missing=True
    )
    first = validate(
        complete.X, complete.Y[:, :1], None, complete.input_names, complete.output_names[:1]
    )
    exports = {}
    for name, family in FAMILY_MODELS.items():
        data = first if family == "saas" else missing if family in MISSING_ALLOWED else complete
        model = fit_model(data, family)
        directory = tmp_path_factory.mktemp(name)
        export_model(model, directory, input_names=data.input_names, output_names=data.output_names)
        exports[name] = Exported(model, directory, data.input_names, data.output_names)
    return exports


@pytest.fixture(scope="session")
def server(
    exported: Exported,
    family_exports: dict[str, Exported],
    portable_artifact,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
):
    """TorchServe serving ``gp`` (the repository's model-config.yaml), ``gpbatch``, one
    model per other family (`FAMILY_MODELS`) and the portable artifact in each compiled
    format (`FORMAT_MODELS`), one worker each.

    ``gpbatch`` is the same model with one worker, ``batchSize`` 4 and a long
    ``maxBatchDelay``, so concurrent requests are answered in one batch.
    """
    root = tmp_path_factory.mktemp("torchserve")
    store = root / "model_store"
    store.mkdir()
    build_archive(exported.directory, store)
    batch_config = write_model_config(
        root / "model-config-batch.yaml",
        minWorkers=1,
        maxWorkers=1,
        batchSize=BATCH_SIZE,
        maxBatchDelay=2000,
    )
    build_archive(exported.directory, store, BATCH_MODEL, batch_config)
    one_worker = write_model_config(
        root / "model-config-one-worker.yaml", minWorkers=1, maxWorkers=1
    )
    for name, family in family_exports.items():
        build_archive(family.directory, store, name, one_worker)
    archive_formats(portable_artifact.directory, store, root)
    models = ["gp", BATCH_MODEL, *family_exports, *FORMAT_MODELS]
    failed_before = request.session.testsfailed
    with served(store, root, models, ready=["gp", *family_exports, *FORMAT_MODELS]) as instance:
        try:
            yield instance
        finally:
            if request.session.testsfailed > failed_before:
                capture = request.config.pluginmanager.getplugin("capturemanager")
                with capture.global_and_fixture_disabled():
                    print("\nTorchServe logs (tests failed):\n" + instance.log_tail(80))


@pytest.fixture(scope="session")
def other_posterior(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A valid ``posterior.pt`` of another two-input, two-output model."""
    import torch

    from gp_serve.export.families import trace_posterior
    from gp_serve.export.torchscript import quiet_torchscript
    from tests.export.conftest import make_model

    path = tmp_path_factory.mktemp("other") / gp_artifact.POSTERIOR_FILE
    module = trace_posterior(make_model(20, 2, 2, seed=3), torch.rand(3, 2, dtype=torch.float64))
    with quiet_torchscript():
        torch.jit.save(module, str(path))
    return path.read_bytes()
