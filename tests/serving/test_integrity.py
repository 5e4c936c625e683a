"""Integrity of the posterior files: the SHA-256 that ``metadata.json`` records at export is
checked before a file is packaged (``build_archive``) or served (the handler, a real
TorchServe), so a file swapped after export, even a valid posterior of another model, is
refused with one clear line instead of being served.

The swapped-in file is another model's ``posterior.pt`` (same inputs and outputs): it passes
every structural check (`gp_artifact.check_posterior`), so only the hash can tell.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import zipfile
from pathlib import Path

import pytest

from gp_serve.handler import gp_artifact
from gp_serve.handler import gp_artifact as packaged_contract  # (the one serving.archive imports)
from gp_serve.handler.gp_artifact import ArtifactError, file_sha256, validate, verify_posterior
from gp_serve.handler.gp_handler import GPHandler
from gp_serve.serving.archive import build_archive
from tests.serving.conftest import Exported
from tests.serving.test_artifact_contract import GOOD
from tests.serving.test_handler import FakeContext

PROMPT_S = 120  # a worker that cannot load reports it at once; generous for a loaded machine
SHA_A, SHA_B = "a" * 64, "0123456789abcdef" * 4


def swapped_message(path: Path | str, actual: str, expected: str) -> str:
    return (
        f"{path}: SHA-256 {actual[:16]}... differs from metadata.json's {expected[:16]}...: "
        "the file was changed after export; re-export the model"
    )


# --- the contract (standard library only) ---------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"sha256": SHA_A.upper()},
            f"formats.torchscript.sha256: expected 64 lowercase "
            f"hexadecimal characters, got {SHA_A.upper()!r}",
        ),
        (
            {"sha256": SHA_A[:63]},
            f"formats.torchscript.sha256: expected 64 lowercase "
            f"hexadecimal characters, got {SHA_A[:63]!r}",
        ),
        (
            {"sha256": "g" * 64},
            f"formats.torchscript.sha256: expected 64 lowercase "
            f"hexadecimal characters, got {'g' * 64!r}",
        ),
        (
            {"sha256": None},
            "formats.torchscript.sha256: expected 64 lowercase hexadecimal characters, got None",
        ),
    ],
)
def test_validate_checks_each_format_sha256(change: dict, message: str) -> None:
    formats = {"torchscript": {"file": "posterior.pt", **change}}
    with pytest.raises(ArtifactError) as info:
        validate({**GOOD, "formats": formats})
    assert str(info.value) == message
    with pytest.raises(ArtifactError):
        gp_artifact.dumps({**GOOD, "formats": formats})  # nothing of the kind is written


@pytest.mark.parametrize("value", [0, -3, True, 2.0, "4", None])
def test_validate_checks_mixture_samples(value) -> None:
    with pytest.raises(ArtifactError) as info:
        validate({**GOOD, "mixture_samples": value})
    assert str(info.value) == f"mixture_samples: expected a positive integer, got {value!r}"


def test_the_new_keys_are_read_and_optional() -> None:
    formats = {
        "torchscript": {"file": "posterior.pt", "sha256": SHA_A},
        "onnx": {"file": "posterior.onnx", "sha256": SHA_B},
    }
    meta = validate({**GOOD, "formats": formats, "mixture_samples": 8})
    assert meta.mixture_samples == 8
    assert (meta.sha256("torchscript"), meta.sha256("onnx"), meta.sha256("pt2")) == (
        SHA_A,
        SHA_B,
        None,
    )
    old = validate(GOOD)  # exported before the keys existed
    assert old.mixture_samples == 1 and old.sha256("torchscript") is None


def _artifact(directory: Path, posterior: bytes, recorded: str | None) -> gp_artifact.Metadata:
    """A folder with a zip ``posterior.pt`` and metadata recording ``recorded`` (or no hash)."""
    directory.mkdir()
    with zipfile.ZipFile(directory / "posterior.pt", "w") as archive:
        archive.writestr("posterior/data.pkl", posterior)
    entry = {"file": "posterior.pt"} | ({} if recorded is None else {"sha256": recorded})
    (directory / "metadata.json").write_text(
        gp_artifact.dumps({**GOOD, "formats": {"torchscript": entry}})
    )
    return gp_artifact.load_metadata(directory)


def test_verify_posterior(tmp_path: Path) -> None:
    _artifact(tmp_path / "probe", b"x", None)
    written = hashlib.sha256((tmp_path / "probe" / "posterior.pt").read_bytes()).hexdigest()
    good = _artifact(tmp_path / "good", b"x", written)
    path = tmp_path / "good" / "posterior.pt"
    assert verify_posterior(tmp_path / "good", "torchscript", good) == str(path)
    # A valid posterior.pt, but not the one exported.
    swapped = _artifact(tmp_path / "swapped", b"y", written)
    actual = file_sha256(tmp_path / "swapped" / "posterior.pt")
    with pytest.raises(ArtifactError) as info:
        verify_posterior(tmp_path / "swapped", "torchscript", swapped)
    assert str(info.value) == swapped_message(
        tmp_path / "swapped" / "posterior.pt", actual, written
    )
    # Exported before hashes were recorded: checked as before, and loaded.
    old = _artifact(tmp_path / "old", b"y", None)
    assert verify_posterior(tmp_path / "old", "torchscript", old) == str(
        tmp_path / "old" / "posterior.pt"
    )
    # The structural checks come first: a truncated file is reported as truncated.
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(ArtifactError, match=r"posterior\.pt: truncated or corrupt"):
        verify_posterior(tmp_path / "good", "torchscript", good)


def test_file_sha256_streams_the_whole_file(tmp_path: Path) -> None:
    data = bytes(range(256)) * (3 * gp_artifact.HASH_CHUNK_BYTES // 256 + 7)  # 3 chunks + a bit
    (tmp_path / "f").write_bytes(data)
    assert gp_artifact.HASH_CHUNK_BYTES == 1 << 20
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()


# --- an exported artifact with another model's posterior.pt ---------------------------


def swapped_copy(exported: Exported, other: bytes, target: Path) -> Path:
    shutil.copytree(exported.directory, target)
    (target / gp_artifact.POSTERIOR_FILE).write_bytes(other)
    gp_artifact.check_posterior(target)  # (structurally a sound posterior.pt)
    return target


def recorded(exported: Exported) -> str:
    return gp_artifact.load_metadata(exported.directory).sha256(gp_artifact.DEFAULT_FORMAT)


def test_export_records_the_sha256_the_loaders_check(exported: Exported) -> None:
    assert (
        recorded(exported)
        == hashlib.sha256(
            (exported.directory / gp_artifact.POSTERIOR_FILE).read_bytes()
        ).hexdigest()
    )
    assert gp_artifact.load_metadata(exported.directory).mixture_samples == 1


def test_the_handler_refuses_a_swapped_posterior_with_one_line(
    exported: Exported,
    other_posterior: bytes,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model_dir = swapped_copy(exported, other_posterior, tmp_path / "model")
    expected = swapped_message(
        model_dir / gp_artifact.POSTERIOR_FILE,
        hashlib.sha256(other_posterior).hexdigest(),
        recorded(exported),
    )
    with caplog.at_level(logging.ERROR), pytest.raises(RuntimeError) as info:
        GPHandler().initialize(FakeContext(model_dir))
    assert str(info.value) == expected
    lines = [
        r.getMessage() for r in caplog.records if gp_artifact.LOAD_ERROR_MARKER in r.getMessage()
    ]
    assert lines == [f"{gp_artifact.LOAD_ERROR_MARKER} 'gp': {expected}"]


def test_without_a_recorded_hash_the_handler_loads_as_before(
    exported: Exported, other_posterior: bytes, tmp_path: Path
) -> None:
    """An artifact exported before hashes were recorded (the same swapped file loads: the
    hash is what refuses it above)."""
    model_dir = swapped_copy(exported, other_posterior, tmp_path / "model")
    metadata = model_dir / gp_artifact.METADATA_FILE
    document = json.loads(metadata.read_text())
    for entry in document["formats"].values():
        del entry["sha256"]
    del document["mixture_samples"]
    metadata.write_text(gp_artifact.dumps(document))
    handler = GPHandler()
    handler.initialize(FakeContext(model_dir))
    assert handler.initialized and handler.metadata.mixture_samples == 1


def test_build_archive_refuses_a_swapped_posterior(
    exported: Exported, other_posterior: bytes, tmp_path: Path
) -> None:
    model_dir = swapped_copy(exported, other_posterior, tmp_path / "model")
    with pytest.raises(packaged_contract.ArtifactError) as info:
        build_archive(model_dir, tmp_path / "store")
    assert str(info.value) == swapped_message(
        model_dir / gp_artifact.POSTERIOR_FILE,
        hashlib.sha256(other_posterior).hexdigest(),
        recorded(exported),
    )
    assert not (tmp_path / "store").exists()
