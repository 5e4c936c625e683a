"""Unit tests of the handler (``handler/gp_handler.py``) with a fake TorchServe context, no server.

The context is TorchServe's own ``MockContext`` (from its wheel) plus the per-request headers,
statuses and content types a real batch carries.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from ts.torch_handler.unit_tests.test_utils.mock_context import MockContext

from gp_serve.export.gate import variance_of
from gp_serve.handler import gp_artifact
from gp_serve.handler.gp_handler import GPHandler
from gp_serve.serving.archive import MODEL_CONFIG
from tests.serving.conftest import Exported

TOLERANCE = 1e-9


class FakeContext(MockContext):
    """A TorchServe context for one batch of requests (``headers[i]`` for request ``i``)."""

    def __init__(self, model_dir: Path, headers: list[dict] | None = None) -> None:
        super().__init__(
            model_pt_file=gp_artifact.POSTERIOR_FILE,
            model_dir=str(model_dir),
            model_file=None,
            model_name="gp",
        )
        self.model_name = "gp"
        self.manifest["model"]["modelVersion"] = "1.0"
        self.model_yaml_config = yaml.safe_load(MODEL_CONFIG.read_text())
        self.headers = headers or [{}]
        self.statuses: dict[int, tuple[int, str]] = {}
        self.content_types: dict[int, str] = {}

    def get_request_header(self, idx: int, key: str) -> str | None:
        return self.headers[idx].get(key)

    def get_all_request_header(self, idx: int) -> dict:
        return self.headers[idx]

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.statuses[idx] = (code, phrase)

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.content_types[idx] = value


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.fixture(scope="module")
def handler(exported: Exported) -> GPHandler:
    handler = GPHandler()
    handler.initialize(FakeContext(exported.directory))
    return handler


@pytest.fixture(scope="module")
def module(exported: Exported) -> torch.jit.ScriptModule:
    return torch.jit.load(str(exported.directory / gp_artifact.POSTERIOR_FILE))


def run(handler: GPHandler, bodies: list[bytes], headers: list[dict]) -> tuple[list, FakeContext]:
    context = FakeContext(Path("."), headers)
    answers = handler.handle([{"body": body} for body in bodies], context)
    return answers, context


def test_initialize_reads_the_contract(handler: GPHandler, exported: Exported) -> None:
    assert handler.initialized
    assert handler.metadata.input_names == exported.input_names
    assert handler.metadata.output_names == exported.output_names
    assert handler.max_full_points == 2000 and handler.chunk_rows == 4096


def test_chunk_rows_shrink_with_the_training_set(exported: Exported) -> None:
    """A ``mean_var`` call's working memory (two float64 `m x rows x N` products) stays
    within ``chunk_bytes``: N=40, m=2 and 64 KiB give 64 KiB / (2 * 8 * 40 * 2) = 51 rows;
    the smaller chunks answer the same numbers (to rounding: BLAS blocks by size)."""
    context = FakeContext(exported.directory)
    context.model_yaml_config["handler"]["chunk_bytes"] = 64 * 1024
    small = GPHandler()
    small.initialize(context)
    assert small.chunk_rows == 51
    X = torch.rand(500, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    whole = GPHandler()
    whole.initialize(FakeContext(exported.directory))
    for got, want in zip(
        small.predict(X, False, False)[:2], whole.predict(X, False, False)[:2], strict=True
    ):
        assert relative_error(got, want) <= 1e-12


@pytest.mark.parametrize("noisy", [False, True])
def test_predict_is_the_module(handler: GPHandler, module, noisy: bool) -> None:
    X = torch.rand(9, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    mean, variance, covariance = handler.predict(X, covariance=True, noisy=noisy)
    forward_mean, forward_covariance = (module.forward_noisy if noisy else module.forward)(X)
    # one module call: the variances are the covariance's diagonal, as the gate checks them
    assert torch.equal(mean, forward_mean) and torch.equal(covariance, forward_covariance)
    assert torch.equal(variance, variance_of(forward_covariance, 9))
    expected_mean, expected_variance = (module.mean_var_noisy if noisy else module.mean_var)(X)
    assert relative_error(variance, expected_variance) <= TOLERANCE
    mean, variance, covariance = handler.predict(X, covariance=False, noisy=noisy)
    assert torch.equal(mean, expected_mean) and torch.equal(variance, expected_variance)
    assert covariance is None


def test_predict_chunks_give_the_same_answer(handler: GPHandler, module) -> None:
    X = torch.rand(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    chunk_rows, handler.chunk_rows = handler.chunk_rows, 7
    try:
        mean, variance, _ = handler.predict(X, covariance=False, noisy=False)
    finally:
        handler.chunk_rows = chunk_rows
    expected_mean, expected_variance = module.mean_var(X)
    assert relative_error(mean, expected_mean) <= TOLERANCE
    assert relative_error(variance, expected_variance) <= TOLERANCE


def test_a_batch_of_json_csv_and_bad_requests(handler: GPHandler, module) -> None:
    bodies = [
        b'{"inputs": [[0.2, 0.4], [0.6, 0.8]]}',
        b"x2,x1\n0.4,0.2\n",
        b'{"inputs": [[0.2]]}',
        b'{"inputs": [[0.2, 0.4]], "covariance": "diag"}',
    ]
    headers = [
        {"Content-Type": "application/json"},
        {"Content-Type": "text/csv"},
        {"Content-Type": "application/json"},
        {},
    ]
    answers, context = run(handler, bodies, headers)
    assert context.statuses == {2: (400, "Bad Request")}
    assert context.content_types == {
        0: "application/json",
        1: "text/csv; charset=utf-8",
        2: "application/json",
        3: "application/json",
    }
    X = torch.tensor([[0.2, 0.4], [0.6, 0.8]], dtype=torch.float64)
    full = json.loads(answers[0])
    mean, covariance = module(X)
    assert full["mean"] == mean.tolist() and full["covariance"] == covariance.tolist()
    assert full["variance"] == variance_of(covariance, 2).tolist()
    assert full["covariance_layout"] == "output-major" and full["model"] == "gp"
    header, row = answers[1].decode().splitlines()
    assert header == "mean_branin,std_branin,mean_currin,std_currin"
    mean, variance = module.mean_var(X[:1])  # the CSV's one point, on its own
    assert [float(v) for v in row.split(",")] == [
        mean[0, 0].item(),
        variance[0, 0].sqrt().item(),
        mean[0, 1].item(),
        variance[0, 1].sqrt().item(),
    ]
    assert json.loads(answers[2]) == {
        "error": "inputs[0]: expected 2 numbers (inputs ['x1', 'x2']), got 1",
        "code": 400,
    }
    assert "covariance" not in json.loads(answers[3])


def test_too_many_points_for_a_full_covariance_is_413(handler: GPHandler) -> None:
    body = json.dumps({"inputs": [[0.5, 0.5]] * 2001}).encode()
    answers, context = run(handler, [body], [{}])
    assert context.statuses == {0: (413, "Request Entity Too Large")}
    assert json.loads(answers[0])["code"] == 413


def test_non_finite_posterior_names_rows_of_the_whole_csv(handler: GPHandler) -> None:
    chunk_rows, handler.chunk_rows = handler.chunk_rows, 2
    try:
        body = b"0.5,0.5\n0.5,0.5\n0.5,0.5\n1e308,-1e308\n"
        answers, context = run(handler, [body], [{"Content-Type": "text/csv"}])
    finally:
        handler.chunk_rows = chunk_rows
    assert context.statuses == {0: (400, "Bad Request")}
    assert json.loads(answers[0])["error"].startswith(
        "the posterior is not finite at points [2, 3] (first 10)"
    )


def test_each_request_is_answered_by_its_codec(handler: GPHandler, module) -> None:
    """v2 errors are v2's (no ``code``) once the v2 header or body is recognised; a request
    refused before a codec is selected (a form, even with the v2 header) is answered in JSON."""
    tensor = {"name": "X", "shape": [1, 2], "datatype": "FP64", "data": [0.2, 0.4]}
    v2_body = json.dumps({"inputs": [tensor], "outputs": [{"name": "mean"}]}).encode()
    float32 = json.dumps({"inputs": [{**tensor, "datatype": "FP32"}]}).encode()
    length = {"Inference-Header-Content-Length": "9999"}
    context = FakeContext(Path("."), [{}, length, {"Content-Type": "text/csv"}, length])
    rows = [{"body": v2_body}, {"body": v2_body}, {"body": float32}, {"a": b"1", "b": b"2"}]
    answers = handler.handle(rows, context)
    assert context.statuses == {
        1: (400, "Bad Request"),
        2: (400, "Bad Request"),
        3: (400, "Bad Request"),
    }
    assert set(context.content_types.values()) == {"application/json"}
    mean, _ = module.mean_var(torch.tensor([[0.2, 0.4]], dtype=torch.float64))
    assert json.loads(answers[0])["outputs"] == [
        {"name": "mean", "datatype": "FP64", "shape": [1, 2], "data": mean.flatten().tolist()}
    ]
    assert json.loads(answers[1]) == {
        "error": (
            "Inference-Header-Content-Length: expected a JSON header length between 1 and the "
            f"body's {len(v2_body)} bytes, got 9999"
        )
    }
    assert json.loads(answers[2]) == {
        "error": "inputs[0].datatype: expected 'FP64' (float64), got a string (\"FP32\")"
    }
    assert json.loads(answers[3]) == {
        "code": 400,
        "error": (
            "expected a JSON body (Content-Type: application/json) or CSV (Content-Type: "
            "text/csv), got a form or multipart body with 2 parts ['a', 'b'] (curl -d sends a "
            "form: add -H 'Content-Type: application/json')"
        ),
    }


def test_describe(handler: GPHandler, exported: Exported) -> None:
    answers, _ = run(handler, [b""], [{"describe": "True"}])
    described = json.loads(answers[0])
    written = json.loads((exported.directory / gp_artifact.METADATA_FILE).read_text())
    assert described == {
        **written,
        "serving": {
            "max_full_covariance_points": 2000,
            "max_points": 100_000,
            "max_covariance_rows": 4000,
            "max_response_bytes": 314_572_800,
            "max_samples": 10_000,
            "chunk_rows": 4096,
            "format": "torchscript",
            "csv_reader": "arrow",
        },
    }


def test_a_describe_header_on_a_prediction_is_a_prediction(handler: GPHandler) -> None:
    """Any client can send a ``describe`` header to the inference port: only the management
    API's describe (no body) is answered with the metadata."""
    answers, context = run(handler, [b'{"inputs": [[0.5, 0.5]]}'], [{"describe": "True"}])
    answer = json.loads(answers[0])
    assert set(answer) >= {"mean", "variance", "covariance"} and "serving" not in answer


