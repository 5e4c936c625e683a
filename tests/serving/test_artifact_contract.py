"""Unit tests of the artifact contract (``handler/gp_artifact.py``): standard library only."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from gp_serve.handler.gp_artifact import (
    METHODS,
    ONNX_OUTPUT_NAMES,
    ONNX_OUTPUTS,
    ArtifactError,
    check_posterior,
    dumps,
    load_metadata,
    parse_metadata,
    validate,
)

GOOD = {
    "format": "gp-serve/1",
    "input_names": ["a", "b"],
    "output_names": ["f"],
    "input_bounds": [[0.0, 1.0], [-2, 3.5]],
    "num_train": 7,
    "num_inputs": 2,
    "num_outputs": 1,
    "covariance_layout": "output-major",
    "extra": {"kept": True},
}


def test_validate_keeps_the_whole_document() -> None:
    meta = validate(GOOD)
    assert meta.input_names == ["a", "b"] and meta.output_names == ["f"]
    assert meta.input_bounds == [[0.0, 1.0], [-2.0, 3.5]] and meta.num_train == 7
    assert meta.centre() == [0.5, 0.75]
    assert meta.document == GOOD
    assert parse_metadata(dumps(GOOD)).document == GOOD


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format": "gp-serve/2"}, "format: expected 'gp-serve/1', got 'gp-serve/2'"),
        (
            {"covariance_layout": "point-major"},
            "covariance_layout: expected 'output-major', got 'point-major'",
        ),
        ({"input_names": ["a", "a"]}, "input_names: expected distinct names, got ['a', 'a']"),
        (
            {"output_names": []},
            "output_names: expected a non-empty list of non-empty strings, got []",
        ),
        ({"num_inputs": 3}, "num_inputs: expected 2, got 3"),
        ({"num_train": 0}, "num_train: expected a positive integer, got 0"),
        ({"input_bounds": [[0, 1]]}, "input_bounds: expected 2 [lower, upper] pairs, got [[0, 1]]"),
        (
            {"input_bounds": [[0, 1], [2, 1]]},
            "input_bounds[1]: expected finite [lower, upper] with lower <= upper, got [2, 1]",
        ),
        ({"model_class": ""}, "model_class: expected a class name, got ''"),
        ({"correlated_outputs": 1}, "correlated_outputs: expected true or false, got 1"),
        (
            {"input_bounds": [[0, 1], [0, True]]},
            "input_bounds[1]: expected finite [lower, upper] with lower <= upper, got [0, True]",
        ),
    ],
)
def test_validate_names_the_broken_key(change: dict, message: str) -> None:
    with pytest.raises(ArtifactError) as info:
        validate({**GOOD, **change})
    assert str(info.value) == message
    with pytest.raises(ArtifactError):
        dumps({**GOOD, **change})  # nothing that breaks the contract is written


def test_missing_key_and_not_an_object() -> None:
    with pytest.raises(ArtifactError, match=r"^num_train: expected a positive integer, got None$"):
        validate({k: v for k, v in GOOD.items() if k != "num_train"})
    with pytest.raises(ArtifactError, match=r"^expected a JSON object, got list$"):
        validate([])


def test_load_metadata_errors(tmp_path: Path) -> None:
    with pytest.raises(
        ArtifactError,
        match=r"metadata\.json: cannot read \(No such file or "
        r"directory\); re-export the model$",
    ):
        load_metadata(tmp_path)
    (tmp_path / "metadata.json").write_text(dumps(GOOD)[:40])
    with pytest.raises(
        ArtifactError,
        match=r"metadata\.json: truncated or malformed JSON "
        r"\(Unterminated string starting at: line 3 column 3\); re-export the model$",
    ):
        load_metadata(tmp_path)
    (tmp_path / "metadata.json").write_bytes(b'{"format": "\xff"}')
    with pytest.raises(ArtifactError, match=r"metadata\.json: expected UTF-8 JSON, got invalid"):
        load_metadata(tmp_path)
    (tmp_path / "metadata.json").write_text(json.dumps({**GOOD, "num_outputs": 2}))
    with pytest.raises(ArtifactError, match=r"metadata\.json: num_outputs: expected 1, got 2$"):
        load_metadata(tmp_path)


def test_check_posterior(tmp_path: Path) -> None:
    path = tmp_path / "posterior.pt"
    with pytest.raises(ArtifactError, match=r"posterior\.pt: missing; re-export the model$"):
        check_posterior(tmp_path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("posterior/data.pkl", b"x" * 1000)
    assert check_posterior(tmp_path) == str(path)
    whole = path.read_bytes()
    path.write_bytes(whole[:-30])
    with pytest.raises(
        ArtifactError,
        match=r"posterior\.pt: truncated or corrupt: expected a "
        r"complete TorchScript archive \(BadZipFile: ",
    ):
        check_posterior(tmp_path)
    data = bytearray(whole)
    data[data.index(b"x" * 10)] = ord("y")  # same length, wrong CRC
    path.write_bytes(bytes(data))
    with pytest.raises(
        ArtifactError,
        match=r"posterior\.pt: corrupt: member "
        r"'posterior/data\.pkl' fails its CRC check",
    ):
        check_posterior(tmp_path)


def test_every_onnx_method_output_is_a_graph_output() -> None:
    assert set(ONNX_OUTPUTS) == set(METHODS)
    used = {name for outputs in ONNX_OUTPUTS.values() for name in outputs}
    assert used == set(ONNX_OUTPUT_NAMES)
    assert len(ONNX_OUTPUT_NAMES) == len(set(ONNX_OUTPUT_NAMES))
