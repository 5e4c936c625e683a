"""Smoke test of ``make bench``'s in-process half and its report (no timing asserted).

Runs ``benchmarks.inprocess`` and ``benchmarks.batch_mvn`` with ``--quick`` into a temp dir,
checks their sections' schema and that traced and eager agree in every measured cell, then
renders the report over them and a small synthetic ``http_latency`` section.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import batch_mvn, inprocess, report

pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TOL = 1e-8
INPROCESS_COLUMNS = [
    "family",
    "N",
    "q",
    "method",
    "eager median ms",
    "eager p99 ms",
    "traced median ms",
    "traced p99 ms",
    "eager/traced",
    "max rel error",
]
BATCH_COLUMNS = [
    "q",
    "m",
    "from_batch_mvn ms",
    "from_independent_mvns ms",
    "ratio",
    "layout batch",
    "layout independent",
    "max rel diff",
]
HTTP_COLUMNS = [
    "q",
    "covariance",
    "gp p50 ms",
    "gp p99 ms",
    "echo p50 ms",
    "echo p99 ms",
    "peer p50 ms",
    "peer p99 ms",
    "gp/echo p50",
    "peer/gp p50",
]


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two quick sweeps, run in this process (they set one torch thread: restored)."""
    out = tmp_path_factory.mktemp("raw")
    threads = torch.get_num_threads()
    try:
        inprocess.main(["--out", str(out), "--quick"])
        batch_mvn.main(["--out", str(out), "--quick"])
    finally:
        torch.set_num_threads(threads)
    return out


def load(path: Path, name: str, columns: list[str]) -> dict:
    section = json.loads((path / f"{name}.json").read_text())
    assert section["section"] == name
    assert section["columns"] == columns
    assert isinstance(section["title"], str) and section["title"]
    assert all(isinstance(note, str) for note in section["notes"])
    assert section["rows"] and all(len(row) == len(columns) for row in section["rows"])
    return section


def test_inprocess_traced_equals_eager(raw: Path) -> None:
    section = load(raw, "inprocess", INPROCESS_COLUMNS)
    measured = [row for row in section["rows"] if row[-1] is not None]
    assert {row[0] for row in measured} == {"single", "kronecker"}
    assert {row[3] for row in measured} == {"full", "diag"}
    for row in measured:
        assert all(isinstance(value, float) and value > 0 for value in row[4:9]), row
        assert row[-1] <= TOL, row


def test_batch_mvn_layouts_agree(raw: Path) -> None:
    section = load(raw, "batch_mvn", BATCH_COLUMNS)
    compared = [row for row in section["rows"] if row[1] >= 2]
    assert compared
    for row in compared:
        assert (row[5], row[6]) == ("interleaved", "output-major"), row
        assert row[-1] <= TOL, row


def test_report_renders_tables_and_plots(raw: Path, tmp_path: Path) -> None:
    rows = [
        [
            q,
            covariance,
            2.0 + q / 100,
            3.0 + q / 100,
            1.0,
            1.5,
            4.0 + q / 50,
            5.0 + q / 50,
            2.0,
            1.9,
        ]
        for q in (1, 10, 100)
        for covariance in ("full", "none")
    ]
    (raw / "http_latency.json").write_text(
        json.dumps(
            {
                "section": "http_latency",
                "title": "Synthetic HTTP latency",
                "columns": HTTP_COLUMNS,
                "rows": rows,
                "notes": ["synthetic"],
                "versions": {"fastapi": "0.0-test"},
            }
        )
    )
    out = tmp_path / "results"
    report.main(["--raw", str(raw), "--out", str(out)])
    readme = (out / "README.md").read_text()
    for heading in (
        "| family | N | q | method |",
        "| q | m | from_batch_mvn ms |",
        "| q | covariance | gp p50 ms |",
    ):
        assert heading in readme
    assert (
        readme.index("| family | N |")
        < readme.index("| q | covariance |")
        < readme.index("| q | m |")
    )  # the fixed section order
    assert "fastapi 0.0-test" in readme and "commit: `" in readme and "UTC" in readme
    for png in ("inprocess_speedup.png", "http_latency.png"):
        assert f"]({png})" in readme
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
