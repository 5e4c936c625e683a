"""The command line: default data, a CSV file, and bad data (nothing written)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gp_serve.export.__main__ import main
from gp_serve.export.data import default_data
from gp_serve.export.gate import GATE_SIZES, TOLERANCE
from gp_serve.handler import gp_artifact

ROOT = Path(__file__).resolve().parents[2]
GOOD = "x1,x2,noise_y,y,z\n" + "".join(
    f"{i / 10},{(i * 7 % 11) / 10},0.01,{(i * 3 % 5) / 2},{i * i / 50}\n" for i in range(12)
)


@pytest.mark.slow
def test_default_export_runs_offline_and_reports_progress(tmp_path):
    out = tmp_path / "model"
    run = subprocess.run(
        [sys.executable, "-m", "export", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == ""
    for step in ("fitting", "tracing", "verifying", "wrote"):
        assert step in run.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(gp_artifact.ARTIFACT_FILES)
    meta = gp_artifact.load_metadata(out).document
    assert meta["format"] == gp_artifact.FORMAT == "gp-serve/1"
    assert meta["input_names"] == ["x1", "x2"]
    assert meta["output_names"] == ["branin", "currin"]
    assert (meta["num_train"], meta["num_inputs"], meta["num_outputs"]) == (64, 2, 2)
    assert meta["covariance_layout"] == gp_artifact.COVARIANCE_LAYOUT
    assert meta["data_sha256"] == default_data().sha256()
    assert set(meta["versions"]) == {"python", "torch", "botorch", "gpytorch", "linear_operator"}
    gate = meta["gate"]
    assert gate["tolerance"] == TOLERANCE and gate["max_relative_error"] <= TOLERANCE
    assert {check["q"] for check in gate["checks"]} == set(GATE_SIZES)
    X = default_data().X
    assert meta["input_bounds"] == torch.stack([X.min(0).values, X.max(0).values], -1).tolist()
    module = torch.jit.load(gp_artifact.check_posterior(out))
    mean, cov = module(torch.rand(3, 2, dtype=torch.float64))
    assert mean.shape == (3, 2) and cov.shape == (6, 6)


def test_csv_export_with_known_noise(tmp_path, capsys):
    data = tmp_path / "train.csv"
    data.write_text(GOOD)
    out = tmp_path / "model"
    code = main(
        [
            "--data",
            str(data),
            "--inputs",
            "x2,x1",
            "--outputs",
            "z,y",
            "--noise",
            "noise_y,noise_y",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    meta = gp_artifact.load_metadata(out).document
    assert meta["input_names"] == ["x2", "x1"] and meta["output_names"] == ["z", "y"]
    assert meta["num_train"] == 12
    assert meta["input_bounds"] == [[0.0, 1.0], [0.0, 1.1]]


def test_inputs_default_to_the_remaining_columns(tmp_path):
    data = tmp_path / "train.csv"
    data.write_text(GOOD)
    assert (
        main(
            [
                "--data",
                str(data),
                "--outputs",
                "y",
                "--noise",
                "noise_y",
                "--out",
                str(tmp_path / "m"),
            ]
        )
        == 0
    )
    meta = gp_artifact.load_metadata(tmp_path / "m").document
    assert meta["input_names"] == ["x1", "x2", "z"]


BAD_DATA = {
    "nan": (
        GOOD + "0.5,0.5,0.01,nan,1\n",
        "line 14, column 'y': expected a finite number, got 'nan'",
    ),
    "inf": (
        GOOD + "0.5,inf,0.01,1,1\n",
        "line 14, column 'x2': expected a finite number, got 'inf'",
    ),
    "non-numeric": (
        GOOD + "0.5,abc,0.01,1,1\n",
        "line 14, column 'x2': expected a number, got 'abc'",
    ),
    "ragged": (GOOD + "0.5,0.1,0.01,1\n", "line 14: expected 5 cells, got 4"),
    # Blank lines count: the message names the line of the file, as an editor shows it.
    "blank lines before": (
        GOOD.replace("\n", "\n\n", 2) + "\r\n0.5,abc,0.01,1,1\n",
        "line 17, column 'x2': expected a number, got 'abc'",
    ),
    "quoted newline": (
        GOOD + '0.5,"0.1\n",0.01,1,1\n0.5,x,0.01,1,1\n',
        "line 16, column 'x2': expected a number, got 'x'",
    ),
    "duplicate column": (GOOD.replace("noise_y", "x1", 1), "expected distinct column names in"),
    "one row": ("x1,x2,noise_y,y,z\n1,2,0.1,3,4\n", "expected at least 2 training rows, got 1"),
    "no rows": ("x1,x2,noise_y,y,z\n", "expected at least 2 training rows, got 0"),
    "empty file": ("", "expected a header row"),
    "constant output": (
        "".join([GOOD.split("\n")[0] + "\n"] + [f"{i},{i % 3},0.1,7,{i}\n" for i in range(5)]),
        "expected output 'y' to vary, got the constant 7.0",
    ),
    "negative noise": (GOOD.replace(",0.01,", ",-0.01,"), "expected non-negative noise variances"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_is_refused_and_nothing_is_written(case, tmp_path, capsys):
    text, message = BAD_DATA[case]
    data = tmp_path / "train.csv"
    data.write_text(text)
    out = tmp_path / "model"
    code = main(
        [
            "--data",
            str(data),
            "--inputs",
            "x1,x2",
            "--outputs",
            "y,z",
            "--noise",
            "noise_y,noise_y",
            "--out",
            str(out),
        ]
    )
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--inputs", "x1,w"], "unknown columns ['w']"),
        (["--inputs", "x1,y"], "expected distinct input and output names, got ['y'] twice"),
        (["--noise", "noise_y"], "expected one noise column per output (2), got 1"),
    ],
    ids=["unknown column", "input also output", "noise count"],
)
def test_bad_columns_are_refused(args, message, tmp_path, capsys):
    data = tmp_path / "train.csv"
    data.write_text(GOOD)
    base = {"--inputs": "x1,x2", "--outputs": "y,z"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = [item for pair in base.items() for item in pair] + [
        "--data",
        str(data),
        "--out",
        str(tmp_path / "m"),
    ]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_missing_file_is_refused(tmp_path, capsys):
    assert (
        main(["--data", str(tmp_path / "nope.csv"), "--outputs", "y", "--out", str(tmp_path / "m")])
        == 2
    )
    assert "cannot read" in capsys.readouterr().err


def test_data_options_need_data(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["--outputs", "y", "--out", str(tmp_path / "m")])
    assert exit_info.value.code == 2


def test_noise_as_numbers_and_unused_text_columns(tmp_path):
    data = tmp_path / "train.csv"
    rows = GOOD.strip().split("\n")
    data.write_text("\n".join(["id," + rows[0]] + [f"p{i}," + r for i, r in enumerate(rows[1:])]))
    assert (
        main(
            [
                "--data",
                str(data),
                "--inputs",
                "x1,x2",
                "--outputs",
                "y,z",
                "--noise",
                "0.01,noise_y",
                "--out",
                str(tmp_path / "m"),
            ]
        )
        == 0
    )
    meta = gp_artifact.load_metadata(tmp_path / "m").document
    assert meta["num_train"] == 12 and meta["output_names"] == ["y", "z"]


def test_noise_that_is_neither_column_nor_number(tmp_path, capsys):
    data = tmp_path / "train.csv"
    data.write_text(GOOD)
    assert (
        main(
            [
                "--data",
                str(data),
                "--inputs",
                "x1,x2",
                "--outputs",
                "y,z",
                "--noise",
                "0.01,sigma",
                "--out",
                str(tmp_path / "m"),
            ]
        )
        == 2
    )
    assert "unknown columns ['sigma']" in capsys.readouterr().err


def test_blank_line_then_bad_cell_on_line_4(tmp_path, capsys):
    """The issue's case: a blank line 2, a bad cell on line 4."""
    data = tmp_path / "train.csv"
    data.write_text("x,y\n\n0.1,1\n0.2,oops\n0.3,2\n")
    assert main(["--data", str(data), "--outputs", "y", "--out", str(tmp_path / "m")]) == 2
    assert "error: line 4, column 'y': expected a number, got 'oops'" in capsys.readouterr().err


