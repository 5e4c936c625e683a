"""The artifact contract: the files, names and ``metadata.json`` schema of an exported posterior.

Standard library only: the export stage writes through it; the handler, the archive recipe, the
healthcheck and the tests read through it. See docs/export.md and docs/formats.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

POSTERIOR_FILE = "posterior.pt"
METADATA_FILE = "metadata.json"
# The files of an artifact in the default format.
ARTIFACT_FILES = (POSTERIOR_FILE, METADATA_FILE)
# Each format's posterior file; TorchScript is the default and is always written.
DEFAULT_FORMAT = "torchscript"
FORMAT_FILES = {"torchscript": POSTERIOR_FILE, "pt2": "posterior.pt2", "onnx": "posterior.onnx"}
# Every file an artifact folder may hold.
ALL_FILES = (*FORMAT_FILES.values(), METADATA_FILE)
# The posterior's methods, in every format (`METHODS`, in this order).
MethodName = Literal["forward", "forward_noisy", "mean_var", "mean_var_noisy"]
METHODS: tuple[MethodName, ...] = get_args(MethodName)
# What a request may ask for besides mean and variance: the joint covariance ("full"), or not
# ("diag": the variances only; "none", CSV's, the same computation). `method_name` picks the
# method that answers it.
CovarianceMode = Literal["full", "diag", "none"]
# The order of eager BoTorch's joint sample vector of `q x m` values (``metadata.json``'s
# ``sample_order``): output-major (the served covariance's) or point-major (outputs
# interleaved); its draws use the Cholesky factor of the covariance in that order.
SampleOrder = Literal["output-major", "point-major"]
SAMPLE_ORDERS: tuple[SampleOrder, ...] = get_args(SampleOrder)
# The ONNX graph's input and each method's outputs (``mean`` is shared).
ONNX_INPUT = "X"
# The ONNX graph's outputs, in order.
ONNX_OUTPUT_NAMES = ("mean", "covariance", "covariance_noisy", "variance", "variance_noisy")
ONNX_OUTPUTS = {
    "forward": ("mean", "covariance"),
    "forward_noisy": ("mean", "covariance_noisy"),
    "mean_var": ("mean", "variance"),
    "mean_var_noisy": ("mean", "variance_noisy"),
}
FORMAT = "gp-serve/1"
# Entry ``t*q + i`` of the `(q*m) x (q*m)` covariance is output ``t`` at point ``i``.
COVARIANCE_LAYOUT = "output-major"
# The floor of a served variance: GPyTorch's float64 ``settings.min_variance``, where eager
# BoTorch clamps ``posterior.variance`` (tests/export/test_gate.py checks it).
MIN_VARIANCE = 1e-10
# The start of the one line the handler logs when a model cannot be loaded (the tooling and
# the healthcheck look for it).
LOAD_ERROR_MARKER = "gp-serve: cannot load model"
# A posterior file is hashed (`file_sha256`) this many bytes at a time.
HASH_CHUNK_BYTES = 1 << 20
_HEX_DIGITS = frozenset("0123456789abcdef")


def method_name(covariance: CovarianceMode, noisy: bool) -> MethodName:
    """The method that answers a request: ``forward`` with the covariance, else ``mean_var``.

    Args:
        covariance: ``"full"`` for the `(q*m) x (q*m)` covariance, ``"diag"`` or ``"none"``
            for variances only.
        noisy: With observation noise (the ``_noisy`` methods).
    """
    if covariance == "full":
        return "forward_noisy" if noisy else "forward"
    return "mean_var_noisy" if noisy else "mean_var"


class ArtifactError(ValueError):
    """An artifact is missing, truncated or does not follow the contract."""


@dataclass(frozen=True)
class Metadata:
    """The validated contents of ``metadata.json``.

    Attributes:
        input_names: ``d`` distinct input names, in the order of the posterior's columns.
        output_names: ``m`` distinct output names, in the order of its outputs.
        input_bounds: `d x 2` lower and upper bounds of the training inputs.
        num_train: The number of training points ``N``.
        document: The whole document (every key, including ones this class does not name).
    """

    input_names: list[str]
    output_names: list[str]
    input_bounds: list[list[float]]
    num_train: int
    document: dict[str, Any] = field(repr=False, compare=False)

    @property
    def covariance_layout(self) -> str:
        return COVARIANCE_LAYOUT

    @property
    def formats(self) -> list[str]:
        """The formats the artifact was exported in (TorchScript only without ``formats``)."""
        return list(self.document.get("formats", {DEFAULT_FORMAT: None}))

    @property
    def mixture_samples(self) -> int:
        """``S``: the served posterior is a mixture over ``S`` MCMC samples (SAAS), its cost
        per point ``S`` times a single GP's; 1 for every other family and without the key."""
        return int(self.document.get("mixture_samples", 1))

    @property
    def sample_order(self) -> SampleOrder:
        """The order of eager BoTorch's joint sample vector for this model
        (`SAMPLE_ORDERS`; ``"output-major"`` without the key)."""
        order = self.document.get("sample_order", SAMPLE_ORDERS[0])
        return cast(SampleOrder, order)

    def sha256(self, fmt: str) -> str | None:
        """The SHA-256 recorded at export for format ``fmt``'s posterior file (lowercase
        hex), or None if the metadata records none."""
        entry = (self.document.get("formats") or {}).get(fmt)
        return entry.get("sha256") if isinstance(entry, dict) else None

    def centre(self) -> list[float]:
        """The centre of the training box: the point health probes ask about (``d``)."""
        return [(lower + upper) / 2.0 for lower, upper in self.input_bounds]


