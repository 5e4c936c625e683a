"""A mounted model store whose archive is broken: the healthcheck reports the handler's reason
on its first run, instead of a bare failed prediction after the start period."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from handler import gp_artifact
from tests.docker.conftest import HOME, Container
from tests.serving.test_faults import BROKEN, broken_archive

pytestmark = pytest.mark.docker

FIRST_CHECK_S = 60  # the first check runs 10 s after start (--interval)


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
    try:
        deadline = time.monotonic() + FIRST_CHECK_S
        log: list = []
        while time.monotonic() < deadline and not log:
            log = (container.state().get("Health") or {}).get("Log") or []
            time.sleep(1)
        assert log, f"no healthcheck ran in {FIRST_CHECK_S} s\n{container.logs()}"
        output = log[0]["Output"].strip()
        print(f"\n[docker] first healthcheck with a broken archive: {output[:300]}")
        assert log[0]["ExitCode"] == 1
        assert output.startswith(f"unhealthy: {gp_artifact.LOAD_ERROR_MARKER} 'gp': "), output
        assert BROKEN["metadata-truncated"] in output
    finally:
        container.remove()
