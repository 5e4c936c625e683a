"""Command line: fit a model on a CSV file (or the default) and export it.

    python -m export --data train.csv --inputs x1,x2 --outputs y1,y2 --out DIR
    python -m export --data train.csv --outputs y1,y2 --model list --out DIR
    python -m export --out DIR          # BoTorch's BraninCurrin, offline
    python -m export --out DIR --format torchscript,pt2,onnx
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from gp_serve.export.artifact import data_bounds, export_model
from gp_serve.export.data import DataError, default_data, load_csv
from gp_serve.export.fit import MISSING_ALLOWED, MODELS, fit_model
from gp_serve.export.gate import ExportGateError
from gp_serve.export.portable import PortableExportError
from gp_serve.handler import gp_artifact

log = logging.getLogger("export")


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def _formats(text: str) -> list[str]:
    formats = _names(text)
    unknown = [name for name in formats if name not in gp_artifact.FORMAT_FILES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"expected formats from {', '.join(gp_artifact.FORMAT_FILES)}, got {unknown}")
    return formats


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Fit a BoTorch model and export its posterior (TorchScript, and an "
        "AOTInductor package and an ONNX graph on request).",
    )
    parser.add_argument("--data", type=Path, help="training CSV with a header row "
                        "(default: BoTorch's BraninCurrin on 64 seeded points)")
    parser.add_argument("--inputs", type=_names,
                        help="input columns (default: all columns not named elsewhere)")
    parser.add_argument("--outputs", type=_names, help="output columns (required with --data)")
    parser.add_argument("--noise", type=_names,
                        help="observation noise variances, one per output: a column name, "
                        "or a number for every row")
    parser.add_argument("--model", choices=list(MODELS), default="single",
                        help="single: one SingleTaskGP for all outputs (default); list: a "
                        "ModelListGP, one SingleTaskGP per output, each fitted on the rows "
                        "where it is observed; multitask: a MultiTaskGP, one task per "
                        "output (correlated outputs); kronecker: a KroneckerMultiTaskGP, every output at "
                        "every row, with a learned task covariance (correlated outputs); saas: a SaasFullyBayesianSingleTaskGP "
                        "(one output, NUTS; needs BoTorch's fully Bayesian extra on 0.13+). "
                        "list and multitask allow empty output cells (not observed there)")
    parser.add_argument("--categorical", type=_names,
                        help="input columns holding category codes (numbers): fits a "
                        "MixedSingleTaskGP (with --model single)")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for posterior.pt and metadata.json (and the other formats)")
    parser.add_argument("--format", type=_formats, default=[gp_artifact.DEFAULT_FORMAT],
                        dest="formats",
                        help="comma-separated formats to write, each gated against eager "
                        "BoTorch: torchscript (posterior.pt, always written), pt2 "
                        "(posterior.pt2, AOTInductor: about a minute to compile), onnx "
                        "(posterior.onnx). Default: torchscript")
    args = parser.parse_args(argv)
    if args.data is None and (args.inputs or args.outputs or args.noise):
        parser.error("--inputs, --outputs and --noise need --data")
    if args.data is not None and not args.outputs:
        parser.error("--data needs --outputs")
    if args.categorical and args.data is None:
        parser.error("--categorical needs --data")
    if args.categorical and args.model != "single":
        parser.error(f"--categorical needs --model single, got --model {args.model}")
    return args


def _categorical(names: list[str], inputs: list[str]) -> list[int]:
    unknown = [name for name in names if name not in inputs]
    if unknown:
        raise DataError(f"--categorical: expected input columns {inputs}, got {unknown}")
    return [inputs.index(name) for name in names]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="export: %(message)s")
    # linear_operator's multi-task (index kernel) algebra warns once per process about
    # torch's sparse-tensor checks; nothing a user can act on.
    warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
    try:
        if args.data is None:
            log.info("using the default data: BraninCurrin (negated), 64 seeded points")
            data = default_data()
        else:
            log.info("reading %s", args.data)
            data = load_csv(args.data, args.inputs, args.outputs, args.noise,
                            allow_missing=args.model in MISSING_ALLOWED)
        categorical = _categorical(args.categorical or [], data.input_names)
        what = "a MixedSingleTaskGP" if categorical else MODELS[args.model]
        log.info("fitting %s on N=%d, d=%d, m=%d", what, data.X.size(0), data.X.size(1),
                 data.Y.size(1))
        model = fit_model(data, args.model, categorical)
        export_model(
            model,
            args.out,
            input_names=data.input_names,
            output_names=data.output_names,
            input_bounds=data_bounds(data.X),
            data_sha256=data.sha256(),
            formats=args.formats,
        )
    except (ValueError, ImportError, ExportGateError, PortableExportError) as e:
        # (DataError, a bad --out, a missing extra, a format that cannot express the model)
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
