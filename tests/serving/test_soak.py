"""The soak, 60 s: 16 loopback clients of mixed sizes and modes (``make soak`` runs 5 minutes)."""

from __future__ import annotations

import pytest
import torch

from gp_serve.handler import gp_artifact
from gp_serve.serving.soak import MAX_RSS_GROWTH, soak
from tests.serving.conftest import Exported

pytestmark = pytest.mark.server


def test_soak_60_seconds(server, exported: Exported) -> None:
    module = torch.jit.load(str(exported.directory / gp_artifact.POSTERIOR_FILE))
    report = soak(server, module, seconds=60, clients=16, warmup=10)
    print("\n[soak] " + report.summary())
    assert report.load.errors == []
    assert not report.restarted
    assert report.load.requests > 1000
    assert report.rss_growth < MAX_RSS_GROWTH