def test_out_folder_with_other_files_is_refused(tmp_path, capsys):
    data = tmp_path / "train.csv"
    data.write_text(GOOD)
    assert main(["--data", str(data), "--outputs", "y", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert (
        f"error: expected {tmp_path} to hold only ['posterior.pt', 'posterior.pt2', "
        "'posterior.onnx', 'metadata.json'] (it is replaced as a whole), got also "
        "['train.csv']; export to a new folder"
    ) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.csv"]


# Output z is missing at every third row, y at rows 4 and 7 (empty cells).
MISSING = "x1,x2,y,z\n" + "".join(
    f"{i / 10},{(i * 7 % 11) / 10},{'' if i in (4, 7) else (i * 3 % 5) / 2},"
    f"{'' if i % 3 == 0 else i * i / 50}\n"
    for i in range(14)
)


@pytest.mark.parametrize(
    ("model", "model_class", "correlated"),
    [("list", "ModelListGP", False), ("multitask", "MultiTaskGP", True)],
)
def test_models_fit_each_output_on_its_rows(model, model_class, correlated, tmp_path):
    data = tmp_path / "train.csv"
    data.write_text(MISSING)
    out = tmp_path / "m"
    assert main(["--data", str(data), "--outputs", "y,z", "--model", model, "--out", str(out)]) == 0
    meta = gp_artifact.load_metadata(out).document
    assert (meta["model_class"], meta["correlated_outputs"]) == (model_class, correlated)
    assert meta["num_train"] == 12 + 9  # observed rows of y and of z
    assert (meta["input_names"], meta["output_names"]) == (["x1", "x2"], ["y", "z"])
    assert meta["gate"]["max_relative_error"] <= TOLERANCE
    assert meta["input_bounds"] == [[0.0, 1.3], [0.0, 1.0]]  # over every row


@pytest.mark.parametrize("model", ["single", "kronecker"])
def test_models_without_missing_cells_refuse_them(model, tmp_path, capsys):
    data = tmp_path / "train.csv"
    data.write_text(MISSING)
    assert (
        main(
            [
                "--data",
                str(data),
                "--outputs",
                "y,z",
                "--model",
                model,
                "--out",
                str(tmp_path / "m"),
            ]
        )
        == 2
    )
    assert "error: line 2, column 'z': expected a number, got ''" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_kronecker_model_from_the_command_line(tmp_path, capsys):
    data = tmp_path / "train.csv"
    data.write_text(
        "x1,x2,y,z\n"
        + "".join(
            f"{i / 10},{(i * 7 % 11) / 10},{(i * 3 % 5) / 2},{i * i / 50}\n" for i in range(14)
        )
    )
    out = tmp_path / "k"
    assert (
        main(["--data", str(data), "--outputs", "y,z", "--model", "kronecker", "--out", str(out)])
        == 0
    )
    meta = gp_artifact.load_metadata(out).document
    assert (meta["model_class"], meta["correlated_outputs"]) == ("KroneckerMultiTaskGP", True)
    assert meta["num_train"] == 14 and meta["gate"]["max_relative_error"] <= TOLERANCE
    assert (
        main(
            [
                "--data",
                str(data),
                "--outputs",
                "y,z",
                "--noise",
                "0.01,0.01",
                "--model",
                "kronecker",
                "--out",
                str(tmp_path / "n"),
            ]
        )
        == 2
    )
    assert (
        "error: --model kronecker: known noise (--noise) is not supported by KroneckerMultiTaskGP"
    ) in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "x1,y,z\n0.1,1,\n0.2,2,\n0.3,3,5\n",
            "expected at least 2 observed rows of output 'z', got 1",
        ),
        (
            "x1,y,z\n0.1,1,nan\n0.2,2,\n0.3,5,5\n",
            "line 2, column 'z': expected a finite number, got 'nan'",
        ),
        ("x1,y,z\n,1,1\n0.2,2,2\n0.3,3,5\n", "line 2, column 'x1': expected a number, got ''"),
        ("x1,y,z\n0.1,1,7\n0.2,2,\n0.3,3,7\n", "expected output 'z' to vary, got the constant 7.0"),
    ],
    ids=["one observed", "nan text", "missing input", "constant observed"],
)
@pytest.mark.parametrize("model", ["list", "multitask"])
def test_bad_missing_data(model, text, message, tmp_path, capsys):
    data = tmp_path / "train.csv"
    data.write_text(text)
    assert (
        main(
            [
                "--data",
                str(data),
                "--outputs",
                "y,z",
                "--model",
                model,
                "--out",
                str(tmp_path / "m"),
            ]
        )
        == 2
    )
    assert f"error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


