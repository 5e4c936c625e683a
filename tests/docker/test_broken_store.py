"""A mounted model store whose archive is broken: the healthcheck reports the handler's reason
within its first runs, instead of a bare failed prediction after the start period."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gp_serve.handler import gp_artifact
from tests.docker.conftest import HOME, Container
from tests.serving.test_faults import BROKEN, broken_archive

pytestmark = pytest.mark.docker

FIRST_CHECK_S = 60  # checks run every 10 s (--interval): within the first few


@pytest.fixture(scope="module")
def broken_store(baked_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's own archive with its metadata.json cut in half, as the only model."""
    store = tmp_path_factory.mktemp("broken-store")
    broken_archive(baked_archive, store / "gp.mar", "metadata-truncated")
    store.chmod(0o755)  # readable by the container's user (uid 1000)
    (store / "gp.mar").chmod(0o644)
    return store


def test_healthcheck_names_the_load_error(image: str, broken_store: Path) -> None:
    container = Container(image, "-v", f"{broken_store}:{HOME}/model-store:ro")
    marker = f"unhealthy: {gp_artifact.LOAD_ERROR_MARKER} 'gp': "
    try:
        deadline, log = time.monotonic() + FIRST_CHECK_S, []
        while time.monotonic() < deadline and not any(
            entry["Output"].startswith(marker) for entry in log
        ):
            log = (container.state().get("Health") or {}).get("Log") or []
            time.sleep(1)
        outputs = [entry["Output"].strip() for entry in log]
        print(f"\n[docker] healthchecks with a broken archive: {outputs}")
        reported = [entry for entry in log if entry["Output"].startswith(marker)]
        assert reported, (
            f"no check named the load error in {FIRST_CHECK_S} s: {outputs}\n" + container.logs()
        )
        assert all(entry["ExitCode"] == 1 for entry in log)
        assert BROKEN["metadata-truncated"] in reported[0]["Output"]
    finally:
        container.remove()
