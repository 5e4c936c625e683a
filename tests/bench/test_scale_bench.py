"""Smoke test of ``python -m benchmarks.scale`` at one N past the packing threshold.

    .venv/bin/python -m pytest -q tests/bench/test_scale_bench.py

N = ``engine.PACK_MIN_POINTS`` + 52 (the packed, memory-mapped caches): exported in a child,
loaded, served by a real TorchServe with two workers whose q=1000 answer must equal the module
in process (<= 1e-8, which the benchmark itself checks), and rendered by the report. No speed
is asserted. About 40 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.scale import COLUMNS
from gp_serve.export.engine import PACK_MIN_POINTS, PACK_TILE
from tests.conftest import REPO

pytestmark = [pytest.mark.server, pytest.mark.slow]


def test_scale_bench_one_size(tmp_path: Path) -> None:
    n = PACK_MIN_POINTS + 52
    out = tmp_path / "raw"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", "--out", str(out), "--sizes", str(n)],
        cwd=REPO,
        check=True,
        timeout=600,
    )
    section = json.loads((out / "scale.json").read_text())
    assert section["columns"] == COLUMNS
    (row,) = section["rows"]
    cells = dict(zip(COLUMNS, row, strict=True))
    assert cells["N"] == n
    blocks = -(-n // PACK_TILE)
    packed_mb = 2 * PACK_TILE * PACK_TILE * blocks * (blocks + 1) // 2 * 8 / 1e6
    assert packed_mb < cells["artifact MB"] < packed_mb + 2  # (the packed root, not 2 x N x N)
    assert float(cells["served vs module"]) <= 1e-8
    assert len(cells["worker RSS MB (each)"].split(" / ")) == 2
    rendered = report.render([section], tmp_path, "make bench", REPO)
    assert "Large training sets" in rendered
