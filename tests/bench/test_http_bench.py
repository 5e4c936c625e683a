"""Smoke test of the HTTP benchmarks: ``python -m benchmarks.http --quick`` end to end.

    .venv/bin/python -m pytest -q tests/bench/test_http_bench.py

Exports the default model (``make export``'s fit) into pytest's tmp dir, runs the quick
benchmark against it (a real TorchServe with ``gp`` and ``echo``, and the FastAPI peer, on
loopback) and checks the JSON files' schema, that the peer's answers agreed with gp's, that
the CSV scores matched the TorchScript module and that no request failed. No speed is
asserted. About a minute.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.http import CSV_COLUMNS, LATENCY_COLUMNS, THROUGHPUT_COLUMNS
from gp_serve.export.cli import fit_and_export
from gp_serve.export.data import default_data
from tests.conftest import REPO

pytestmark = pytest.mark.server

SECTIONS = {
    "http_latency": LATENCY_COLUMNS,
    "throughput": THROUGHPUT_COLUMNS,
    "csv_batch": CSV_COLUMNS,
}
KEYS = {"section", "title", "columns", "rows", "notes", "versions"}
AGREEMENT = re.compile(r"agreement: peer vs gp max relative difference (\S+) ")


def _agreement(notes: list[str]) -> float:
    found = [float(match.group(1)) for note in notes if (match := AGREEMENT.search(note))]
    assert len(found) == 1, notes
    return found[0]


def test_quick_http_bench(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    fit_and_export(default_data(), model_dir)
    out = tmp_path / "raw"
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.http",
            "--quick",
            "--out",
            str(out),
            "--model-dir",
            str(model_dir),
        ],
        cwd=REPO,
        env=dict(os.environ, TMPDIR=str(work)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"

    documents = {}
    for name, columns in SECTIONS.items():
        document = json.loads((out / f"{name}.json").read_text())
        assert set(document) == KEYS
        assert document["section"] == name
        assert isinstance(document["title"], str) and document["title"]
        assert document["columns"] == columns
        assert document["rows"] and all(len(row) == len(columns) for row in document["rows"])
        assert all(isinstance(note, str) for note in document["notes"])
        assert {"fastapi", "uvicorn", "torchserve", "botorch"} <= set(document["versions"])
        documents[name] = document

    latency = documents["http_latency"]
    assert {(row[0], row[1]) for row in latency["rows"]} == {
        (q, covariance) for q in (1, 10) for covariance in ("full", "diag")
    }
    for row in latency["rows"]:
        assert all(isinstance(cell, float) and cell > 0 for cell in row[2:]), row
    assert _agreement(latency["notes"]) <= 1e-6

    throughput = documents["throughput"]
    assert {(row[0], row[1]) for row in throughput["rows"]} == {
        (clients, covariance) for clients in (1, 4) for covariance in ("diag", "full")
    }
    for row in throughput["rows"]:
        assert row[-1] == 0, row  # errors
        assert all(isinstance(cell, float) and cell > 0 for cell in row[2:-1]), row
    assert _agreement(throughput["notes"]) <= 1e-6

    (csv_row,) = documents["csv_batch"]["rows"]
    assert csv_row[0] == 1000
    assert csv_row[-1].startswith("ok: "), csv_row
    assert any("answer check ok" in note for note in documents["csv_batch"]["notes"])