def _names(document: dict, key: str) -> list[str]:
    names = document.get(key)
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(name, str) and name for name in names)
    ):
        raise ArtifactError(f"{key}: expected a non-empty list of non-empty strings, got {names!r}")
    if len(set(names)) != len(names):
        raise ArtifactError(f"{key}: expected distinct names, got {names!r}")
    return list(names)


def _bounds(document: dict, d: int) -> list[list[float]]:
    bounds = document.get("input_bounds")
    if not isinstance(bounds, list) or len(bounds) != d:
        raise ArtifactError(f"input_bounds: expected {d} [lower, upper] pairs, got {bounds!r}")
    for j, pair in enumerate(bounds):
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair)
            and all(math.isfinite(v) for v in pair)
            and pair[0] <= pair[1]
        ):
            raise ArtifactError(
                f"input_bounds[{j}]: expected finite [lower, upper] with lower <= upper, "
                f"got {pair!r}"
            )
    return [[float(lower), float(upper)] for lower, upper in bounds]


def _check_formats(formats: Any) -> None:
    """``formats``: each written format's file (and its gate result), TorchScript always."""
    if not isinstance(formats, dict) or DEFAULT_FORMAT not in formats:
        raise ArtifactError(
            f"formats: expected an object with at least {DEFAULT_FORMAT!r}, got {formats!r}"
        )
    for name, entry in formats.items():
        if name not in FORMAT_FILES:
            raise ArtifactError(
                f"formats: expected names from {sorted(FORMAT_FILES)}, got {name!r}"
            )
        if not isinstance(entry, dict) or entry.get("file") != FORMAT_FILES[name]:
            raise ArtifactError(
                f'formats.{name}: expected {{"file": {FORMAT_FILES[name]!r}, ...}}, got {entry!r}'
            )
        # Optional: without it the file is checked as `check_posterior` checks it.
        if "sha256" in entry and not _is_sha256(entry["sha256"]):
            raise ArtifactError(
                f"formats.{name}.sha256: expected 64 lowercase hexadecimal "
                f"characters, got {entry['sha256']!r}"
            )


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX_DIGITS


def validate(document: Any) -> Metadata:
    """Check a decoded ``metadata.json`` against the contract.

    Args:
        document: The decoded JSON value.

    Returns:
        The validated metadata.

    Raises:
        ArtifactError: Naming the first key that is missing or wrong, expected vs actual.
    """
    if not isinstance(document, dict):
        raise ArtifactError(f"expected a JSON object, got {type(document).__name__}")
    if document.get("format") != FORMAT:
        raise ArtifactError(f"format: expected {FORMAT!r}, got {document.get('format')!r}")
    if document.get("covariance_layout") != COVARIANCE_LAYOUT:
        raise ArtifactError(
            f"covariance_layout: expected {COVARIANCE_LAYOUT!r}, "
            f"got {document.get('covariance_layout')!r}"
        )
    inputs, outputs = _names(document, "input_names"), _names(document, "output_names")
    for key, expected in (("num_inputs", len(inputs)), ("num_outputs", len(outputs))):
        if document.get(key) != expected:
            raise ArtifactError(f"{key}: expected {expected}, got {document.get(key)!r}")
    # Optional keys, checked when present.
    if "model_class" in document and not (
        isinstance(document["model_class"], str) and document["model_class"]
    ):
        raise ArtifactError(f"model_class: expected a class name, got {document['model_class']!r}")
    if "correlated_outputs" in document and not isinstance(document["correlated_outputs"], bool):
        raise ArtifactError(
            f"correlated_outputs: expected true or false, got {document['correlated_outputs']!r}"
        )
    _check_formats(document.get("formats", {DEFAULT_FORMAT: {"file": POSTERIOR_FILE}}))
    if "mixture_samples" in document:  # (optional)
        samples = document["mixture_samples"]
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            raise ArtifactError(f"mixture_samples: expected a positive integer, got {samples!r}")
    if document.get("sample_order", SAMPLE_ORDERS[0]) not in SAMPLE_ORDERS:  # (optional)
        raise ArtifactError(
            f"sample_order: expected one of {list(SAMPLE_ORDERS)}, got {document['sample_order']!r}"
        )
    num_train = document.get("num_train")
    if not isinstance(num_train, int) or isinstance(num_train, bool) or num_train < 1:
        raise ArtifactError(f"num_train: expected a positive integer, got {num_train!r}")
    return Metadata(inputs, outputs, _bounds(document, len(inputs)), num_train, dict(document))


