"""The soak, 20 s: 16 loopback clients of mixed sizes and modes (``make soak`` runs 5 minutes)."""

from __future__ import annotations

import pytest
import torch

from gp_serve.handler import gp_artifact
from gp_serve.serving.soak import MAX_RSS_GROWTH, soak
from tests.serving.conftest import Exported

pytestmark = pytest.mark.server


def test_soak_20_seconds(server, exported: Exported) -> None:
    module = torch.jit.load(str(exported.directory / gp_artifact.POSTERIOR_FILE))
    report = soak(server, module, seconds=20, clients=16, warmup=5)
    print("\n[soak] " + report.summary())
    assert report.load.errors == []
    assert not report.restarted
    assert report.load.requests > 500  # (about 1,800 on the 2-core machine)
    assert report.rss_growth < MAX_RSS_GROWTH
