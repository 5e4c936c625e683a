"""Writing the served artifact: TorchScript posterior plus metadata, all at once.

The files, their names and the metadata schema are the artifact contract's
(``handler/gp_artifact.py``); this module fills them in and commits them atomically.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime
import errno
import gc
import hashlib
import logging
import os
import platform
import shutil
import tempfile
import time
from importlib import metadata as importlib_metadata
from pathlib import Path

import torch
from botorch.models.model import Model
from torch import Tensor

from gp_serve.export import gate, portable
from gp_serve.export.families import Family, family_of
from gp_serve.export.torchscript import quiet_torchscript
from gp_serve.handler import gp_artifact, gp_formats

STAGING_PREFIX = ".gp-serve-staging-"
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100

log = logging.getLogger("export")


def export_model(
    model: Model,
    out_dir: str | os.PathLike,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    input_bounds: Tensor | None = None,
    data_sha256: str | None = None,
    formats: tuple[str, ...] | list[str] = (gp_artifact.DEFAULT_FORMAT,),
    allow_unlisted: bool = False,
) -> dict:
    """Compile ``model``'s posterior, verify it and write it to ``out_dir``.

    Writes ``posterior.pt`` (TorchScript, see `export.families.trace_posterior`), the
    other ``formats`` asked for (``posterior.pt2``, an AOTInductor package, and
    ``posterior.onnx``, see `export.portable`) and ``metadata.json`` (the contract's
    schema, ``handler/gp_artifact.py``). Every file is written to a staging folder
    beside ``out_dir``, each posterior is loaded back as the server loads it and must
    pass the exactness gate, and the folder is put in place in one atomic step only
    then: a failure or an interruption at any step leaves ``out_dir`` as it was.

    Args:
        model: A fitted float64 model of a supported family (`export.families`).
        out_dir: The output folder (created if missing).
        input_names: ``d`` input names (default ``x1 ... xd``).
        output_names: ``m`` output names (default ``y1 ... ym``).
        input_bounds: `d x 2` training input bounds (default: the range of the
            model's untransformed training inputs).
        data_sha256: A hash of the training data (default: a hash of the
            model's training tensors).
        formats: Names from ``gp_artifact.FORMAT_FILES``; TorchScript is always written
            (it is the model archive's serialized file), the others when named.
        allow_unlisted: Let model parts the support table does not list (an own kernel, a
            subclass) through to the exactness gate (`export.support.check`); parts the
            table refuses stay refused.

    Returns:
        The metadata written.

    Raises:
        UnsupportedModelError: If a part of the model is outside the support table
            (docs/export.md, "What is supported"), before anything is traced.
        ValueError: If the names do not match the model, a format is unknown, or
            ``out_dir`` holds other files than an artifact.
        ExportGateError: If a compiled posterior differs from eager BoTorch.
        PortableExportError: If a portable format cannot express the posterior.
    """
    unknown = sorted(set(formats) - set(gp_artifact.FORMAT_FILES))
    if unknown:
        raise ValueError(f"expected formats from {sorted(gp_artifact.FORMAT_FILES)}, got {unknown}")
    family = family_of(model, allow_unlisted)
    model.eval()
    inputs = family.training_inputs(model)
    d, m = inputs[0].size(-1), model.num_outputs
    input_names = input_names or [f"x{i + 1}" for i in range(d)]
    output_names = output_names or [f"y{t + 1}" for t in range(m)]
    if len(input_names) != d or len(output_names) != m:
        raise ValueError(
            f"expected {d} input and {m} output names, "
            f"got {len(input_names)} and {len(output_names)}"
        )
    num_train = sum(x.size(-2) for x in inputs)
    bounds = (
        data_bounds(torch.cat(inputs)) if input_bounds is None else input_bounds.to(torch.float64)
    )
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)

    log.info(
        "tracing the posterior of a %s (N=%d, d=%d, m=%d)", type(model).__name__, num_train, d, m
    )
    example_X = gate.sample_points(bounds, 5, gate.GATE_SEED)
    started = time.perf_counter()
    module = family.trace(model, example_X)
    gc.collect()  # (the traced copy's eager caches are in reference cycles: `m x N x N` each)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir.parent))
    try:
        staging.chmod(0o755)  # readable by a server running as another user
        posterior = staging / gp_artifact.POSTERIOR_FILE
        with quiet_torchscript():
            torch.jit.save(module, str(posterior))
        del module  # (its caches: the gate checks the file's, mapped, as a server loads them)
        loaded = gp_formats.load(staging, gp_artifact.DEFAULT_FORMAT, d, verify=False)
        log.info("verifying against eager BoTorch at q in %s", list(gate.GATE_SIZES))
        report = gate.check(
            loaded, model, bounds, reference=family.eager_moments, part=family.output_part
        )
        written = {
            gp_artifact.DEFAULT_FORMAT: _format_entry(
                gp_artifact.DEFAULT_FORMAT, report, time.perf_counter() - started, posterior
            )
        }
        written |= _write_portable(model, family, example_X, bounds, staging, formats)
        meta = _metadata(
            family,
            model,
            num_train,
            input_names,
            output_names,
            bounds,
            report,
            data_sha256,
            written,
        )
        (staging / gp_artifact.METADATA_FILE).write_text(gp_artifact.dumps(meta))
        for path in staging.iterdir():
            path.chmod(0o644)
        _commit(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files = [gp_artifact.FORMAT_FILES[fmt] for fmt in meta["formats"]]
    log.info(
        "wrote %s and %s (worst relative error %.3g)",
        out_dir / ", ".join(files),
        gp_artifact.METADATA_FILE,
        max(entry["max_relative_error"] for entry in meta["formats"].values()),
    )
    return meta


def _format_entry(fmt: str, report: gate.GateReport, seconds: float, path: Path) -> dict:
    """A ``formats`` entry for the gated file at ``path``, with the SHA-256 of its bytes as
    written (the loaders check it: `gp_artifact.verify_posterior`)."""
    worst = report.worst
    return {
        "file": gp_artifact.FORMAT_FILES[fmt],
        "max_relative_error": worst["relative_error"],
        "worst_case": gate.describe(worst),
        "build_seconds": round(seconds, 3),
        "sha256": gp_artifact.file_sha256(path),
    }


def _write_portable(
    model: Model,
    family: Family,
    example_X: Tensor,
    bounds: Tensor,
    staging: Path,
    formats: tuple[str, ...] | list[str],
) -> dict:
    """Write and gate the portable formats asked for; their ``formats`` entries."""
    wanted = [fmt for fmt in ("pt2", "onnx") if fmt in formats]
    if not wanted:
        return {}
    started = time.perf_counter()
    posterior = portable.exportable_posterior(model, example_X, family)
    entries = {}
    for fmt in wanted:
        path = staging / gp_artifact.FORMAT_FILES[fmt]
        log.info("exporting %s", path.name)
        if fmt == "pt2":
            portable.write_pt2(portable.export_programs(posterior, example_X), path)
        else:
            portable.write_onnx(posterior, example_X, path)
        loaded = gp_formats.load(staging, fmt, example_X.size(-1), verify=False)
        log.info("verifying %s against eager BoTorch", path.name)
        report = gate.check(
            loaded, model, bounds, reference=family.eager_moments, part=family.output_part
        )
        entries[fmt] = _format_entry(fmt, report, time.perf_counter() - started, path)
        started = time.perf_counter()
    return entries


def _check_out_dir(out_dir: Path) -> None:
    """Refuse an output folder that holds anything but an artifact (it is replaced whole)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"expected {out_dir} to be a folder, got a file")
    if out_dir.is_dir():
        other = sorted(p.name for p in out_dir.iterdir() if p.name not in gp_artifact.ALL_FILES)
        if other:
            raise ValueError(
                f"expected {out_dir} to hold only {list(gp_artifact.ALL_FILES)} (it is "
                f"replaced as a whole), got also {other[:10]}; export to a new folder"
            )


def _rename_exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``).

    Raises:
        OSError: If the system or the filesystem cannot (``ENOSYS``, ``EINVAL``, ...).
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a))