def dumps(document: dict) -> str:
    """``metadata.json``'s text for ``document``, validated first.

    Raises:
        ArtifactError: If ``document`` does not follow the contract.
    """
    validate(document)
    return json.dumps(document, indent=2, allow_nan=False) + "\n"


def parse_metadata(text: str | bytes, source: str = METADATA_FILE) -> Metadata:
    """Decode and validate ``metadata.json``'s text.

    Args:
        text: The file's contents.
        source: Where it came from, for error messages.

    Raises:
        ArtifactError: If it is not UTF-8, not complete JSON, or breaks the contract.
    """
    try:
        document = json.loads(text)
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{source}: expected UTF-8 JSON, got invalid bytes ({e})") from e
    except json.JSONDecodeError as e:
        raise ArtifactError(
            f"{source}: truncated or malformed JSON ({e.msg}: line {e.lineno} column "
            f"{e.colno}); re-export the model"
        ) from e
    try:
        return validate(document)
    except ArtifactError as e:
        raise ArtifactError(f"{source}: {e}") from e


def load_metadata(directory: str | os.PathLike) -> Metadata:
    """Read and validate ``<directory>/metadata.json``.

    Raises:
        ArtifactError: If the file is missing, unreadable or breaks the contract.
    """
    path = os.path.join(directory, METADATA_FILE)
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read ({e.strerror or e}); re-export the model") from e
    return parse_metadata(text, path)


_ARCHIVE_NAMES = {"torchscript": "TorchScript", "pt2": "AOTInductor (.pt2)"}


def check_posterior(directory: str | os.PathLike, fmt: str = DEFAULT_FORMAT) -> str:
    """The path of ``<directory>``'s posterior file in format ``fmt``, after checking it.

    ``posterior.pt`` (``torch.jit.save``) and ``posterior.pt2`` (an AOTInductor package)
    are zip files; a truncated or overwritten one fails its central-directory or CRC
    checks. This catches that with a clear message before the loader would fail with a
    low-level one. ``posterior.onnx`` (a protobuf) is checked by its loader.

    Raises:
        ArtifactError: If the format is unknown, or the file is missing, empty,
            truncated or corrupt.
    """
    if fmt not in FORMAT_FILES:
        raise ArtifactError(f"format: expected one of {sorted(FORMAT_FILES)}, got {fmt!r}")
    path = os.path.join(directory, FORMAT_FILES[fmt])
    try:
        size = os.path.getsize(path)
        if fmt == "onnx":
            if size == 0:
                raise ArtifactError(f"{path}: empty; re-export the model")
            return path
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except FileNotFoundError as e:
        hint = (
            "re-export the model"
            if fmt == DEFAULT_FORMAT
            else f"export it with --format {DEFAULT_FORMAT},{fmt}"
        )
        raise ArtifactError(f"{path}: missing; {hint}") from e
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise ArtifactError(
            f"{path}: truncated or corrupt: expected a complete {_ARCHIVE_NAMES[fmt]} archive "
            f"({type(e).__name__}: {e}); re-export the model"
        ) from e
    if bad is not None:
        raise ArtifactError(
            f"{path}: corrupt: member {bad!r} fails its CRC check ({size} bytes); "
            "re-export the model"
        )
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of the file at ``path`` (lowercase hex), read `HASH_CHUNK_BYTES` at a time.

    Raises:
        OSError: If the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def verify_posterior(directory: str | os.PathLike, fmt: str, metadata: Metadata) -> str:
    """The path of ``<directory>``'s posterior file in format ``fmt``, checked to be the
    very file exported.

    The file is first checked as `check_posterior` checks it (so a truncated file is
    reported as truncated), then hashed and compared with the SHA-256 ``metadata``
    records for the format (``formats.<fmt>.sha256``): a file swapped or edited after
    export, even a valid posterior of another model, is refused. Without a recorded
    ``sha256`` the file is checked by `check_posterior` only.

    Args:
        directory: The artifact folder (or an extracted model archive).
        fmt: A key of `FORMAT_FILES`.
        metadata: The artifact's validated ``metadata.json`` (`load_metadata`).

    Returns:
        The file's path.

    Raises:
        ArtifactError: If the format is unknown, or the file is missing, truncated,
            corrupt, unreadable or not the file exported (its SHA-256 differs).
    """
    path = check_posterior(directory, fmt)
    expected = metadata.sha256(fmt)
    if expected is None:
        return path
    try:
        actual = file_sha256(path)
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read ({e.strerror or e}); re-export the model") from e
    if actual != expected:
        raise ArtifactError(
            f"{path}: SHA-256 {actual[:16]}... differs from {METADATA_FILE}'s "
            f"{expected[:16]}...: the file was changed after export; re-export the model"
        )
    return path
