"""Smoke test of ``python -m benchmarks.products --quick`` and its report section.

    .venv/bin/python -m pytest -q tests/bench/test_products_bench.py

The benchmark is given a model folder that holds no artifact, so it fits and exports the
default model (BraninCurrin) itself, serves it with a real TorchServe on loopback and measures
q in {10, 50}, 8 samples, 2,000 CSV rows, one request each. Checks ``products.json``'s schema,
that every way and CSV request was measured and agreed with the module in process (<= 1e-8),
and renders the report over it. No speed is asserted. About 20 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.products import COLUMNS, CSV_COLUMNS, QUICK, WAYS
from tests.conftest import REPO

pytestmark = pytest.mark.server

KEYS = {"section", "title", "columns", "rows", "tables", "notes", "versions", "command"}
TOL = 1e-8
TIMES = ("request median ms", "request p90 ms", "decode median ms", "total median ms")


def test_quick_products_bench(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.products",
            "--quick",
            "--out",
            str(out),
            "--model-dir",
            str(tmp_path / "no-model"),  # (holds no artifact: the run exports the default)
        ],
        cwd=REPO,  # (TorchServe's workdir in the system's temp dir: pytest's is too deep
        # for its worker sockets)
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"

    section = json.loads((out / "products.json").read_text())
    assert set(section) == KEYS
    assert section["section"] == "products" and section["title"]
    assert section["columns"] == COLUMNS
    assert all(isinstance(note, str) for note in section["notes"])
    assert not [note for note in section["notes"] if "FAILED" in note]
    assert any("fitted and exported by the run" in note for note in section["notes"])
    assert {"torch", "torchserve", "numpy"} <= set(section["versions"])
    assert section["command"].startswith("python -m benchmarks.products --quick")

    rows = [dict(zip(COLUMNS, row, strict=True)) for row in section["rows"]]
    assert [(row["q"], row["way"], row["wire"]) for row in rows] == [
        (q, way, wire) for q in QUICK.sizes for way, wire in WAYS
    ]
    for row in rows:
        assert row["n"] == QUICK.samples, row
        assert all(isinstance(row[c], float) and row[c] > 0 for c in TIMES), row
        assert isinstance(row["answer bytes"], int) and row["answer bytes"] > 0, row
        assert 0 <= row["max rel error"] <= TOL, row
        client = row["way"] != "served samples"
        for column in ("client draws median ms", "total / served", "bytes / served"):
            assert (row[column] is not None and row[column] > 0) is client, (column, row)

    (table,) = section["tables"]
    assert table["columns"] == CSV_COLUMNS
    csv_rows = [dict(zip(CSV_COLUMNS, row, strict=True)) for row in table["rows"]]
    assert [row["request"] for row in csv_rows] == [
        "moments only",
        "moments + ExpectedImprovement (acq)",
    ]
    for row in csv_rows:
        assert row["rows"] == QUICK.csv_rows, row
        assert row["median s"] > 0 and row["rows/s"] > 0 and row["answer bytes"] > 0, row
        assert 0 <= row["max rel error"] <= TOL, row
    assert csv_rows[1]["answer bytes"] > csv_rows[0]["answer bytes"]  # (the acq column)

    readme = report.main(["--raw", str(out), "--out", str(tmp_path / "results")]).read_text()
    assert f"## {section['title']}" in readme
    assert "| " + " | ".join(COLUMNS) + " |" in readme
    assert f"**{table['title']}**" in readme
    assert "| " + " | ".join(CSV_COLUMNS) + " |" in readme
    assert "python -m benchmarks.products --out benchmarks/results/raw" in readme
