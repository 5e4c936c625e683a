"""Score an exported GP posterior with onnxruntime alone: no torch, nothing from gp-serve.

    python examples/onnx/score.py ARTIFACT_DIR [--method mean_var] [--noise] < points.csv

Reads ``metadata.json`` and ``posterior.onnx`` from ``ARTIFACT_DIR`` and the points as CSV
on stdin, one point a row: with a header row of the input names (any order; the columns
are reordered to ``metadata.json``'s ``input_names``) or without one (the columns in that
order). Writes JSON to stdout: ``output_names`` and the method's results, ``mean`` `q x m`
and ``variance`` `q x m` or ``covariance`` `(q*m) x (q*m)` (output-major: entry
``t*q + i`` is output ``t`` at point ``i``). ``--noise`` adds observation noise. Bad input:
a message on stderr and exit status 2.

onnxruntime runs every node of a graph whatever outputs are asked for, so the method's
outputs are first extracted as a subgraph (``mean_var`` then never builds the `q x q`
covariance) and one session runs that. In Python: ``load(artifact_dir, method)(X)``.
Needs only numpy, onnx and onnxruntime (``requirements.txt`` beside this file).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnx.utils
import onnxruntime as ort

# The artifact contract (gp-serve's handler/gp_artifact.py), restated: this file stands alone.
ONNX_FILE = "posterior.onnx"
METADATA_FILE = "metadata.json"
ONNX_INPUT = "X"
ONNX_OUTPUTS = {
    "forward": ("mean", "covariance"),
    "forward_noisy": ("mean", "covariance_noisy"),
    "mean_var": ("mean", "variance"),
    "mean_var_noisy": ("mean", "variance_noisy"),
}
NOISY = "_noisy"


class InputError(ValueError):
    """The points do not fit the artifact (exit status 2)."""


Scorer = Callable[[np.ndarray], dict[str, np.ndarray]]


def load(artifact_dir: str | Path, method: str = "mean_var") -> Scorer:
    """A scorer for one method of the artifact in ``artifact_dir``.

    Args:
        artifact_dir: A folder holding ``metadata.json`` and ``posterior.onnx``.
        method: One of `ONNX_OUTPUTS`: ``forward``, ``mean_var`` (default) or either
            with ``_noisy`` (observation noise added).

    Returns:
        ``score(X)``: `q x d` points (in ``input_names`` order) to a dict of float64
        arrays: ``mean`` `q x m` and ``variance`` `q x m` or ``covariance``
        `(q*m) x (q*m)` (the ``_noisy`` outputs under these names too). It raises
        `InputError` for points that are not `q x d` finite numbers with ``q >= 1``.
    """
    if method not in ONNX_OUTPUTS:
        raise ValueError(f"method: expected one of {list(ONNX_OUTPUTS)}, got {method!r}")
    directory = Path(artifact_dir)
    metadata = json.loads((directory / METADATA_FILE).read_text())
    input_names = list(metadata["input_names"])
    outputs = list(ONNX_OUTPUTS[method])
    graph = onnx.utils.Extractor(onnx.load(directory / ONNX_FILE)).extract_model(
        [ONNX_INPUT], outputs
    )
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    keys = [name.removesuffix(NOISY) for name in outputs]

    def score(X: np.ndarray) -> dict[str, np.ndarray]:
        X = np.asarray(X)
        d = len(input_names)
        if X.ndim != 2 or X.shape[1] != d:
            raise InputError(
                f"expected q x {d} points ({', '.join(input_names)}), got shape {X.shape}"
            )
        if X.shape[0] < 1:
            raise InputError("expected at least one point, got none")
        X = np.ascontiguousarray(X, dtype=np.float64)
        if not np.isfinite(X).all():
            raise InputError("expected finite numbers, got NaN or infinity")
        return dict(zip(keys, session.run(outputs, {ONNX_INPUT: X}), strict=True))

    return score


def read_points(lines: list[str], input_names: list[str]) -> np.ndarray:
    """Parse CSV points, with or without a header row of input names.

    Args:
        lines: The CSV text's lines; blank rows are skipped.
        input_names: The ``d`` input names, in the posterior's column order.

    Returns:
        `q x d` float64 points, columns in ``input_names`` order.

    Raises:
        InputError: Naming the first bad line.
    """
    d = len(input_names)
    rows = [
        (n, [cell.strip() for cell in row])
        for n, row in enumerate(csv.reader(lines), start=1)
        if any(c.strip() for c in row)
    ]
    order = list(range(d))
    if rows and not all(_is_number(cell) for cell in rows[0][1]):
        n, header = rows.pop(0)
        if sorted(header) != sorted(input_names):
            raise InputError(
                f"line {n}: expected {d} numbers or a header naming the inputs "
                f"{input_names} (any order), got {header}"
            )
        order = [header.index(name) for name in input_names]
    if not rows:
        raise InputError(f"expected at least one row of {d} numbers, got none")
    points = []
    for n, row in rows:
        if len(row) != d:
            raise InputError(
                f"line {n}: expected {d} columns ({', '.join(input_names)}), got {len(row)}"
            )
        try:
            values = [float(row[j]) for j in order]
        except ValueError:
            raise InputError(f"line {n}: expected numbers, got {row}") from None
        if not all(math.isfinite(v) for v in values):
            raise InputError(f"line {n}: expected finite numbers, got {row}")
        points.append(values)
    return np.array(points, dtype=np.float64)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "artifact_dir", type=Path, help="folder holding metadata.json and posterior.onnx"
    )
    parser.add_argument(
        "--method",
        choices=("mean_var", "forward"),
        default="mean_var",
        help="mean_var: mean and variance (default); forward: mean and the joint covariance",
    )
    parser.add_argument("--noise", action="store_true", help="add observation noise")
    args = parser.parse_args(argv)
    try:
        metadata = json.loads((args.artifact_dir / METADATA_FILE).read_text())
        X = read_points(sys.stdin.read().splitlines(), list(metadata["input_names"]))
        result = load(args.artifact_dir, args.method + (NOISY if args.noise else ""))(X)
    except InputError as e:
        print(f"score.py: {e}", file=sys.stderr)
        return 2
    except (OSError, KeyError, ValueError) as e:  # a missing or broken artifact
        print(f"score.py: cannot load the artifact: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    document = {"output_names": metadata["output_names"]}
    document.update({key: value.tolist() for key, value in result.items()})
    json.dump(document, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
