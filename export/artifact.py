"""Writing the served artifact: TorchScript posterior plus metadata, atomically."""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import platform
import tempfile
from importlib import metadata as importlib_metadata
from pathlib import Path

import torch
from botorch.models import SingleTaskGP
from torch import Tensor

from export import gate
from export.posterior import trace_posterior
from export.torchscript import quiet_torchscript

ARTIFACT = "posterior.pt"
METADATA = "metadata.json"
FORMAT = "gp-serve/1"

log = logging.getLogger("export")


def export_model(
    model: SingleTaskGP,
    out_dir: str | os.PathLike,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    input_bounds: Tensor | None = None,
    data_sha256: str | None = None,
) -> dict:
    """Compile ``model``'s posterior, verify it and write it to ``out_dir``.

    Writes ``posterior.pt`` (TorchScript, see `trace_posterior`) and
    ``metadata.json``. Both are written to temporary files and renamed into place
    only after the exactness gate passes, so a failure leaves ``out_dir`` as it was.

    Args:
        model: A fitted float64 ``SingleTaskGP``.
        out_dir: The output folder (created if missing).
        input_names: ``d`` input names (default ``x1 ... xd``).
        output_names: ``m`` output names (default ``y1 ... ym``).
        input_bounds: `d x 2` training input bounds (default: the range of the
            model's untransformed training inputs).
        data_sha256: A hash of the training data (default: a hash of the
            model's training tensors).

    Returns:
        The metadata written.

    Raises:
        ValueError: If the names do not match the model.
        ExportGateError: If the compiled posterior differs from eager BoTorch.
    """
    model.eval()
    d, m = model.train_inputs[0].size(-1), model.num_outputs
    input_names = input_names or [f"x{i + 1}" for i in range(d)]
    output_names = output_names or [f"y{t + 1}" for t in range(m)]
    if len(input_names) != d or len(output_names) != m:
        raise ValueError(
            f"expected {d} input and {m} output names, "
            f"got {len(input_names)} and {len(output_names)}"
        )
    bounds = _training_bounds(model) if input_bounds is None else input_bounds.to(torch.float64)
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)

    log.info("tracing the posterior (N=%d, d=%d, m=%d)", model.train_inputs[0].size(-2), d, m)
    module = trace_posterior(model, gate.sample_points(bounds, 5, gate.GATE_SEED))
    artifact_tmp, meta_tmp = _temp_path(out_dir, ARTIFACT), _temp_path(out_dir, METADATA)
    try:
        with quiet_torchscript():
            torch.jit.save(module, str(artifact_tmp))
            loaded = torch.jit.load(str(artifact_tmp))
        log.info("verifying against eager BoTorch at q in %s", list(gate.GATE_SIZES))
        report = gate.check(loaded, model, bounds)
        meta = _metadata(model, input_names, output_names, bounds, report, data_sha256)
        meta_tmp.write_text(json.dumps(meta, indent=2) + "\n")
    except BaseException:
        artifact_tmp.unlink(missing_ok=True)
        meta_tmp.unlink(missing_ok=True)
        if created:
            out_dir.rmdir()
        raise
    os.replace(artifact_tmp, out_dir / ARTIFACT)
    os.replace(meta_tmp, out_dir / METADATA)
    log.info("wrote %s and %s (worst relative error %.3g)", out_dir / ARTIFACT,
             METADATA, report.worst["relative_error"])
    return meta


def _temp_path(out_dir: Path, name: str) -> Path:
    fd, path = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=out_dir)
    os.fchmod(fd, 0o644)  # readable by a server running as another user
    os.close(fd)
    return Path(path)


def input_bounds(X: Tensor) -> Tensor:
    """`d x 2` lower and upper bounds of `N x d` inputs."""
    lower, upper = X.aminmax(dim=0)
    return torch.stack([lower, upper], dim=-1)


def _training_bounds(model: SingleTaskGP) -> Tensor:
    train_x = model.train_inputs[0]
    if train_x.dim() == 3:
        train_x = train_x[0]
    transform = getattr(model, "input_transform", None)
    with torch.no_grad():
        raw = train_x if transform is None else transform.untransform(train_x)
    return input_bounds(raw)


def _model_sha256(model: SingleTaskGP) -> str:
    digest = hashlib.sha256()
    for tensor in (model.train_inputs[0], model.train_targets):
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _versions() -> dict:
    names = ("torch", "botorch", "gpytorch", "linear_operator")
    return {"python": platform.python_version()} | {
        name: importlib_metadata.version(name) for name in names
    }


def _metadata(
    model: SingleTaskGP,
    input_names: list[str],
    output_names: list[str],
    bounds: Tensor,
    report: gate.GateReport,
    data_sha256: str | None,
) -> dict:
    return {
        "format": FORMAT,
        "input_names": input_names,
        "output_names": output_names,
        "input_bounds": bounds.tolist(),
        "num_train": model.train_inputs[0].size(-2),
        "num_inputs": len(input_names),
        "num_outputs": len(output_names),
        "covariance_layout": "output-major",
        "versions": _versions(),
        "data_sha256": data_sha256 or _model_sha256(model),
        "gate": report.to_dict(),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