CATEGORICAL = "x,color,y\n" + "".join(
    f"{i / 20},{i % 3},{(i / 20) ** 2 + [0.0, 1.0, -0.5][i % 3]}\n" for i in range(24)
)


def test_categorical_inputs_fit_a_mixed_model(tmp_path, caplog):
    data = tmp_path / "train.csv"
    data.write_text(CATEGORICAL)
    out = tmp_path / "m"
    with caplog.at_level(logging.INFO, logger="export"):
        assert (
            main(
                ["--data", str(data), "--outputs", "y", "--categorical", "color", "--out", str(out)]
            )
            == 0
        )
    assert "fitting a MixedSingleTaskGP on N=24, d=2, m=1" in caplog.messages
    meta = gp_artifact.load_metadata(out).document
    assert meta["model_class"] == "MixedSingleTaskGP" and meta["input_names"] == ["x", "color"]
    assert meta["gate"]["max_relative_error"] <= TOLERANCE


def test_categorical_errors(tmp_path, capsys):
    data = tmp_path / "train.csv"
    data.write_text(CATEGORICAL)
    assert (
        main(
            [
                "--data",
                str(data),
                "--outputs",
                "y",
                "--categorical",
                "colour",
                "--out",
                str(tmp_path / "m"),
            ]
        )
        == 2
    )
    assert (
        "error: --categorical: expected input columns ['x', 'color'], got ['colour']"
        in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main(
            [
                "--data",
                str(data),
                "--outputs",
                "y",
                "--categorical",
                "color",
                "--model",
                "list",
                "--out",
                str(tmp_path / "m"),
            ]
        )
    assert "--categorical needs --model single, got --model list" in capsys.readouterr().err