def broken_copy(source: Path, target: Path, how: str) -> Path:
    shutil.copytree(source, target)
    posterior, metadata = target / gp_artifact.POSTERIOR_FILE, target / gp_artifact.METADATA_FILE
    if how == "posterior-missing":
        posterior.unlink()
    elif how == "posterior-truncated":
        posterior.write_bytes(posterior.read_bytes()[: posterior.stat().st_size // 2])
    elif how == "metadata-missing":
        metadata.unlink()
    elif how == "metadata-truncated":
        metadata.write_bytes(metadata.read_bytes()[:100])
    elif how == "metadata-foreign":
        metadata.write_text(json.dumps({**json.loads(metadata.read_text()), "format": "other/2"}))
    return target


BROKEN = {
    "posterior-missing": "posterior.pt: missing; re-export the model",
    "posterior-truncated": "posterior.pt: truncated or corrupt: expected a complete TorchScript "
    "archive (BadZipFile: File is not a zip file); re-export the model",
    "metadata-missing": "metadata.json: cannot read (No such file or directory); re-export "
    "the model",
    "metadata-truncated": "metadata.json: truncated or malformed JSON (Unterminated string "
    "starting at",
    "metadata-foreign": "metadata.json: format: expected 'gp-serve/1', got 'other/2'",
}


@pytest.mark.parametrize("how", sorted(BROKEN))
def test_a_broken_artifact_fails_with_one_clear_line(
    how: str, exported: Exported, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = broken_copy(exported.directory, tmp_path / "model", how)
    with caplog.at_level(logging.ERROR), pytest.raises(RuntimeError) as info:
        GPHandler().initialize(FakeContext(model_dir))
    assert BROKEN[how] in str(info.value)
    assert gp_artifact.LOAD_ERROR_MARKER not in str(info.value)  # the marker is on one line
    lines = [
        r.getMessage() for r in caplog.records if gp_artifact.LOAD_ERROR_MARKER in r.getMessage()
    ]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith(f"{gp_artifact.LOAD_ERROR_MARKER} 'gp': {model_dir}/")
    assert BROKEN[how] in lines[0]
