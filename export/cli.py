"""Command line: fit a model on a CSV file (or the default), or take a fitted one, and export it.

    gp-serve export --data train.csv --inputs x1,x2 --outputs y1,y2 --out DIR
    gp-serve export --data train.csv --outputs y1,y2 --model list --out DIR
    gp-serve export --out DIR          # BoTorch's BraninCurrin, offline
    gp-serve export --out DIR --format torchscript,pt2,onnx
    gp-serve export --model-file model.pth --out DIR   # torch.save(model, "model.pth")

(``python -m export`` from the checkout runs the same.) Exit status 2 on bad data, a bad
``--out``, a model that cannot be exported or a missing extra.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from gp_serve.export.artifact import data_bounds, export_model
from gp_serve.export.data import DataError, TrainingData, default_data, load_csv
from gp_serve.export.fit import MISSING_ALLOWED, MODELS, fit_model
from gp_serve.export.gate import ExportGateError
from gp_serve.export.portable import PortableExportError
from gp_serve.export.support import UnsupportedModelError
from gp_serve.handler import gp_artifact

log = logging.getLogger("export")

DEFAULT_MODEL = "single"
TRUST_WARNING = (
    "warning: --model-file {path}: torch.load(weights_only=False) unpickles the file, which "
    "runs any code it holds; use it only on files you trust"
)


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
            f"expected formats from {', '.join(gp_artifact.FORMAT_FILES)}, got {unknown}"
        )
    return formats


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The export command's options (``gp-serve export`` and ``python -m export``)."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--data",
        type=Path,
        help="training CSV with a header row (default: BoTorch's BraninCurrin on 64 seeded points)",
    )
    source.add_argument(
        "--model-file",
        type=Path,
        help="a fitted model saved with torch.save(model, PATH), exported as "
        "is (unpickled: only files you trust)",
    )
    parser.add_argument(
        "--allow-unlisted",
        action="store_true",
        help="with --model-file: let model parts the support table does not list (an own "
        "kernel, a subclass) through to the exactness gate (docs/export.md, What is supported)",
    )
    parser.add_argument(
        "--inputs",
        type=_names,
        help="input columns (default: all columns not named elsewhere); with "
        "--model-file, the input names (default: x1 ... xd)",
    )
    parser.add_argument(
        "--outputs",
        type=_names,
        help="output columns (required with --data); with --model-file, the "
        "output names (default: y1 ... ym)",
    )
    parser.add_argument(
        "--noise",
        type=_names,
        help="observation noise variances, one per output: a column name, "
        "or a number for every row",
    )
    parser.add_argument(
        "--model",
        choices=list(MODELS),
        default=None,
        help="single: one SingleTaskGP for all outputs (default); list: a "
        "ModelListGP, one SingleTaskGP per output, each fitted on the rows "
        "where it is observed; multitask: a MultiTaskGP, one task per "
        "output (correlated outputs); kronecker: a KroneckerMultiTaskGP, "
        "every output at every row, with a learned task covariance (correlated "
        "outputs); saas: a SaasFullyBayesianSingleTaskGP (one output, NUTS; "
        "needs BoTorch's fully Bayesian extra on 0.13+). "
        "list and multitask allow empty output cells (not observed there)",
    )
    parser.add_argument(
        "--categorical",
        type=_names,
        help="input columns holding category codes (numbers): fits a "
        "MixedSingleTaskGP (with --model single)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder for posterior.pt and metadata.json (and the other formats)",
    )
    parser.add_argument(
        "--format",
        type=_formats,
        default=[gp_artifact.DEFAULT_FORMAT],
        dest="formats",
        help="comma-separated formats to write, each gated against eager "
        "BoTorch: torchscript (posterior.pt, always written), pt2 "
        "(posterior.pt2, AOTInductor: about a minute to compile), onnx "
        "(posterior.onnx). Default: torchscript",
    )


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with a combination of options (for ``parser.error``), or None."""
    if args.model_file is not None:
        fitting = [
            flag
            for flag, value in (
                ("--noise", args.noise),
                ("--model", args.model),
                ("--categorical", args.categorical),
            )
            if value
        ]
        if fitting:
            return (
                f"{', '.join(fitting)}: fitting options, expected none with --model-file "
                "(the model is fitted already)"
            )
        return None
    if args.allow_unlisted:
        return "--allow-unlisted: expected it only with --model-file (fitted models are listed)"
    model = args.model or DEFAULT_MODEL
    if args.data is None and (args.inputs or args.outputs or args.noise):
        return "--inputs, --outputs and --noise need --data"
    if args.data is not None and not args.outputs:
        return "--data needs --outputs"
    if args.categorical and args.data is None:
        return "--categorical needs --data"
    if args.categorical and model != DEFAULT_MODEL:
        return f"--categorical needs --model {DEFAULT_MODEL}, got --model {model}"
    return None


