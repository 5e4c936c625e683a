"""Smoke test of ``python -m benchmarks.formats --quick`` and its report section.

    .venv/bin/python -m pytest -q tests/bench/test_formats_bench.py

Runs the quick benchmark on the session's artifact exported in every format
(``portable_artifact``: a two-output SingleTaskGP, d=3; ``--artifact`` skips the export,
so AOTInductor does not compile again), checks ``formats.json``'s schema, that every format
x method x q cell was measured with positive times and agrees with TorchScript, and renders
the report over it. No speed is asserted. Under a minute once the artifact exists.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.formats import CELLS, COLUMNS, FORMAT_COLUMNS, FORMATS
from tests.conftest import REPO, PortableArtifact

pytestmark = pytest.mark.slow

KEYS = {"section", "title", "columns", "rows", "tables", "notes", "versions", "command"}
TOL = 1e-8  # (each file passed the export's gate at 1e-8 vs eager)


def test_quick_formats_bench(portable_artifact: PortableArtifact, tmp_path: Path) -> None:
    out = tmp_path / "raw"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.formats",
            "--quick",
            "--out",
            str(out),
            "--artifact",
            str(portable_artifact.directory),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"

    section = json.loads((out / "formats.json").read_text())
    assert set(section) == KEYS
    assert section["section"] == "formats" and section["title"]
    assert section["columns"] == COLUMNS
    assert all(isinstance(note, str) for note in section["notes"])
    assert {"torch", "onnx", "onnxruntime"} <= set(section["versions"])
    assert section["command"].startswith("python -m benchmarks.formats")

    assert {(row[0], row[1]) for row in section["rows"]} == {
        (method, q) for method, sizes in CELLS for q in sizes
    }
    assert len(section["rows"]) == sum(len(sizes) for _, sizes in CELLS)
    for row in section["rows"]:
        cells = dict(zip(COLUMNS, row, strict=True))
        for fmt in FORMATS:
            for stat in ("median ms", "p90 ms"):
                assert isinstance(cells[f"{fmt} {stat}"], float), row
                assert cells[f"{fmt} {stat}"] > 0, row
            if fmt != "torchscript":
                assert cells[f"{fmt}/torchscript"] > 0, row
                assert 0 <= cells[f"{fmt} max rel error"] <= TOL, row

    (table,) = section["tables"]
    assert table["columns"] == FORMAT_COLUMNS
    assert [row[0] for row in table["rows"]] == list(FORMATS)
    for row in table["rows"]:
        cells = dict(zip(FORMAT_COLUMNS, row, strict=True))
        for column in (
            "build s",
            "file MB",
            "fresh load s",
            "first forward ms (q=1)",
            "first mean_var ms (q=1)",
        ):
            assert cells[column] > 0, (column, row)
        assert cells["gate max rel error"] <= TOL, row

    readme = report.main(["--raw", str(out), "--out", str(tmp_path / "results")]).read_text()
    assert f"## {section['title']}" in readme
    assert (
        "| method | q | torchscript median ms | pt2 median ms | onnx median ms | "
        "pt2/torchscript | onnx/torchscript |"
    ) in readme
    assert "| format | file | build s | file MB | fresh load s |" in readme
    assert "python -m benchmarks.formats --out benchmarks/results/raw" in readme
    assert "onnxruntime " in readme  # (the section's versions in the header)
