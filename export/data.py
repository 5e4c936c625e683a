"""Training data: loading and validating a CSV file, and the embedded default."""

from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from botorch.test_functions.multi_objective import BraninCurrin
from torch import Tensor

DEFAULT_NUM_POINTS = 64
DEFAULT_SEED = 0


class DataError(ValueError):
    """The training data cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class TrainingData:
    """Validated float64 training data.

    Attributes:
        X: `N x d` inputs.
        Y: `N x m` outputs.
        Yvar: `N x m` observation noise variances, or None to infer the noise.
        input_names: ``d`` input names.
        output_names: ``m`` output names.
    """

    X: Tensor
    Y: Tensor
    Yvar: Tensor | None
    input_names: list[str]
    output_names: list[str]

    def sha256(self) -> str:
        """Hash of the names and the float64 values, in this order."""
        digest = hashlib.sha256()
        digest.update(",".join(self.input_names + self.output_names).encode())
        for tensor in (self.X, self.Y, self.Yvar):
            if tensor is not None:
                digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()


def default_data() -> TrainingData:
    """BoTorch's ``BraninCurrin`` problem (negated), on points from a fixed seed.

    Returns:
        `64 x 2` inputs ``x1, x2`` in ``[0, 1]^2`` and outputs ``branin, currin``.
    """
    problem = BraninCurrin(negate=True).to(torch.float64)
    generator = torch.Generator().manual_seed(DEFAULT_SEED)
    X = torch.rand(DEFAULT_NUM_POINTS, 2, generator=generator, dtype=torch.float64)
    return validate(X, problem(X), None, ["x1", "x2"], ["branin", "currin"])


def validate(
    X: Tensor,
    Y: Tensor,
    Yvar: Tensor | None,
    input_names: list[str],
    output_names: list[str],
    allow_missing: bool = False,
) -> TrainingData:
    """Check shapes and values and return them as `TrainingData`.

    Args:
        X: `N x d` inputs.
        Y: `N x m` outputs.
        Yvar: `N x m` noise variances or None.
        input_names: ``d`` names.
        output_names: ``m`` names.
        allow_missing: Whether an output may be missing (NaN) at some rows (for
            models that fit each output on its own rows); its noise, if any, is then
            ignored there.

    Raises:
        DataError: On a shape mismatch, fewer than 2 rows (per output), a non-finite
            value, a negative noise variance, a constant output or duplicate names.
    """
    names = input_names + output_names
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DataError(f"expected distinct input and output names, got {duplicates} twice")
    if X.dim() != 2 or X.size(-1) != len(input_names):
        raise DataError(f"expected X of shape N x {len(input_names)}, got {tuple(X.shape)}")
    if Y.dim() != 2 or Y.shape != (X.size(0), len(output_names)):
        raise DataError(
            f"expected Y of shape {X.size(0)} x {len(output_names)}, got {tuple(Y.shape)}"
        )
    if Yvar is not None and Yvar.shape != Y.shape:
        raise DataError(f"expected noise of shape {tuple(Y.shape)}, got {tuple(Yvar.shape)}")
    if X.size(0) < 2:
        raise DataError(f"expected at least 2 training rows, got {X.size(0)}")
    observed = ~Y.isnan() if allow_missing else torch.ones_like(Y, dtype=torch.bool)
    for label, tensor in (("inputs", X), ("outputs", Y), ("noise", Yvar)):
        if tensor is None:
            continue
        bad = ~torch.isfinite(tensor) & (observed if label != "inputs" else True)
        if bad.any():
            row = int(bad.any(-1).nonzero()[0])
            raise DataError(f"expected finite {label}, got a NaN or infinity in row {row + 1}")
    if Yvar is not None and (Yvar[observed] < 0).any():
        raise DataError("expected non-negative noise variances, got a negative one")
    for name, column, seen in zip(output_names, Y.unbind(-1), observed.unbind(-1), strict=True):
        values = column[seen]
        if values.numel() < 2:
            raise DataError(
                f"expected at least 2 observed rows of output {name!r}, got {values.numel()}"
            )
        if bool((values == values[0]).all()):
            raise DataError(
                f"expected output {name!r} to vary, got the constant {float(values[0])}"
            )
    return TrainingData(
        X.to(torch.float64),
        Y.to(torch.float64),
        None if Yvar is None else Yvar.to(torch.float64),
        list(input_names),
        list(output_names),
    )


def load_csv(
    path: Path,
    inputs: list[str] | None,
    outputs: list[str],
    noise: list[str] | None = None,
    allow_missing: bool = False,
) -> TrainingData:
    """Read training data from a CSV file with a header row.

    Args:
        path: The CSV file.
        inputs: Input column names; None means every column not named elsewhere.
        outputs: Output column names.
        noise: Per output, the name of a column of noise variances or one
            noise variance for every row (a number); or None to infer the noise.
        allow_missing: Whether output (and noise) cells may be empty: that output was
            not observed at that row.

    Raises:
        DataError: On unknown columns, non-numeric cells or invalid values.
    """
    try:
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            # (physical line number, cells); blank lines are skipped, not renumbered
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path}: {e}") from e
    if not rows:
        raise DataError(f"expected a header row in {path}, got an empty file")
    header = [name.strip() for name in rows[0][1]]
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DataError(f"expected distinct column names in {path}, got {repeated} twice")
    noise = noise or []
    if noise and len(noise) != len(outputs):
        raise DataError(f"expected one noise column per output ({len(outputs)}), got {len(noise)}")
    constants = {name: _number(name) for name in noise if name not in header}
    noise_columns = [name for name in noise if name not in constants]
    if inputs is None:
        inputs = [name for name in header if name not in outputs + noise_columns]
    unknown = [name for name in inputs + outputs if name not in header]
    unknown += [name for name, value in constants.items() if value is None]
    if unknown:
        raise DataError(f"unknown columns {unknown}; the file has {header}")
    if not inputs:
        raise DataError("expected at least one input column, got none")
    used = list(dict.fromkeys(inputs + outputs + noise_columns))
    optional = set(outputs + noise_columns) if allow_missing else set()
    values = [_parse_row(row, header, used, line, optional) for line, row in rows[1:]]

    def columns(names: list[str]) -> Tensor:
        index = [used.index(name) for name in names]
        return torch.tensor(
            [[row[i] for i in index] for row in values], dtype=torch.float64
        ).reshape(len(values), len(names))

    return validate(
        columns(inputs),
        columns(outputs),
        _noise(noise, constants, columns, len(values)) if noise else None,
        inputs,
        outputs,
        allow_missing,
    )


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _noise(noise: list[str], constants: dict, columns, rows: int) -> Tensor:
    per_output = [
        torch.full((rows,), constants[name], dtype=torch.float64)
        if name in constants
        else columns([name]).reshape(rows)
        for name in noise
    ]
    return torch.stack(per_output, dim=-1)


def _parse_row(
    row: list[str], header: list[str], used: list[str], line: int, optional: set[str]
) -> list[float]:
    """The row's values of the ``used`` columns; an empty ``optional`` cell is NaN."""
    if len(row) != len(header):
        raise DataError(f"line {line}: expected {len(header)} cells, got {len(row)}")
    values = []
    for name in used:
        cell = row[header.index(name)]
        if name in optional and not cell.strip():
            values.append(math.nan)
            continue
        value = _number(cell)
        if value is None:
            raise DataError(f"line {line}, column {name!r}: expected a number, got {cell!r}")
        if not math.isfinite(value):
            raise DataError(f"line {line}, column {name!r}: expected a finite number, got {cell!r}")
        values.append(value)
    return values
