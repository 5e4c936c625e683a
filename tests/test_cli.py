"""The ``gp-serve`` command without a server: its help, its imports, ``describe`` on artifacts
and archives, and ``export --model-file``."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import gp_serve
from gp_serve.cli import COMMANDS, main
from gp_serve.export.cli import TRUST_WARNING
from gp_serve.handler import gp_artifact, gp_formats

GP_SERVE = Path(sys.executable).with_name("gp-serve")
TOLERANCE = 1e-8


@dataclass(frozen=True)
class Tiny:
    """A fitted two-input, two-output SingleTaskGP, saved with ``torch.save`` and exported."""

    model: object
    train_X: torch.Tensor
    model_file: Path
    directory: Path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.input import Normalize
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    from gp_serve import export_model

    generator = torch.Generator().manual_seed(3)
    train_X = torch.rand(16, 2, generator=generator, dtype=torch.float64) * 4 - 1
    train_Y = torch.stack([torch.sin(train_X.sum(-1)), torch.cos(2 * train_X[:, 0])], -1)
    model = SingleTaskGP(
        train_X, train_Y, input_transform=Normalize(d=2), outcome_transform=Standardize(m=2)
    )
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    model.eval()
    root = tmp_path_factory.mktemp("tiny")
    torch.save(model, root / "model.pth")
    export_model(model, root / "model", input_names=["a", "b"], output_names=["f", "g"])
    return Tiny(model, train_X, root / "model.pth", root / "model")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    return subprocess.run(
        [str(GP_SERVE), *args], capture_output=True, text=True, timeout=600, check=False
    )


def test_help_lists_every_command_with_one_line() -> None:
    run = run_cli("--help")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    for name in (
        "export",
        "archive",
        "serve",
        "start",
        "stop",
        "describe",
        "score",
        "token",
        "update",
    ):
        listed = [line for line in lines if line.startswith(f"  {name} ")]
        assert listed == [f"  {name:<15}{COMMANDS[name].summary}"], run.stdout


def test_version() -> None:
    run = run_cli("--version")
    assert (run.returncode, run.stdout) == (0, f"gp-serve {gp_serve.__version__}\n")
    module = subprocess.run(
        [sys.executable, "-m", "gp_serve", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert module.stdout == run.stdout


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_help_shows_examples(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: gp-serve {command} ")
    examples = out.split("\nexamples:\n", 1)[1].splitlines()
    assert 2 <= len(examples) <= 4, out
    assert all(line.startswith(f"  gp-serve {command}") for line in examples), examples


HEAVY = ("torch", "botorch", "gpytorch", "ts")


@pytest.mark.parametrize(
    "argv",
    [None, ["--help"], ["serve", "--help"], ["describe", "--help"]],
    ids=["import", "help", "serve help", "describe help"],
)
def test_the_command_imports_no_botorch_torch_or_torchserve(argv: list[str] | None) -> None:
    """``gp-serve --help`` works without BoTorch or TorchServe, ``gp-serve serve`` without
    BoTorch (nor torch: the frontend runs the workers)."""
    call = f"main({argv!r})" if argv else "None"
    code = (
        "import sys\n"
        "from gp_serve.cli import main\n"
        f"try:\n    {call}\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}), file=sys.stderr)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip().splitlines()[-1] == "[]"


def test_describe_an_artifact_folder(tiny: Tiny, capsys: pytest.CaptureFixture) -> None:
    metadata = gp_artifact.load_metadata(tiny.directory)
    assert main(["describe", str(tiny.directory)]) == 0
    out = capsys.readouterr().out.splitlines()
    (lower_a, upper_a), (lower_b, upper_b) = metadata.input_bounds
    assert out[:6] == [
        f"artifact {tiny.directory}",
        "model class: SingleTaskGP, independent outputs; 16 training points",
        "inputs (2), with their training bounds:",
        f"  a  [{lower_a:.6g}, {upper_a:.6g}]",
        f"  b  [{lower_b:.6g}, {upper_b:.6g}]",
        "outputs (2): f, g",
    ]
    assert (
        "covariance layout: output-major (entry t*q + i of the (q*m) x (q*m) covariance is "
        "output t at point i)"
    ) in out
    assert any(
        line.startswith(
            f"  torchscript  posterior.pt  sha256 "
            f"{metadata.sha256('torchscript')}  (gate: max relative error "
        )
        for line in out
    ), out
    versions = metadata.document["versions"]
    assert (
        f"versions: python {versions['python']}, torch {versions['torch']}, botorch "
        f"{versions['botorch']}, gpytorch {versions['gpytorch']}, linear_operator "
        f"{versions['linear_operator']}" in out
    )


def test_describe_json_round_trips_the_metadata(tiny: Tiny, capsys: pytest.CaptureFixture) -> None:
    assert main(["describe", str(tiny.directory), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document == gp_artifact.load_metadata(tiny.directory).document
    assert gp_artifact.validate(document).input_names == ["a", "b"]


def test_describe_a_model_archive(tiny: Tiny, tmp_path: Path) -> None:
    from gp_serve.serving.archive import build_archive

    mar = build_archive(tiny.directory, tmp_path / "store", "tiny", version="3.1")
    run = run_cli("describe", str(mar))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"archive {mar}: model tiny version 3.1"
    assert "inputs (2), with their training bounds:" in lines and "outputs (2): f, g" in lines
    as_json = run_cli("describe", str(mar), "--json")
    assert json.loads(as_json.stdout) == gp_artifact.load_metadata(tiny.directory).document


def test_describe_refuses_what_is_not_an_artifact(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    missing = tmp_path / "nope"
    assert main(["describe", str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"error: {missing}: expected an artifact folder or a "
        "model archive (.mar), got no such file or folder\n"
    )
    text = tmp_path / "notes.mar"
    text.write_text("not a zip")
    assert main(["describe", str(text)]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: {text}: expected an artifact folder or a model archive (.mar, a zip file), "
        "got BadZipFile: "
    )
    foreign = tmp_path / "foreign.mar"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("model.py", "")
    assert main(["describe", str(foreign)]) == 2
    assert capsys.readouterr().err == (
        f"error: {foreign}: expected a gp-serve model archive "
        "with metadata.json at its root, got ['model.py']\n"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["describe", str(empty)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {empty / 'metadata.json'}: cannot read")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "expected an artifact folder or .mar, or --name/--url of a running model"),
        (
            ["build/model", "--name", "gp"],
            "expected an artifact or --name/--url of a running model, got both (build/model and "
            "--name)",
        ),
    ],
    ids=["neither", "both"],
)
def test_describe_needs_one_subject(
    argv: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["describe", *argv])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.endswith(f"gp-serve describe: error: {message}\n")


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got - expected).abs().max() / expected.abs().max()).item()


def test_export_model_file_writes_the_models_posterior(tiny: Tiny, tmp_path: Path) -> None:
    out = tmp_path / "model"
    run = run_cli("export", "--model-file", str(tiny.model_file), "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert run.stderr.startswith(TRUST_WARNING.format(path=tiny.model_file) + "\n")
    assert "only on files you trust" in run.stderr.splitlines()[0]
    metadata = gp_artifact.load_metadata(out)
    assert (metadata.input_names, metadata.output_names) == (["x1", "x2"], ["y1", "y2"])
    assert metadata.num_train == 16
    assert metadata.input_bounds == torch.stack(tiny.train_X.aminmax(dim=0), -1).tolist()
    module = gp_formats.load(out, gp_artifact.DEFAULT_FORMAT, 2)
    X = torch.rand(9, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 5 - 2
    mean, variance = module.mean_var(X)
    with torch.no_grad():
        posterior = tiny.model.posterior(X)
    assert relative_error(mean, posterior.mean) <= TOLERANCE
    assert relative_error(variance, posterior.variance) <= TOLERANCE


def test_export_model_file_takes_names(
    tiny: Tiny, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "model"
    assert (
        main(
            [
                "export",
                "--model-file",
                str(tiny.model_file),
                "--inputs",
                "p,q",
                "--outputs",
                "u,v",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    metadata = gp_artifact.load_metadata(out)
    assert (metadata.input_names, metadata.output_names) == (["p", "q"], ["u", "v"])
    assert (
        main(
            [
                "export",
                "--model-file",
                str(tiny.model_file),
                "--inputs",
                "p",
                "--out",
                str(tmp_path / "other"),
            ]
        )
        == 2
    )
    assert "error: expected 2 input and 2 output names, got 1 and 2" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "train.csv"], "argument --data: not allowed with argument --model-file"),
        (
            ["--model", "list", "--noise", "0.1"],
            "--noise, --model: fitting options, expected none with --model-file (the model is "
            "fitted already)",
        ),
    ],
    ids=["data", "fitting options"],
)
def test_export_model_file_refuses_data_and_fitting_options(
    extra: list[str], message: str, tiny: Tiny, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--model-file", str(tiny.model_file), *extra, "--out", str(tmp_path / "m")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.endswith(f"gp-serve export: error: {message}\n")
    assert "unpickles" not in err  # (refused before anything is loaded)
    assert not (tmp_path / "m").exists()


def test_export_model_file_that_holds_no_model(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "weights.pth"
    torch.save({"weight": torch.zeros(2)}, path)
    assert main(["export", "--model-file", str(path), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(TRUST_WARNING.format(path=path))
    assert (
        f"error: --model-file {path}: expected a BoTorch model saved with "
        "torch.save(model, PATH), got builtins.dict\n"
    ) in err
    assert not (tmp_path / "m").exists()


def test_export_model_file_outside_the_support_table(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tests.export.zoo import own_kernel

    path = tmp_path / "own.pth"
    torch.save(own_kernel(), path)
    out = tmp_path / "m"
    assert main(["export", "--model-file", str(path), "--out", str(out)]) == 2
    assert (
        f"error: --model-file {path}: model.covar_module.base_kernel: ScaledMatern (not in "
        "the single family's kernels: RBFKernel, MaternKernel, "
    ) in capsys.readouterr().err
    assert not out.exists()
    # --allow-unlisted hands it to the exactness gate, which this kernel passes
    assert main(["export", "--model-file", str(path), "--allow-unlisted", "--out", str(out)]) == 0
    assert gp_artifact.load_metadata(out).document["model_class"] == "SingleTaskGP"


def test_allow_unlisted_is_only_for_a_model_file(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--allow-unlisted", "--out", str(tmp_path / "m")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.endswith(
        "gp-serve export: error: --allow-unlisted: expected it only with --model-file "
        "(fitted models are listed)\n"
    )
