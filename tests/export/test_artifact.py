"""Writing the artifact: through the contract, and all at once (an interruption at any step
leaves the previous artifact as it was)."""

from __future__ import annotations

import errno
import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from gp_serve.export import artifact as export_artifact
from gp_serve.export import export_model
from gp_serve.handler import gp_artifact, gp_formats
from tests.export.conftest import make_model


def snapshot(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


def leftovers(directory: Path) -> list[str]:
    return [
        p.name
        for p in directory.parent.iterdir()
        if p.name.startswith(export_artifact.STAGING_PREFIX)
    ]


def test_written_metadata_follows_the_contract(tmp_path: Path) -> None:
    meta = export_model(make_model(12, 3, 2), tmp_path / "m", input_names=["a", "b", "c"])
    loaded = gp_artifact.load_metadata(tmp_path / "m")
    assert loaded.document == meta
    assert loaded.input_names == ["a", "b", "c"] and loaded.output_names == ["y1", "y2"]
    assert loaded.covariance_layout == gp_artifact.COVARIANCE_LAYOUT == meta["covariance_layout"]
    assert gp_artifact.check_posterior(tmp_path / "m") == str(tmp_path / "m" / "posterior.pt")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted(gp_artifact.ARTIFACT_FILES)
    assert leftovers(tmp_path / "m") == []


def test_metadata_records_the_posterior_sha256_and_mixture_samples(tmp_path: Path) -> None:
    first = export_model(make_model(12, 2, 1, seed=3), tmp_path / "first")
    second = export_model(make_model(14, 2, 1, seed=4), tmp_path / "second")
    for out, meta in ((tmp_path / "first", first), (tmp_path / "second", second)):
        written = hashlib.sha256((out / gp_artifact.POSTERIOR_FILE).read_bytes()).hexdigest()
        assert meta["formats"]["torchscript"]["sha256"] == written
        assert gp_artifact.load_metadata(out).sha256("torchscript") == written
        assert meta["mixture_samples"] == 1 == gp_artifact.load_metadata(out).mixture_samples
    assert first["formats"]["torchscript"]["sha256"] != second["formats"]["torchscript"]["sha256"]
    gp_formats.load(tmp_path / "first", "torchscript", 2)  # (the file exported: loads)
    # Another model's posterior.pt in its place is a valid TorchScript file, but not this one.
    shutil.copyfile(
        tmp_path / "second" / gp_artifact.POSTERIOR_FILE,
        tmp_path / "first" / gp_artifact.POSTERIOR_FILE,
    )
    expected, actual = (meta["formats"]["torchscript"]["sha256"] for meta in (first, second))
    with pytest.raises(gp_artifact.ArtifactError) as info:
        gp_formats.load(tmp_path / "first", "torchscript", 2)
    assert str(info.value) == (
        f"{tmp_path / 'first' / 'posterior.pt'}: SHA-256 {actual[:16]}... differs from "
        f"metadata.json's {expected[:16]}...: the file was changed after export; "
        "re-export the model"
    )


# Every step of export_model after tracing, in order: (object, attribute) to interrupt.
STEPS = {
    "save": (torch.jit, "save"),
    "load back": (torch.jit, "load"),
    "gate": (export_artifact.gate, "check"),
    "metadata": (gp_artifact, "dumps"),
    "commit": (export_artifact, "_rename_exchange"),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_an_interrupted_export_keeps_the_previous_artifact(
    step: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "model"
    export_model(make_model(15, 2, 2, seed=1), out)
    before = snapshot(out)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt(f"interrupted at {step}")

    monkeypatch.setattr(*STEPS[step], interrupt)
    with pytest.raises(KeyboardInterrupt, match=f"interrupted at {step}"):
        export_model(make_model(15, 2, 2, seed=2), out)
    assert snapshot(out) == before
    assert leftovers(out) == []


def test_a_second_export_replaces_the_whole_artifact(tmp_path: Path) -> None:
    out = tmp_path / "model"
    export_model(make_model(15, 2, 2, seed=1), out)
    first = snapshot(out)
    meta = export_model(make_model(17, 2, 2, seed=2), out)
    assert snapshot(out).keys() == first.keys() and snapshot(out) != first
    assert gp_artifact.load_metadata(out).num_train == meta["num_train"] == 17
    assert leftovers(out) == []


def test_without_an_atomic_swap_files_are_replaced_metadata_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "model"
    export_model(make_model(15, 2, 2, seed=1), out)

    def unsupported(a, b):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(export_artifact, "_rename_exchange", unsupported)
    export_model(make_model(16, 2, 2, seed=2), out)
    assert gp_artifact.load_metadata(out).num_train == 16
    assert leftovers(out) == []


def test_a_file_in_place_of_the_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model").write_text("x")
    with pytest.raises(
        ValueError, match=f"^expected {tmp_path / 'model'} to be a folder, got a file$"
    ):
        export_model(make_model(10, 2, 1), tmp_path / "model")