def _commit(staging: Path, out_dir: Path) -> None:
    """Make ``staging``'s files the artifact in ``out_dir`` in one step.

    A new ``out_dir`` is a rename of ``staging``; an existing one is swapped with it
    atomically, so a reader (or an interruption at any point) sees either the whole
    previous artifact or the whole new one, never a mix. Where the filesystem cannot
    swap, the files are replaced one by one, metadata last.
    """
    if not out_dir.exists():
        os.rename(staging, out_dir)
        return
    try:
        _rename_exchange(staging, out_dir)  # staging now holds the previous artifact
    except OSError as e:
        if e.errno not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise
        log.warning("cannot swap folders atomically here (%s): replacing file by file", e)
        for name in gp_artifact.ALL_FILES:  # (metadata last)
            if (staging / name).exists():
                os.replace(staging / name, out_dir / name)
            elif (out_dir / name).exists():  # a format the new artifact does not have
                os.unlink(out_dir / name)


def data_bounds(X: Tensor) -> Tensor:
    """`d x 2` lower and upper bounds of `N x d` inputs."""
    lower, upper = X.aminmax(dim=0)
    return torch.stack([lower, upper], dim=-1)


def _model_sha256(family: Family, model: Model) -> str:
    digest = hashlib.sha256()
    for tensor in family.training_tensors(model):
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def mixture_samples(family: Family, model: Model) -> int:
    """``S``, the MCMC samples the served posterior mixes: the SAAS family's batch of
    samples (`export.fully_bayesian`), 1 for every other family (one GP per output)."""
    if family.name == "saas":
        return int(model.batch_shape[0])  # (checked by its compiler: a batch of S samples)
    return 1


def _versions() -> dict:
    names = ("torch", "botorch", "gpytorch", "linear_operator")
    return {"python": platform.python_version()} | {
        name: importlib_metadata.version(name) for name in names
    }


def _metadata(
    family: Family,
    model: Model,
    num_train: int,
    input_names: list[str],
    output_names: list[str],
    bounds: Tensor,
    report: gate.GateReport,
    data_sha256: str | None,
    formats: dict,
) -> dict:
    return {
        "format": gp_artifact.FORMAT,
        "input_names": input_names,
        "output_names": output_names,
        "input_bounds": bounds.tolist(),
        "num_train": num_train,
        "num_inputs": len(input_names),
        "num_outputs": len(output_names),
        "covariance_layout": gp_artifact.COVARIANCE_LAYOUT,
        "model_class": type(model).__name__,
        "correlated_outputs": family.correlated_outputs,
        "mixture_samples": mixture_samples(family, model),
        "sample_order": family.sample_order,
        "versions": _versions(),
        "data_sha256": data_sha256 or _model_sha256(family, model),
        "gate": report.to_dict(),
        "formats": formats,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