def _categorical(names: list[str], inputs: list[str]) -> list[int]:
    unknown = [name for name in names if name not in inputs]
    if unknown:
        raise DataError(f"--categorical: expected input columns {inputs}, got {unknown}")
    return [inputs.index(name) for name in names]


def load_model_file(path: Path):
    """The BoTorch model ``torch.save(model, path)`` wrote, after the trust warning (stderr).

    Raises:
        ValueError: If the file cannot be read or does not hold a BoTorch model.
    """
    import torch
    from botorch.models.model import Model

    print(TRUST_WARNING.format(path=path), file=sys.stderr, flush=True)
    log.info("loading %s", path)
    try:
        model = torch.load(path, weights_only=False)
    except Exception as e:  # (unpickling raises whatever the file's code raises)
        raise ValueError(f"--model-file {path}: cannot load it ({type(e).__name__}: {e})") from e
    if not isinstance(model, Model):
        raise ValueError(
            f"--model-file {path}: expected a BoTorch model saved with "
            f"torch.save(model, PATH), got {type(model).__module__}."
            f"{type(model).__qualname__}"
        )
    return model


def _export(args: argparse.Namespace) -> None:
    if args.model_file is not None:
        # Names default to x1..xd, y1..ym and bounds to the range of the model's training
        # inputs (export_model's defaults, read from the model).
        model = load_model_file(args.model_file)
        try:
            export_model(
                model,
                args.out,
                input_names=args.inputs,
                output_names=args.outputs,
                formats=args.formats,
                allow_unlisted=args.allow_unlisted,
            )
        except UnsupportedModelError as e:  # (a part outside the support table)
            raise ValueError(f"--model-file {args.model_file}: {e}") from e
        return
    model_name = args.model or DEFAULT_MODEL
    if args.data is None:
        log.info("using the default data: BraninCurrin (negated), 64 seeded points")
        data = default_data()
    else:
        log.info("reading %s", args.data)
        data = load_csv(
            args.data,
            args.inputs,
            args.outputs,
            args.noise,
            allow_missing=model_name in MISSING_ALLOWED,
        )
    categorical = _categorical(args.categorical or [], data.input_names)
    fit_and_export(data, args.out, model_name, categorical, args.formats)


def fit_and_export(
    data: TrainingData,
    out: Path,
    model_name: str = DEFAULT_MODEL,
    categorical: list[int] | None = None,
    formats: tuple[str, ...] | list[str] = (gp_artifact.DEFAULT_FORMAT,),
) -> dict:
    """Fit a model of the family ``model_name`` to ``data`` and export it to ``out``, named
    and bounded by the data (its names, its inputs' range, its hash): what ``python -m
    export --data`` does after reading the CSV.

    Returns:
        The written metadata (`export_model`'s).
    """
    what = "a MixedSingleTaskGP" if categorical else MODELS[model_name]
    log.info("fitting %s on N=%d, d=%d, m=%d", what, data.X.size(0), data.X.size(1), data.Y.size(1))
    model = fit_model(data, model_name, categorical)
    return export_model(
        model,
        out,
        input_names=data.input_names,
        output_names=data.output_names,
        input_bounds=data_bounds(data.X),
        data_sha256=data.sha256(),
        formats=formats,
    )


def run(args: argparse.Namespace) -> int:
    """Export as ``args`` say (checked by `check_args`).

    Returns:
        0, or 2 (with ``error: ...`` on stderr) if the data, ``--out``, the model or an
        extra it needs is refused.
    """
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="export: %(message)s")
    # linear_operator's multi-task (index kernel) algebra warns once per process about
    # torch's sparse-tensor checks; nothing a user can act on.
    warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
    try:
        _export(args)
    except (ValueError, ImportError, ExportGateError, PortableExportError) as e:
        # (DataError, a bad --out or --model-file, a missing extra, a format that cannot
        # express the model)
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def parse_args(argv: list[str] | None = None, prog: str = "python -m export") -> argparse.Namespace:
    """The options in ``argv`` (exit 2 with the usage on a bad one)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    problem = check_args(args)
    if problem:
        parser.error(problem)
    return args


def main(argv: list[str] | None = None) -> int:
    """``python -m export``: see the module docstring."""
    return run(parse_args(argv))
